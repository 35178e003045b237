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
