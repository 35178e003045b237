"""TensorRT compatibility report on constructed graphs (no GPU, no tensorrt)."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from moduseg.errors import InputError  # noqa: E402
from moduseg.export.trt_compat import (check_file, check_model, load_ops_table,  # noqa: E402
                                       resolve_version)


def graph(opset=17, dynamic=False, ops=("Hardmax",), int64_big=True, decomposed=False):
    """x [1|N, 4, 8] -> chosen ops -> Reshape by an int64 shape -> y."""
    dim0 = "N" if dynamic else 1
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [dim0, 4, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes, cur, inits = [], "x", []
    for i, op in enumerate(ops):
        nodes.append(helper.make_node(op, [cur], [f"t{i}"], name=f"{op.lower()}_{i}"))
        cur = f"t{i}"
    if decomposed:
        inits += [numpy_helper.from_array(np.array(2.0, np.float32), "two"),
                  numpy_helper.from_array(np.array(1e-6, np.float32), "eps")]
        nodes += [helper.make_node("ReduceMean", [cur], ["m"], axes=[-1], name="rm1"),
                  helper.make_node("Sub", [cur, "m"], ["d"], name="sub"),
                  helper.make_node("Pow", ["d", "two"], ["p"], name="pow"),
                  helper.make_node("ReduceMean", ["p"], ["v"], axes=[-1], name="rm2"),
                  helper.make_node("Add", ["v", "eps"], ["ve"], name="add"),
                  helper.make_node("Sqrt", ["ve"], ["s"], name="sqrt"),
                  helper.make_node("Div", ["d", "s"], ["n"], name="div")]
        cur = "n"
    shape = np.array([1, -1], np.int64)
    if int64_big:
        shape = np.array([1, -1, np.iinfo(np.int64).max], np.int64)[:2]
        inits.append(numpy_helper.from_array(
            np.array([np.iinfo(np.int64).max], np.int64), "huge"))
    inits.append(numpy_helper.from_array(shape, "shape"))
    nodes.append(helper.make_node("Reshape", [cur, "shape"], ["y"], name="reshape"))
    g = helper.make_graph(nodes, "g", [x], [y], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def codes(rep, severity=None):
    return {i.code for i in rep.issues if severity is None or i.severity == severity}


def test_table_has_versions_and_core_ops():
    t = load_ops_table()
    assert {"8.6", "10.1"} <= set(t)
    for v in t.values():
        for op in ("Conv", "MatMul", "Softmax", "Add", "Reshape"):
            assert v["ops"][op][0], (op, v["source"])
    assert t["8.6"]["opset_max"] == 17 and t["10.1"]["opset_max"] == 20
    assert not t["8.5"]["ops"]["LayerNormalization"][0]
    assert t["8.6"]["ops"]["LayerNormalization"][0]


def test_resolve_version():
    assert resolve_version("10.x") == ("10.1", None)
    assert resolve_version("8.6")[0] == "8.6"
    assert resolve_version("8.6.1")[0] == "8.6"
    v, note = resolve_version("10.7")
    assert v == "10.1" and "newest known" in note
    with pytest.raises(InputError, match="older than every known table"):
        resolve_version("7.1")
    with pytest.raises(InputError, match="not a version"):
        resolve_version("latest")


def test_unsupported_op_depends_on_version():
    rep86 = check_model(graph(), "8.6")
    assert not rep86.ok
    (issue,) = rep86.by_code("unsupported-op")
    assert "Hardmax" in issue.message and issue.nodes == ("hardmax_0",)
    rep10 = check_model(graph(), "10.x")
    assert "unsupported-op" not in codes(rep10)


def test_unknown_and_custom_domain_ops_are_errors():
    m = graph(ops=("FancyOp",))
    m.graph.node.append(helper.make_node("Gelu", ["y"], ["z"], domain="com.microsoft",
                                         name="msgelu"))
    rep = check_model(m, "10.1")
    assert {"unknown-op", "custom-domain-op"} <= codes(rep, "error")


def test_int64_initializers_and_dynamic_inputs():
    rep = check_model(graph(ops=("Relu",), dynamic=True), "8.6")
    assert rep.ok
    assert {"int64-weights", "int64-out-of-int32-range", "dynamic-input"} <= codes(rep, "warning")
    (big,) = rep.by_code("int64-out-of-int32-range")
    assert big.nodes == ("huge",)
    rep10 = check_model(graph(ops=("Relu",)), "10.1")
    assert rep10.by_code("int64-weights")[0].severity == "info"
    assert "dynamic-input" not in codes(rep10)


def test_opset_and_fp16_hazards():
    rep = check_model(graph(opset=14, ops=("Softmax",), decomposed=True), "8.6")
    assert {"no-native-layernorm", "decomposed-layernorm-fp16"} <= codes(rep, "warning")
    assert "fp16-sensitive" in codes(rep, "info")
    rep = check_model(graph(opset=19, ops=("Relu",)), "8.6")
    assert "opset-too-new" in codes(rep, "warning")
    m = graph(opset=17, ops=())
    m.graph.node.insert(0, helper.make_node("LayerNormalization", ["x", "g", "b"], ["ln"]))
    rep = check_model(m, "8.5")
    assert "layernorm-unsupported" in codes(rep, "error")
    assert "unsupported-op" in codes(rep, "error")


def test_cli_exit_codes_and_json(tmp_path):
    from moduseg.cli import cli

    bad, good = tmp_path / "bad.onnx", tmp_path / "good.onnx"
    onnx.save(graph(), bad)
    onnx.save(graph(ops=("Relu",), int64_big=False), good)
    r = CliRunner().invoke(cli, ["export", "check", str(bad), "--trt-version", "8.6"])
    assert r.exit_code == 1 and "Hardmax" in r.output and "blocking" in r.output
    r = CliRunner().invoke(cli, ["export", "check", str(good), "--trt-version", "10.x",
                                 "--json"])
    assert r.exit_code == 0
    d = json.loads(r.output)
    assert d["ok"] and d["table_version"] == "10.1" and d["op_counts"]["Relu"] == 1
    r = CliRunner().invoke(cli, ["export", "check", str(tmp_path / "none.onnx")])
    assert r.exit_code == 2 and "does not exist" in r.output
    assert check_file(good, "8.6").ok
