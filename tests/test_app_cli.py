"""Tests of ``moduseg.app.cli``."""

from __future__ import annotations
import os
import shutil
from pathlib import Path
import cv2
import pytest
from click.testing import CliRunner
from moduseg.cli import cli
from app_fixtures import (CAMVID, _cli, _fill, _images, _one_line_error, _strict_json, _video,  # noqa: E402,F401
                          check_index_in_chromium, no_models, tiny_tmpfs)
import numpy as np  # noqa: E402
from moduseg.errors import InputError  # noqa: E402
import json  # noqa: E402
from types import SimpleNamespace  # noqa: E402
from hypothesis import given, settings, strategies as st  # noqa: E402
from moduseg.app.cli import parse_classes, shorthand_settings  # noqa: E402
from moduseg.app.loop import run_segment  # noqa: E402
from moduseg.config import ModuSegConfig  # noqa: E402
from moduseg.io import read_image  # noqa: E402
from moduseg.render import ALPHA  # noqa: E402
from moduseg.settings import resolve_config  # noqa: E402
from moduseg.types import SegmentationResult  # noqa: E402


def test_segment_out_that_is_a_file_or_under_one(tmp_path, no_models):
    img = _images(tmp_path / "in", 1) / "img0.png"
    f = tmp_path / "afile"
    f.write_text("x")
    _one_line_error(_cli(["segment", str(img), "--bank", "b.npz", "--out", str(f)]),
                    "--out", "existing file")
    _one_line_error(_cli(["segment", str(img), "--bank", "b.npz", "--out", str(f / "sub")]),
                    "--out", "is a file")


def test_segment_out_read_only_or_full(tmp_path, tiny_tmpfs, no_models):
    img = _images(tmp_path / "in", 1) / "img0.png"
    ro = tiny_tmpfs("1m", ro=True)
    _one_line_error(_cli(["segment", str(img), "--bank", "b.npz", "--out", str(ro / "o")]),
                    "--out", "cannot be written")
    full = tiny_tmpfs("256k")
    _fill(full)
    _one_line_error(_cli(["segment", str(img), "--bank", "b.npz", "--out", str(full / "o")]),
                    "--out")


def test_segment_out_not_writable_by_permissions(tmp_path, no_models):
    if os.geteuid() == 0:
        pytest.skip("root ignores folder permissions (the tmpfs test covers read-only)")
    img = _images(tmp_path / "in", 1) / "img0.png"
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    try:
        _one_line_error(_cli(["segment", str(img), "--bank", "b.npz", "--out", str(d)]),
                        "--out")
    finally:
        d.chmod(0o700)


@pytest.mark.parametrize("n", ["0", "-1"])
def test_max_frames_must_be_positive(tmp_path, n, no_models):
    img = _images(tmp_path / "in", 1) / "img0.png"
    r = _cli(["segment", str(img), "--bank", "b.npz", "--out", str(tmp_path / "o"),
              "--max-frames", n])
    assert r.exit_code == 2 and "--max-frames" in r.output


def test_a_video_without_frames_is_an_error_before_models(tmp_path, no_models):
    empty = _video(tmp_path / "empty.mp4", 0)
    zero = tmp_path / "zero.mp4"
    zero.write_bytes(b"")
    for v in (empty, zero):
        r = _cli(["segment", str(v), "--bank", "b.npz", "--out", str(tmp_path / "o")])
        _one_line_error(r, str(v))
    assert not (tmp_path / "o").exists() or not (tmp_path / "o" / "segments.json").exists()


@pytest.mark.realdata
@pytest.mark.models
def test_segment_cli_on_camvid_with_the_default_models(shared_data, tmp_path):
    from moduseg.bank.builder import build_bank
    from moduseg.bank.datasets import camvid
    from moduseg.bank.store import save_bank
    from moduseg.config import preset
    from moduseg.errors import ModuSegError
    from moduseg.build import load_default_backbone

    cfg = preset("default")
    try:
        backbone = load_default_backbone(**cfg.backbone_options())
    except ModuSegError as e:
        pytest.skip(f"default models not installed ({e}); run 'moduseg models pull'")
    train = camvid(shared_data / "camvid", "train")
    train.samples = train.samples[::40][:10]
    bank = build_bank(train, backbone, cfg.bank, config_record=cfg.to_dict())
    save_bank(bank, tmp_path / "cv.npz")
    val = camvid(shared_data / "camvid", "val")
    src = tmp_path / "frames"
    src.mkdir()
    for s in val.samples[::50][:2]:
        shutil.copy(s.image_path, src / Path(s.image_path).name)
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["segment", str(src), "--bank", str(tmp_path / "cv.npz"),
                                 "--out", str(out)])
    assert r.exit_code == 0, r.output
    d = _strict_json(out / "segments.json")
    assert d["class_names"] == CAMVID and len(d["frames"]) == 2
    assert d["config"]["preset"] == "default" and "runtime" in d["config"]
    f = d["frames"][0]
    painted = [s for s in f["segments"] if s["painted"]]
    assert painted and all(0 <= s["confidence"] <= 1 for s in f["segments"])
    assert sum(s["painted_pixels"] for s in painted) <= 360 * 480 + len(painted)  # rounding
    assert all(s["rle"]["size"] == [360, 480] for s in f["segments"])
    names = sorted(out.joinpath("overlays").iterdir())
    ov = cv2.imread(str(names[0]))
    assert ov.shape[1] == 480 and ov.shape[0] > 360                      # legend below
    shot = tmp_path / "index.png"
    check_index_in_chromium(out, shot)


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
