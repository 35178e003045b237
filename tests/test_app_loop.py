"""Tests of ``moduseg.app.loop``."""

from __future__ import annotations
import cv2
import pytest
from moduseg.errors import InputError
from moduseg.io import read_image
from moduseg.app.loop import run_segment
from moduseg.app.sources import count_frames
from app_fixtures import FakeSeg, _images, _jpeg, _strict_json, _video  # noqa: E402,F401


def test_progress_totals_for_folders_and_videos(tmp_path):
    src = _images(tmp_path / "in", 5)
    assert count_frames(str(src)) == 5 and count_frames(str(src), 2) == 2
    v = _video(tmp_path / "v.mp4", 7)
    assert count_frames(str(v)) == 7 and count_frames(str(v), 3) == 3
    assert count_frames(str(src / "img0.png")) == 1


def test_truncated_jpeg_is_an_error_for_a_single_image(tmp_path):
    data = _jpeg(tmp_path / "a.jpg")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[:len(data) * 2 // 3])
    assert cv2.imread(str(cut)) is not None                              # OpenCV would accept
    with pytest.raises(InputError, match="truncated"):
        read_image(cut)
    with pytest.raises(InputError, match="truncated"):
        run_segment(FakeSeg(), str(cut), tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "segments.json").exists()


def test_truncated_jpeg_in_a_folder_is_reported_and_skipped(tmp_path):
    src = _images(tmp_path / "in", 2)
    data = _jpeg(src / "bad.jpg")
    (src / "bad.jpg").write_bytes(data[:len(data) // 2])
    s = run_segment(FakeSeg(), str(src), tmp_path / "out", progress=False)
    d = _strict_json(tmp_path / "out" / "segments.json")
    assert s.frames == 2 and [f["name"] for f in d["frames"]] == ["img0", "img1"]
    assert len(d["skipped"]) == 1 and d["skipped"][0]["file"].endswith("bad.jpg")
    assert "truncated" in d["skipped"][0]["error"]


def test_a_folder_of_only_unreadable_images_is_an_error(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    data = _jpeg(src / "bad.jpg")
    (src / "bad.jpg").write_bytes(data[:100])
    with pytest.raises(InputError, match="no frame"):
        run_segment(FakeSeg(), str(src), tmp_path / "out", progress=False)
