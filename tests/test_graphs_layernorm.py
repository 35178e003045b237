"""Decomposed LayerNorm (opset < 17 export) -> one LayerNormalization, same numbers."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from moduseg.export.backbone import upgrade_opset  # noqa: E402
from moduseg.graphs.layernorm import fuse_layernorm  # noqa: E402
from moduseg.export.parity import onnx_runner  # noqa: E402


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(16, 16)
        self.ln1 = torch.nn.LayerNorm(16, eps=1e-6)
        self.ln2 = torch.nn.LayerNorm(16)
        with torch.no_grad():
            self.ln1.weight.uniform_(0.5, 1.5)
            self.ln2.bias.uniform_(-1, 1)

    def forward(self, x):
        return self.ln2(self.fc(self.ln1(x)) + x)


def test_fuses_both_layernorms_with_same_outputs(tmp_path):
    src = tmp_path / "ln14.onnx"
    torch.onnx.export(Net().eval(), (torch.rand(2, 5, 16),), str(src), opset_version=14,
                      dynamo=False, input_names=["x"])
    m = onnx.load(str(src))
    assert "LayerNormalization" not in {n.op_type for n in m.graph.node}
    m = upgrade_opset(m, 17)
    assert fuse_layernorm(m) == 2
    ops = [n.op_type for n in m.graph.node]
    assert ops.count("LayerNormalization") == 2 and "Pow" not in ops and "Sqrt" not in ops
    eps = sorted(a.f for n in m.graph.node if n.op_type == "LayerNormalization"
                 for a in n.attribute if a.name == "epsilon")
    np.testing.assert_allclose(eps, [1e-6, 1e-5], rtol=1e-5)
    onnx.checker.check_model(m)
    dst = tmp_path / "ln17.onnx"
    onnx.save(m, dst)
    x = np.random.default_rng(0).standard_normal((2, 5, 16)).astype(np.float32) * 3
    np.testing.assert_allclose(onnx_runner(dst)(x), onnx_runner(src)(x), atol=1e-5)
    assert fuse_layernorm(m) == 0  # idempotent


def test_leaves_other_reductions_alone(tmp_path):
    class NotLN(torch.nn.Module):
        def forward(self, x):
            d = x - x.mean(-1, keepdim=True)
            return d * 2 + d.pow(2).mean(-1, keepdim=True)  # no Sqrt/Div: not a LayerNorm

    src = tmp_path / "n.onnx"
    torch.onnx.export(NotLN(), (torch.rand(1, 4, 8),), str(src), opset_version=17,
                      dynamo=False)
    m = onnx.load(str(src))
    before = [n.op_type for n in m.graph.node]
    assert fuse_layernorm(m) == 0
    assert [n.op_type for n in m.graph.node] == before
