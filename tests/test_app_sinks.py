"""Tests of ``moduseg.app.sinks``."""

from __future__ import annotations
import cv2
import numpy as np
import pytest
from moduseg.config import ModuSegConfig
from moduseg.errors import OutputError
from moduseg.io import read_label_map
from moduseg.app import run as outputs
from moduseg.app.loop import run_segment
from moduseg.render import legend_height
from moduseg.types import Proposals
from app_fixtures import FakeSeg, _frames_in, _hidden, _images, _strict_json, _video, tiny_tmpfs  # noqa: E402,F401


def test_folder_run_writes_every_output(tmp_path):
    src = _images(tmp_path / "in", 3)
    seg = FakeSeg()
    s = run_segment(seg, str(src), tmp_path / "out", progress=False)
    out = tmp_path / "out"
    assert s.frames == 3
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["img0.png", "img1.png",
                                                                 "img2.png"]
    assert len(list((out / "overlays").glob("*.jpg"))) == 3
    assert (out / "index.html").is_file() and (out / "palette.json").is_file()
    assert _hidden(out) == [".moduseg-run.json"]          # the run's manifest, no temps
    lm = read_label_map(out / "labels" / "img1.png")
    assert set(np.unique(lm)) == {0, 2, 255}                             # class indices kept
    d = _strict_json(out / "segments.json")
    assert d["format"] == "moduseg.segments" and d["class_names"] == ["sky", "road", "car"]
    assert d["config"] == ModuSegConfig().to_dict()                      # the whole config
    assert [f["name"] for f in d["frames"]] == ["img0", "img1", "img2"]
    f = d["frames"][0]
    assert f["image_hw"] == [48, 64] and f["class_pixels"] == {"sky": 1536, "car": 768}
    s0, s1, s2, s3 = f["segments"]
    assert s0["class_id"] == 0 and s0["class_name"] == "sky" and s0["confidence"] == 1.0
    assert s1["confidence"] == 0.75 and s1["painted"] and s1["painted_pixels"] == 768
    assert s2["class_id"] is None and s2["confidence"] == 0.0 and not s2["painted"]
    assert s3["class_name"] == "road" and not s3["painted"]
    from pycocotools import mask as mask_utils
    m1 = mask_utils.decode({"size": s1["rle"]["size"], "counts": s1["rle"]["counts"].encode()})
    assert m1.shape == (48, 64) and m1.sum() == 768 and (m1.astype(bool) == (lm == 2)).all()
    assert s1["bbox"] == [0, 24, 32, 24]
    assert s0["bbox"] == [0, 0, 64, 24]
    assert set(d["median_ms"]) == {"backbone", "proposer", "nms", "total"}


def test_painted_pixels_are_full_resolution_pixels_with_low_resolution_masks():
    from moduseg.bank.builder import build_bank
    from moduseg.config import BankConfig, RuntimeConfig
    from moduseg.runtime.index import build_index
    from moduseg.runtime.pipeline import assign
    from synthetic import ColourBackbone, dataset, gt_proposals, scene

    bank = build_bank(dataset(6), ColourBackbone(), BankConfig(erosion_iterations=3, min_area=50))
    image, label = scene(5)
    full = gt_proposals(label)
    half = Proposals(full.masks[:, ::2, ::2], full.scores, label.shape)     # SAM-like masks
    res = assign(ColourBackbone()(image), half, bank, build_index(bank.vectors),
                 RuntimeConfig(min_area=50, top_k=5))
    painted = [s for s in res.segments if s.painted_pixels]
    assert painted and res.proposals is half
    for s in painted:                      # disjoint masks: each wins all of its pixels
        assert s.painted_pixels == s.area == 4 * int(half.masks[s.proposal].sum())


def test_overlay_and_label_png_of_a_background_class(tmp_path):
    src = _images(tmp_path / "in", 1)
    run_segment(FakeSeg(("background", "road", "car"), background_index=0), str(src),
                tmp_path / "out", progress=False)
    ov = cv2.imread(str(tmp_path / "out" / "overlays" / "img0.jpg"))
    assert ov.shape[0] > 48                                              # legend strip added


def test_no_overlay_still_writes_labels_json_and_index(tmp_path):
    src = _images(tmp_path / "in", 2)
    run_segment(FakeSeg(), str(src), tmp_path / "out", overlays=False, progress=False)
    out = tmp_path / "out"
    assert not (out / "overlays").exists() and (out / "index.html").is_file()
    assert len(_strict_json(out / "segments.json")["frames"]) == 2


def test_video_run_writes_a_verified_overlay_video(tmp_path):
    v = _video(tmp_path / "v.mp4", 8)
    out = tmp_path / "out"
    s = run_segment(FakeSeg(), str(v), out, progress=False)
    d = _strict_json(out / "segments.json")
    assert s.frames == 8 == len(d["frames"]) == _frames_in(out / "overlay.mp4")
    assert d["overlay_video"] == "overlay.mp4" and d["input"]["kind"] == "video"
    assert len(list((out / "previews").glob("*.jpg"))) == 8
    assert len(list((out / "labels").glob("*.png"))) == 8
    cap = cv2.VideoCapture(str(out / "overlay.mp4"))
    ok, frame = cap.read()
    cap.release()
    lh = legend_height(["sky", "road", "car"], 64)
    assert ok and frame.shape[:2] == (48 + lh + lh % 2, 64)             # legend, even height


def test_odd_sized_video_frames_keep_every_pixel(tmp_path):
    """OpenCV's writer crops odd frame sizes to even: the overlay is padded instead."""
    from moduseg.app.sources import Frame

    seg = FakeSeg()
    out = tmp_path / "out"
    w = outputs.RunWriter(out, seg.bank.class_names, {}, kind="video", input_spec="cam",
                          fps=10.0, total=3)
    for i in range(3):
        img = np.full((47, 63, 3), 40 * i, np.uint8)
        w.add(Frame(i, f"frame_{i:06d}", img), seg(img))
    w.finish()
    cap = cv2.VideoCapture(str(out / "overlay.mp4"))
    ok, frame = cap.read()
    cap.release()
    lh = legend_height(seg.bank.class_names, 63)
    assert ok and frame.shape[:2] == (47 + lh + (47 + lh) % 2, 64)


def _lost_write(self, rgb):
    """An overlay-video write that is lost, as on a full disk where the encoder
    reports nothing."""
    self.frames += 1


def test_lost_video_writes_are_an_error_not_an_empty_overlay(tmp_path, monkeypatch):
    v = _video(tmp_path / "v.mp4", 5)
    out = tmp_path / "out"
    run_segment(FakeSeg(), str(v), out, max_frames=3, progress=False)     # a good first run
    before = (out / "segments.json").read_bytes()
    from moduseg.app import encode
    monkeypatch.setattr(encode.OverlayVideo, "write", _lost_write)
    with pytest.raises(OutputError, match="0 of 5 frames"):
        run_segment(FakeSeg(), str(v), out, progress=False)
    # the previous run's files are untouched, no temp is left
    assert (out / "segments.json").read_bytes() == before
    assert _frames_in(out / "overlay.mp4") == 3
    assert _hidden(out) == [".moduseg-run.json"]          # the manifest, no temp


def test_disk_filling_up_during_a_video_run(tmp_path, tiny_tmpfs):
    v = _video(tmp_path / "v.mp4", 40, hw=(240, 320), noise=True)    # a few MB of overlays
    mnt = tiny_tmpfs("1m")
    out = mnt / "out"
    with pytest.raises(OutputError):
        run_segment(FakeSeg(), str(v), out, progress=False)
    assert not (out / "overlay.mp4").exists() and not (out / "segments.json").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".run.")]
