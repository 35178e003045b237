"""What the console says on a first run (issue 29, item 10): no ONNX Runtime
quantizer advice, stage times that say they overlap, presets listed in --help
(``config.preset_names()``: the preset files, the one place they are declared)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from moduseg.cli import cli
from moduseg.config import preset_names

PRESETS = preset_names()
from moduseg.timing import OVERLAP_NOTE, format_stage_ms

ROOT = Path(__file__).resolve().parents[1]


def _matmul_model(path: Path) -> Path:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(64, 32)).astype(np.float32),
                                "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_quantizer_advice_does_not_reach_the_console(tmp_path):
    """A fresh process quantises a graph as the first SAM run does: stderr stays clean and
    the root logger is left unconfigured."""
    src = _matmul_model(tmp_path / "m.onnx")
    code = (
        "import logging, sys\n"
        "from moduseg.graphs.sam_decoder import quantized_model_path\n"
        f"p = quantized_model_path({str(src)!r}, cache_dir={str(tmp_path / 'c')!r})\n"
        "assert p.is_file(), p\n"
        "assert not logging.getLogger().handlers, logging.getLogger().handlers\n"
        "logging.getLogger('moduseg.test').warning('after')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert "pre-processing" not in r.stderr and "Please consider" not in r.stderr, r.stderr
    # logging still works as Python's default afterwards (last resort: the bare message)
    assert r.stderr.strip().splitlines()[-1] == "after", r.stderr


def test_other_warnings_during_quantization_still_show(caplog):
    from moduseg.graphs.sam_decoder import quiet_ort_quantization

    with caplog.at_level(logging.WARNING), quiet_ort_quantization():
        logging.warning("Please consider to run pre-processing before quantization. See x")
        logging.warning("something else")
    assert "something else" in caplog.text and "pre-processing" not in caplog.text
    logging.warning("Please consider to run pre-processing before quantization. outside")
    assert "outside" in caplog.text        # the filter is gone afterwards


def test_stage_times_say_they_overlap():
    line = format_stage_ms({"backbone": 560.0, "proposer": 610.0, "pool": 40.0, "total": 700.0})
    assert line.startswith("median ms per frame: total 700.0; stages (")
    assert OVERLAP_NOTE in line and "not add up" in OVERLAP_NOTE
    assert "backbone 560.0, proposer 610.0, pool 40.0" in line
    assert line.count("700.0") == 1                       # the total is not a stage
    assert format_stage_ms({"total": 5.0}) == "median ms per frame: total 5.0"


@pytest.mark.parametrize("command", [["segment"], ["bank", "build"], ["eval"]])
def test_help_lists_every_preset(command):
    r = CliRunner().invoke(cli, [*command, "--help"], terminal_width=200)
    assert r.exit_code == 0, r.output
    line = " ".join(r.output.split())
    assert "[" + "|".join(PRESETS) + "]" in line, r.output
    assert "paper or default" not in line


def test_unknown_preset_is_one_line_naming_the_choices(tmp_path):
    r = CliRunner().invoke(cli, ["segment", "x.png", "--preset", "quick"])
    assert r.exit_code == 2
    assert "'quick' is not one of" in r.output and all(p in r.output for p in PRESETS)
