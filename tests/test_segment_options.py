"""Options users of comparable tools reach for (issue 29, item 12), at the pipeline:
a confidence threshold below which a segment is left unassigned, and a class filter."""

from __future__ import annotations

import numpy as np
import pytest

from moduseg.bank.builder import build_bank
from moduseg.config import BankConfig, RuntimeConfig
from moduseg.errors import InputError
from moduseg.runtime.index import build_index
from moduseg.runtime.pipeline import assign, assign_patches, class_filter
from moduseg.types import IGNORE, Proposals
from synthetic import ColourBackbone, dataset, scene


@pytest.fixture(scope="module")
def bank():
    return build_bank(dataset(6), ColourBackbone(), BankConfig(erosion_iterations=3, min_area=50))


def _mixed(label):
    """One mask per class region, plus one mask spanning two regions (a split vote)."""
    cs = [int(c) for c in np.unique(label) if c != 0]
    masks = [label == 0] + [label == c for c in cs[:2]] + [(label == cs[2]) | (label == cs[3])]
    return Proposals(np.stack(masks), np.ones(len(masks)), label.shape), cs


def _run(bank, label, image, props, **kw):
    cfg = RuntimeConfig(min_area=50, top_k=5, unassigned="nearest", **kw)
    return assign(ColourBackbone()(image), props, bank, build_index(bank.vectors), cfg)


def test_segments_below_the_confidence_threshold_are_left_unassigned(bank):
    image, label = scene(5)
    props, cs = _mixed(label)
    base = _run(bank, label, image, props)
    conf = {s.proposal: s.confidence for s in base.segments}
    assert conf[3] < conf[1] and conf[3] < conf[2]          # the split vote is the unsure one
    thr = (conf[3] + min(conf[1], conf[2])) / 2
    res = _run(bank, label, image, props, min_confidence=thr)
    seg = {s.proposal: s for s in res.segments}
    assert seg[3].label == -1 and seg[3].class_name == "" and seg[3].painted_pixels == 0
    assert seg[1].label == cs[0] and seg[1].painted_pixels > 0
    # its pixels stay unassigned although runtime.unassigned=nearest would fill them
    assert (res.label_map[props.masks[3]] == IGNORE).all()
    assert (base.label_map[props.masks[3]] != IGNORE).all()
    assert (res.label_map[props.masks[1]] == cs[0]).all()


def test_class_filter_paints_only_the_named_classes(bank):
    image, label = scene(5)
    props, cs = _mixed(label)
    name = bank.class_names[cs[0]]
    res = _run(bank, label, image, props, classes=(name,))
    assert set(np.unique(res.label_map)) == {cs[0], IGNORE}
    assert (res.label_map[label == cs[0]] == cs[0]).all()
    assert res.segments and all(s.class_name in (name, "") for s in res.segments)
    # names are matched case-insensitively
    res2 = _run(bank, label, image, props, classes=(name.upper(),))
    assert (res2.label_map == res.label_map).all()


def test_class_filter_on_the_patch_path(bank):
    image, label = scene(5)
    name = bank.class_names[int(label.max())]
    cfg = RuntimeConfig(assignment="patch", top_k=5, classes=(name,))
    res = assign_patches(ColourBackbone()(image), bank, build_index(bank.vectors), cfg)
    assert set(np.unique(res.label_map)) <= {int(label.max()), IGNORE}
    assert (res.label_map == int(label.max())).any()


def test_unknown_class_names_one_line(bank):
    with pytest.raises(InputError, match=r"no class 'clas1' \(did you mean 'class1'\?\); its "
                                         r"classes: background, class1"):
        class_filter(("clas1",), bank.class_names)
    assert class_filter((), bank.class_names) is None


def test_confidence_threshold_needs_segments():
    with pytest.raises(InputError, match="min_confidence applies to segments"):
        RuntimeConfig(assignment="patch", min_confidence=0.5)
    RuntimeConfig(assignment="patch_vote", min_confidence=0.5)


# -- the segment command's options ---------------------------------------------------------

import json  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import cv2  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from hypothesis import given, settings, strategies as st  # noqa: E402

from moduseg.app.cli import parse_classes, shorthand_settings  # noqa: E402
from moduseg.app.loop import run_segment  # noqa: E402
from moduseg.cli import cli  # noqa: E402
from moduseg.config import ModuSegConfig  # noqa: E402
from moduseg.io import read_image  # noqa: E402
from moduseg.render import ALPHA  # noqa: E402
from moduseg.settings import resolve_config  # noqa: E402
from moduseg.types import SegmentationResult  # noqa: E402


def test_segment_help_lists_the_options():
    out = " ".join(CliRunner().invoke(cli, ["segment", "--help"], terminal_width=200)
                   .output.split())
    for opt in ("--device", "--min-confidence", "--conf", "--classes", "--opacity"):
        assert opt in out, opt
    assert f"default {ALPHA}" in out             # the help states render.ALPHA


def test_shorthands_are_the_settings_they_stand_for():
    sets = shorthand_settings(0.4, " car, pedestrian ,car")
    cfg = resolve_config("default", sets)
    assert cfg.runtime.min_confidence == 0.4
    assert tuple(cfg.runtime.classes) == ("car", "pedestrian")
    assert shorthand_settings(None, None) == ()


@pytest.mark.parametrize("text", ["", ",", "car,,pedestrian", " , car"])
def test_empty_class_names_are_one_line(text):
    with pytest.raises(InputError, match="give class names separated by commas"):
        parse_classes(text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_any_classes_text_parses_or_is_one_clear_line(text):
    try:
        names = parse_classes(text)
    except InputError as e:
        assert "\n" not in str(e)
        return
    assert names and all(n and n == n.strip() and "," not in n for n in names)
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("args, said", [
    (["--device", "cuda:1"], "CUDA_VISIBLE_DEVICES=1 and --device cuda"),
    (["--device", "mps"], "there is no mps backend"),
    (["--device", "cpu", "--backend", "cuda"], "--device cpu means --backend cpu"),
    (["--opacity", "1.5"], "--opacity"),
    (["--min-confidence", "-1"], "--min-confidence"),
    (["--classes", ","], "give class names separated by commas"),
])
def test_bad_option_values_are_one_line_before_any_work(tmp_path, args, said):
    img = tmp_path / "f.png"
    cv2.imwrite(str(img), np.zeros((8, 8, 3), np.uint8))
    r = CliRunner().invoke(cli, ["segment", str(img), "--out", str(tmp_path / "o"), *args])
    assert r.exit_code == 2, r.output
    assert said in r.output and "Traceback" not in r.output
    assert not (tmp_path / "o").exists()


class TwoClassSeg:
    """Left half class 0, right half unassigned, masks at the frame's size."""

    def __init__(self):
        self.bank = SimpleNamespace(class_names=["sky", "road"], background_index=None)
        self.full_config = ModuSegConfig()

    def __call__(self, image, timer=None):
        H, W = image.shape[:2]
        lm = np.full((H, W), 255, np.uint8)
        lm[:, : W // 2] = 0
        return SegmentationResult(lm, [], {"total": 1.0}, ["sky", "road"])


@pytest.mark.parametrize("opacity", [0.0, 0.45, 1.0])
def test_overlay_opacity(tmp_path, opacity):
    src = tmp_path / "in"
    src.mkdir()
    frame = np.full((40, 64, 3), 200, np.uint8)
    cv2.imwrite(str(src / "a.png"), frame)
    run_segment(TwoClassSeg(), str(src), tmp_path / "out", progress=False, opacity=opacity)
    ov = read_image(tmp_path / "out" / "overlays" / "a.jpg")[:40].astype(float)
    pal = json.loads((tmp_path / "out" / "palette.json").read_text())["colors"]
    inside = ov[10:30, 8:24].reshape(-1, 3).mean(0)            # class 0, away from borders
    want = (1 - opacity) * 200 + opacity * np.array(pal[0], float)
    assert np.abs(inside - want).max() < 6, (inside, want)     # JPEG
    assert np.abs(ov[10:30, 40:56] - 200).max() < 6            # unassigned: the frame


@pytest.mark.realdata
@pytest.mark.models
def test_segment_with_classes_confidence_and_device(shared_data, tmp_path):
    from moduseg.io import read_label_map

    frame = shared_data / "camvid" / "val" / "0016E5_07959.png"
    r = CliRunner().invoke(cli, ["segment", str(frame), "--offline", "--device", "cpu",
                                 "--classes", "car,pedestrian,road", "--conf", "0.3",
                                 "--opacity", "0.7", "--out", str(tmp_path / "out")])
    if r.exit_code != 0 and "not installed" in r.output:
        pytest.skip(r.output)
    assert r.exit_code == 0, r.output
    run = json.loads((tmp_path / "out" / "segments.json").read_text())
    names = run["class_names"]
    keep = {names.index(n) for n in ("car", "pedestrian", "road")}
    lm = read_label_map(tmp_path / "out" / "labels" / f"{frame.stem}.png")
    assert set(np.unique(lm)) <= keep | {255} and (lm == names.index("road")).any()
    assert run["config"]["runtime"]["min_confidence"] == 0.3
    for s in run["frames"][0]["segments"]:
        assert s["class_id"] in keep | {None}
        assert s["class_id"] is None or s["confidence"] >= 0.3 or not s["painted"]


def test_a_class_the_bank_lacks_is_one_line_before_any_work(tmp_path):
    """Checked against the (embedded) bank before models load or --out is touched."""
    img = tmp_path / "f.png"
    cv2.imwrite(str(img), np.zeros((8, 8, 3), np.uint8))
    r = CliRunner().invoke(cli, ["segment", str(img), "--offline", "--classes", "car,cars",
                                 "--home", str(tmp_path / "no-models"),
                                 "--out", str(tmp_path / "o2")])
    assert r.exit_code == 2, r.output
    assert "no class 'cars' (did you mean 'car'?); its classes: sky, building" in r.output
    assert not (tmp_path / "o2").exists()
