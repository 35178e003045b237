"""Tests of ``moduseg.app.report``."""

from __future__ import annotations
import pytest
from moduseg.app.loop import run_segment
from app_fixtures import FakeSeg, _chromium, _images, check_index_in_chromium  # noqa: E402,F401


@pytest.mark.slow
def test_index_html_renders_its_images_in_headless_chromium(tmp_path):
    src = _images(tmp_path / "in", 3)
    out = tmp_path / "out"
    run_segment(FakeSeg(), str(src), out, progress=False)
    assert check_index_in_chromium(out, tmp_path / "shot.png") == 3


def test_index_html_of_a_broken_gallery_is_caught(tmp_path):
    """The browser check can fail: a missing overlay is reported."""
    src = _images(tmp_path / "in", 2)
    out = tmp_path / "out"
    run_segment(FakeSeg(), str(src), out, progress=False)
    _chromium()
    (out / "overlays" / "img1.jpg").unlink()
    with pytest.raises(AssertionError, match="imgs 1/2"):
        check_index_in_chromium(out, tmp_path / "shot.png")
