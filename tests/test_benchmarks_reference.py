"""benchmarks/reference.py: the straightforward reference (test code, not in the wheel)
agrees with the runtime on the same inputs, and its report has the speed-up table."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from benchmarks.reference import check_same, command, compare_config, run
from benchmarks.reference_impl import ReferenceFlatIndex, reference_assign
from moduseg.bench.inputs import make_bank, make_scene
from moduseg.bench.report import write_report
from moduseg.runtime.index import build_index
from moduseg.runtime.pipeline import assign
from moduseg.types import FeatureMap, GridGeometry, Proposals


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    res = run("quick", progress_bar=False)
    return res, out, write_report(res, out)


@pytest.mark.slow
def test_quick_report(quick):
    _, out, paths = quick
    data = json.loads((out / "results.json").read_text())
    assert data["schema"] == "moduseg-bench/1" and list(data["suites"]) == ["reference"]
    assert "speed-up x" in (out / "results.md").read_text()
    assert "reference_speedup.png" in paths["plots"]


def test_quick_reference_identical(quick):
    ref = quick[0]["suites"]["reference"]
    assert ref["all_identical"] is True
    for run_ in ref["runs"].values():
        assert run_["identical"]
        c = run_["checks"][0]
        assert c["identical_label_map"] and c["identical_classes"] and c["kept"] > 0
        assert c["mismatched_pixels"] == 0
        assert set(run_["speedup"]) >= {"pool", "search", "vote", "nms", "raster", "total",
                                        "total_excluding_search"}


def test_reference_matches_runtime_on_padded_grid():
    """Masks at the resized size on a padded grid: the reference pads, as SMFA does."""
    bank, centres = make_bank(3_000, 48, seed=3)
    sc = make_scene(30, bank, centres, image_hw=(100, 130), grid_hw=(8, 10), patch=14,
                    padded=True, seed=3)
    assert sc.fmap.geometry.padded_hw != sc.fmap.geometry.resized_hw
    cfg = compare_config()
    res = assign(sc.fmap, sc.proposals, bank, build_index(bank.vectors, "flat"), cfg)
    ref = reference_assign(sc.fmap, sc.proposals, bank, ReferenceFlatIndex(bank.vectors), cfg)
    same = check_same(res, ref)
    assert same["identical_label_map"] and same["identical_classes"], same


def test_reference_known_answer():
    """Two clean regions with features of two classes: each proposal gets its class,
    the overlapping duplicate is suppressed, the rest is background."""
    from moduseg.types import BackboneIdentity, Bank
    D, (h, w), p = 4, (4, 6), 10
    feats = np.zeros((D, h, w), np.float32)
    feats[1, :, :3] = 1.0
    feats[2, :, 3:] = 1.0
    feats[0] += 0.01
    geo = GridGeometry.unpadded((40, 60), (h, w), p)
    left = np.zeros((40, 60), bool)
    left[:, :30] = True
    right = ~left
    dup = left.copy()
    dup[:, 30:34] = True        # spills into the right region: lower confidence
    masks = np.stack([left, right, dup])
    props = Proposals(masks, np.array([0.9, 0.9, 0.8]), (40, 60))
    eye = np.eye(D, dtype=np.float32)
    vecs = np.repeat(eye[:3], 30, axis=0)
    bank = Bank(vecs, np.repeat([0, 1, 2], 30), ["bg", "a", "b"],
                BackboneIdentity("t", "native", p, D, "0" * 64), np.repeat(["i"], 90), 0)
    cfg = compare_config(min_area=10)
    ref = reference_assign(FeatureMap(feats, geo), props, bank, ReferenceFlatIndex(vecs), cfg)
    assert ref.labels == [1, 2, 1]
    assert ref.painted == [0, 1]                       # the duplicate (IoU 0.88) is gone
    assert (ref.label_map[:, :30] == 1).all() and (ref.label_map[:, 30:] == 2).all()
    res = assign(FeatureMap(feats, geo), props, bank, build_index(vecs, "flat"), cfg)
    assert check_same(res, ref)["identical_label_map"]


def test_cli_reference_quick(tmp_path):
    r = CliRunner().invoke(command, ["--quick", "--no-progress", "--no-plots",
                                     "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "identical=True" in r.output
    data = json.loads((tmp_path / "results.json").read_text())
    assert list(data["suites"]) == ["reference"] and data["profile"] == "quick"


def test_reference_is_not_in_the_package():
    """Test code stays out of the wheel: the package finds only ``moduseg*``."""
    import importlib.util
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    assert importlib.util.find_spec("moduseg.bench.reference") is None
    find = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert find["packages"]["find"]["include"] == ["moduseg*"]
    assert not any("reference" in p.name for p in (root / "moduseg").rglob("*.py"))
