"""Registries: names, "did you mean", lazy entries; a new output sink and a new
proposer are each one class or module plus one registry line."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from moduseg.app import sinks as sink_mod
from moduseg.app.loop import run_segment
from moduseg.app.sinks import SINKS, BaseSink
from moduseg.cli import cli
from moduseg.errors import InputError
from moduseg.registry import (BACKENDS, PROPOSERS, Entry, ProposerEntry, Registry,
                              UnknownNameError, choices_help, did_you_mean)
from moduseg.types import Proposals

sys.path.insert(0, str(Path(__file__).parent))
from app_fixtures import FakeSeg, _images  # noqa: E402


# -- the mechanism -----------------------------------------------------------------------

def test_registry_lists_in_order_and_refuses_a_second_entry_of_a_name():
    r: Registry = Registry("widget")
    r.register("b", Entry("b", 1))
    r.register("a", Entry("a", 2))
    assert r.names() == ["b", "a"] and "a" in r and len(r) == 2
    with pytest.raises(ValueError, match="registered already"):
        r.register("a", Entry("a", 3))
    r.register("a", Entry("a", 3), replace=True)
    assert r["a"].load() == 3


def test_unknown_name_is_one_input_error_line_with_did_you_mean():
    with pytest.raises(UnknownNameError) as e:
        BACKENDS["tensorrtt"]
    msg = str(e.value)
    assert isinstance(e.value, InputError) and "\n" not in msg
    assert msg == ("unknown backend 'tensorrtt'; choose one of auto, cpu, cuda, tensorrt, "
                   "tensorrt-native (did you mean tensorrt?)")
    with pytest.raises(UnknownNameError, match="choose one of sam, entityseg$"):
        PROPOSERS["zzz"]
    assert did_you_mean("sma", ["sam", "entityseg"]) == " (did you mean sam?)"


def test_registered_is_temporary_and_restores_what_was_there():
    r: Registry = Registry("widget")
    r.register("x", Entry("x", 1))
    with r.registered("x", Entry("x", 2)), r.registered("y", Entry("y", 3)):
        assert r["x"].load() == 2 and r.names() == ["x", "y"]
    assert r["x"].load() == 1 and r.names() == ["x"]


def test_entries_load_their_code_only_when_asked():
    e = Entry("e", "moduseg.render:class_palette")
    assert e.load() is __import__("moduseg.render", fromlist=["x"]).class_palette
    missing = Entry("m", "moduseg.no_such_module:f")       # registering costs no import
    with pytest.raises(ImportError):
        missing.load()


def test_the_registries_name_the_built_in_plug_ins():
    assert PROPOSERS.names() == ["sam", "entityseg"]
    assert BACKENDS.names() == ["auto", "cpu", "cuda", "tensorrt", "tensorrt-native"]
    assert SINKS.names() == ["labels", "overlays", "segments", "report"]
    assert sink_mod.output_names() == ("labels", "overlays", "previews", "overlay.mp4",
                                       "segments.json", "palette.json", "index.html")
    for e in PROPOSERS.entries():
        assert callable(e.load()) and e.options_class() is not None
    assert "tensorrt-native (TensorRT engines" in choices_help(BACKENDS)


def test_a_registry_is_read_without_loading_any_model_code():
    import subprocess
    code = ("import sys, moduseg.registry as r; r.PROPOSERS.names(); "
            "print(any(m.startswith(('moduseg.runtime', 'moduseg.build', 'onnxruntime')) "
            "for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_cli_help_lists_the_registered_choices():
    r = CliRunner().invoke(cli, ["segment", "--help"])
    assert r.exit_code == 0
    for name in PROPOSERS.names() + BACKENDS.names():
        assert name in r.output
    r = CliRunner().invoke(cli, ["segment", "x.png", "--proposer", "sma"])
    assert r.exit_code == 2 and "did you mean sam?" in r.output


# -- a new output sink: one class, one line ----------------------------------------------

class ClassCountSink(BaseSink):
    """``counts.txt``: frames in which each class appears."""

    outputs = ("counts.txt",)

    def start(self, run):
        self.counts = dict.fromkeys(run.class_names, 0)

    def add(self, run, frame, result):
        for c in np.unique(result.label_map):
            if c < len(run.class_names):
                self.counts[run.class_names[c]] += 1

    def finish(self, run):
        (run.stage / "counts.txt").write_text(
            "".join(f"{k} {v}\n" for k, v in self.counts.items()))


def test_a_registered_sink_writes_its_file_and_is_committed_with_the_run(tmp_path):
    src, out = _images(tmp_path / "in", 3), tmp_path / "out"
    with SINKS.registered("counts", Entry("counts", ClassCountSink, "class counts")):
        run_segment(FakeSeg(), str(src), out, progress=False)
        assert (out / "counts.txt").read_text() == "sky 3\nroad 0\ncar 3\n"
        assert (out / "segments.json").is_file() and not list(out.glob(".run.*"))
    # the sink is gone: a re-run replaces every file of the previous run, counts.txt too
    run_segment(FakeSeg(), str(src), out, progress=False)
    assert not (out / "counts.txt").exists() and (out / "segments.json").is_file()


# -- a new proposer: one module, one registry line -----------------------------------------

class BlockProposer:
    """Four quadrants of the frame as proposals."""

    name = "blocks"

    def __call__(self, image):
        H, W = image.shape[:2]
        masks = np.zeros((4, H, W), bool)
        masks[0, :H // 2, :W // 2] = masks[1, :H // 2, W // 2:] = True
        masks[2, H // 2:, :W // 2] = masks[3, H // 2:, W // 2:] = True
        return Proposals(masks, np.ones(4, np.float32), (H, W))


built: list = []


def blocks_from_config(cfg, backend, home=None):
    built.append((cfg.proposer.name, backend.name))
    return BlockProposer()


@pytest.mark.models
def test_a_toy_proposer_registered_in_one_place_runs_segment(tmp_path):
    """One options class and one registry line, nothing else: ``moduseg segment
    --proposer blocks`` builds it through the composition root and writes its
    four quadrants as the segments."""
    import dataclasses

    import cv2

    from moduseg.config import ProposerOptions

    @dataclasses.dataclass(frozen=True)
    class BlocksOptions(ProposerOptions):
        name: str = "blocks"

    with PROPOSERS.registered("blocks", ProposerEntry(
            "blocks", blocks_from_config, "four quadrants", options=BlocksOptions)):
        img = tmp_path / "frame.png"
        rng = np.random.default_rng(0)
        cv2.imwrite(str(img), rng.integers(0, 255, (90, 120, 3), np.uint8))
        out = tmp_path / "out"
        built.clear()
        r = CliRunner().invoke(cli, ["segment", str(img), "--out", str(out),
                                     "--proposer", "blocks", "--backend", "cpu",
                                     "--offline", "--no-overlay"])
        if r.exit_code == 2 and "not installed" in r.output:
            pytest.skip(f"default models not installed: {r.output.strip()}")
        assert r.exit_code == 0, r.output
        assert built == [("blocks", "cpu")]
        import json
        d = json.loads((out / "segments.json").read_text())
        assert d["config"]["proposer"]["name"] == "blocks"
        segs = d["frames"][0]["segments"]
        assert sorted(s["proposal"] for s in segs) == [0, 1, 2, 3]
        assert {tuple(s["bbox"]) for s in segs} == {(0, 0, 60, 45), (60, 0, 60, 45),
                                                  (0, 45, 60, 45), (60, 45, 60, 45)}
    # gone again: the name is refused with the registered choices
    r = CliRunner().invoke(cli, ["segment", str(img), "--proposer", "blocks"])
    assert r.exit_code == 2 and "choose one of sam, entityseg" in r.output


def test_every_registered_proposer_has_its_options_class():
    from moduseg.config import ProposerOptions, proposer_classes
    assert list(proposer_classes()) == PROPOSERS.names()
    for e in PROPOSERS.entries():
        cls = e.options_class()
        assert issubclass(cls, ProposerOptions) and cls.__dataclass_fields__["name"].default == e.name
