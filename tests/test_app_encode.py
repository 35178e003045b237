"""The overlay video plays in a browser: H.264 in MP4, checked in headless Chromium."""

from pathlib import Path

import numpy as np
import pytest

from moduseg.app.encode import OverlayVideo, video_codec
from moduseg.errors import OutputError

from browser import chromium, screenshot, video_playback


def moving_bar(n=20, h=120, w=160):
    for i in range(n):
        f = np.full((h, w, 3), 40, np.uint8)
        f[:, i * 4:i * 4 + 40] = (220, 60, 60)
        yield f


def test_overlay_video_is_h264_with_every_frame(tmp_path):
    import cv2

    v = OverlayVideo(tmp_path / "overlay.mp4", 25.0)
    for f in moving_bar(12, 61, 83):              # odd sides: padded to even
        v.write(f)
    v.close()
    assert v.encoding.codec == "h264" and v.encoding.browser_playable
    assert video_codec(tmp_path / "overlay.mp4") == "h264"
    head = (tmp_path / "overlay.mp4").read_bytes()[:64]
    assert head.find(b"moov") != -1 or head.find(b"ftyp") == 4   # faststart: moov early
    cap = cv2.VideoCapture(str(tmp_path / "overlay.mp4"))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 12 and int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == 84
    cap.release()


def test_frames_of_another_size_are_refused(tmp_path):
    v = OverlayVideo(tmp_path / "o.mp4", 25.0)
    v.write(np.zeros((40, 60, 3), np.uint8))
    with pytest.raises(OutputError, match="differs from the first frame's 60x40"):
        v.write(np.zeros((42, 60, 3), np.uint8))
    v.abort()


def test_without_pyav_the_fallback_says_it_will_not_play(tmp_path, monkeypatch):
    from moduseg.app import encode

    monkeypatch.setattr(encode, "have_pyav", lambda: False)
    said = []
    v = OverlayVideo(tmp_path / "o.mp4", 25.0, warn=said.append)
    for f in moving_bar(3):
        v.write(f)
    v.close()
    assert v.encoding.codec == "mpeg4" and not v.encoding.browser_playable
    assert said and "pip install av" in said[0]


@pytest.mark.skipif(chromium() is None, reason="Chromium not installed (apt-get install "
                    "chromium; .ci/run does)")
@pytest.mark.slow
@pytest.mark.parametrize("encoder", ["h264", "mpeg4"])
def test_chromium_plays_the_h264_overlay_and_not_mpeg4_part2(tmp_path, encoder, monkeypatch):
    """The check can fail: MPEG-4 Part 2 (what OpenCV writes) gives a media error."""
    from moduseg.app import encode

    if encoder == "mpeg4":
        monkeypatch.setattr(encode, "have_pyav", lambda: False)
    v = OverlayVideo(tmp_path / "overlay.mp4", 25.0)
    for f in moving_bar():
        v.write(f)
    v.close()
    page = tmp_path / "page.html"
    page.write_text('<html><body><video src="overlay.mp4" controls muted></video></body></html>')
    r = video_playback(page)
    if encoder == "mpeg4":
        assert r.get("error", "").startswith("media error"), r
        return
    assert "error" not in r, r
    assert r["duration"] == pytest.approx(0.8, abs=0.05)
    assert (r["width"], r["height"]) == (160, 120)
    assert r["drawn"], f"no frame was drawn from the decoded video: {r}"
    # the frame at 0.5 s: a quarter red bar (mean 113) over grey 40
    assert r["mean"] == pytest.approx(0.25 * (220 + 60 + 60) / 3 + 0.75 * 40, abs=4)
    assert r["std"] > 20
