"""``moduseg segment`` on live inputs: an RTSP stream from a local server into a run
folder whose overlay plays in Chromium, per-frame latency and keyframe rate, a bad
URL in one line, ``--show`` on an Xvfb screen, live frame dropping."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

from moduseg.app.loop import run_overlapped, run_segment
from moduseg.app.sources import Frame
from moduseg.cli import cli
from moduseg.config import ModuSegConfig
from moduseg.temporal import TemporalConfig
from moduseg.types import Proposals, Segment, SegmentationResult

from browser import chromium, screenshot, video_playback
from rtsp_fixture import RtspServer, free_port
from xvfb import Xvfb, xvfb_available

NAMES = ["road", "car"]


class BrightIsCar:
    """Bright pixels are 'car' (the test pattern's ball), the rest 'road'; every third
    frame says it is a keyframe, as the temporal path's results do."""

    def __init__(self):
        self.bank = SimpleNamespace(class_names=list(NAMES), background_index=None)
        self.full_config = ModuSegConfig()
        self.n = 0

    def __call__(self, image, timer=None):
        H, W = image.shape[:2]
        car = image.mean(-1) > 60
        lm = car.astype(np.uint8)
        masks = np.stack([~car, car])
        segs = [Segment(0, 0, "road", 0.9, 0.9, int((~car).sum()), int((~car).sum())),
                Segment(1, 1, "car", 0.8, 0.8, int(car.sum()), int(car.sum()))]
        res = SegmentationResult(lm, segs, {"total": 5.0}, list(NAMES),
                                 Proposals(masks, np.array([0.9, 0.8]), (H, W)))
        res.keyframe = self.n % 3 == 0
        self.n += 1
        return res


@pytest.mark.slow
def test_rtsp_stream_run_plays_in_chromium_and_reports_latency(rtsp_python, tmp_path):
    out = tmp_path / "out"
    with RtspServer(rtsp_python, free_port(), seconds=40) as srv:
        url = srv.url.replace("rtsp://", "rtsp://viewer:secret@")
        s = run_segment(BrightIsCar(), url, out, max_frames=15, progress=False,
                        temporal=TemporalConfig(enabled=False))
    assert s.frames == 15
    d = json.loads((out / "segments.json").read_text())
    assert d["input"] == {"path": url.replace("secret", "***"), "kind": "stream"}
    assert "secret" not in (out / "segments.json").read_text()
    assert "secret" not in (out / "index.html").read_text()
    live = d["live"]
    assert live["frames"] == 15 and live["reconnects"] == 0 and live["dropped"] >= 0
    assert 0 < live["latency_ms"]["p50"] <= live["latency_ms"]["p95"] < 10_000
    assert live["keyframe_rate"] == pytest.approx(5 / 15, abs=1e-3)
    assert all("latency_ms" in f for f in d["frames"])
    assert d["overlay_video"] == "overlay.mp4" and d["overlay_codec"] == "h264"
    assert s.live == live
    page = (out / "index.html").read_text()
    assert '<video src="overlay.mp4"' in page and "<script" not in page
    assert "latency p95" in page
    if chromium() is None:
        pytest.skip("Chromium not installed: the overlay video was not played in a browser")
    r = video_playback(out / "index.html")
    assert "error" not in r, r
    assert r["duration"] > 0 and r["width"] == 320 and r["drawn"] and r["std"] > 5, r
    shot = screenshot(out / "index.html", tmp_path / "index.png")
    assert shot.stat().st_size > 10_000


def test_a_bad_stream_url_is_one_line_and_exit_2(tmp_path):
    port = free_port()
    for url, why in ((f"rtsp://127.0.0.1:{port}/nothing", "cannot open stream"),
                     ("ftp://127.0.0.1/x.mp4", "unsupported scheme"),
                     ("rtsp://admin:pw@127.0.0.1:99999/x", "not a valid URL")):
        r = CliRunner().invoke(cli, ["segment", url, "--out", str(tmp_path / "o")])
        assert r.exit_code == 2, r.output
        lines = [ln for ln in r.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and why in lines[0] and "Traceback" not in r.output, r.output
        assert ":pw@" not in r.output
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_show_without_a_display_is_one_line_before_anything_loads(tmp_path, monkeypatch):
    pytest.importorskip("pygame")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    video = tmp_path / "v.mp4"
    video.write_bytes(b"not read: --show is checked first")
    r = CliRunner().invoke(cli, ["segment", str(video), "--show", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "--show needs a display" in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1


def _video(path: Path, n=12, hw=(96, 128)) -> Path:
    import cv2
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (hw[1], hw[0]))
    for i in range(n):
        f = np.full((*hw, 3), 30, np.uint8)
        f[30:70, 8 * i:8 * i + 40] = 230                # a bright block moving right
        w.write(f)
    w.release()
    return path


@pytest.mark.skipif(not xvfb_available(), reason="Xvfb is not installed (apt-get install xvfb)")
def test_show_puts_each_overlay_on_screen(tmp_path, monkeypatch):
    """run_segment(show=True) on a video under Xvfb: the window holds the run's last
    overlay, pixel for pixel."""
    pytest.importorskip("pygame")
    import cv2

    video = _video(tmp_path / "v.mp4")
    out = tmp_path / "out"
    with Xvfb(tmp_path / "fb", size=(400, 300)) as x:
        monkeypatch.setenv("DISPLAY", x.display)
        seen = []
        from moduseg.app import display

        real_show = display.LiveWindow.show

        def show_and_look(self, rgb, caption=None):
            ok = real_show(self, rgb, caption)
            self._pg.display.flip()
            time.sleep(0.05)
            seen.append((rgb.copy(), x.screen()))
            return ok
        monkeypatch.setattr(display.LiveWindow, "show", show_and_look)
        run_segment(BrightIsCar(), str(video), out, progress=False, show=True,
                    temporal=TemporalConfig(enabled=False))
    assert len(seen) == 12
    overlay, screen = seen[-1]
    h, w = overlay.shape[:2]
    # the window is centred on the bare Xvfb screen (no window manager)
    y0, x0 = (300 - h) // 2, (400 - w) // 2
    np.testing.assert_array_equal(screen[y0:y0 + h, x0:x0 + w], overlay)
    assert overlay.std() > 10
    cv2.imwrite(str(tmp_path / "screen.png"), screen[..., ::-1])


def test_live_sources_drop_stale_frames_instead_of_queueing_them():
    """A camera at 100 frames/s and a segmenter at 20: the segmenter always gets a
    recent frame; the ones it could not take are counted as dropped."""
    def camera():
        for i in range(60):
            time.sleep(0.01)
            yield Frame(i, f"f{i}", None, captured=time.perf_counter())

    done, lat = [], []

    def infer(f):
        time.sleep(0.05)
        return f.index

    def write(f, res):
        done.append(res)
        lat.append(time.perf_counter() - f.captured)

    counts: dict = {}
    n = run_overlapped(camera(), infer, write, live=True, counts=counts)
    assert n == len(done) and counts["dropped"] == 60 - n and n < 40
    assert done == sorted(done)                      # still in order
    assert max(lat) < 0.5                            # no growing backlog
    # the same source read in order, every frame kept (a video file)
    done.clear(), lat.clear()
    counts = {}
    assert run_overlapped(camera(), infer, write, counts=counts) == 60
    assert counts["dropped"] == 0


def test_a_refused_stream_is_one_line_from_the_real_process_too(tmp_path):
    """OpenCV's and FFmpeg's own logs (written by native code, past click) stay quiet."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCV_")}
    env["PYTHONPATH"] = str(root)
    r = subprocess.run([sys.executable, "-m", "moduseg.cli", "segment",
                        f"rtsp://127.0.0.1:{free_port()}/x", "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert r.returncode == 2
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    assert len(lines) == 1 and "cannot open stream" in lines[0], lines


def test_the_live_console_line():
    from moduseg.app.cli import live_line

    line = live_line({"latency_ms": {"p50": 126.1, "p95": 1504.3, "max": 2e4},
                      "keyframe_rate": 0.1, "frames": 20, "dropped": 452, "reconnects": 1})
    assert line == ("live: latency p50 126 ms, p95 1504 ms, keyframes 10%, 452 frame(s) "
                    "dropped while busy, 1 reconnect(s)")
