"""RTSP and HTTP(S) inputs: URL checks, reading, drop and reconnect.

The RTSP tests start their own server (tests/rtsp_server.py, Debian's
GStreamer RTSP server) on 127.0.0.1, bounded in frames and time, and skip
with the reason when it is not installed.
"""

import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moduseg.app.netstream import StreamReader, check_stream_url, is_stream_url, mask_url
from moduseg.errors import InputError

from rtsp_fixture import RtspServer, free_port


# -- URL checks (user input) ----------------------------------------------------------

@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_any_text_is_a_usable_url_or_one_input_error(text):
    spec = "rtsp://" + text
    try:
        assert check_stream_url(spec) == spec
    except InputError as e:
        assert "\n" not in str(e)


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~",
               min_size=3, max_size=12))
def test_a_password_never_shows(password):
    url = f"rtsp://admin:{password}@127.0.0.1:8554/cam"
    assert password not in mask_url(url).replace("rtsp://admin:", "").replace(
        "@127.0.0.1:8554/cam", "")
    assert mask_url(url) == "rtsp://admin:***@127.0.0.1:8554/cam"


@pytest.mark.parametrize("url, why", [
    ("ftp://host/x.mp4", "unsupported scheme"),
    ("rtsp:///path", "names no host"),
    ("rtsp://host:99999/x", "not a valid URL"),
    ("http://host/a b.mp4", "spaces"),
])
def test_bad_urls_are_refused_in_one_line(url, why):
    assert is_stream_url(url)
    with pytest.raises(InputError, match=why):
        check_stream_url(url)


def test_an_unreachable_stream_fails_fast_in_one_line():
    port = free_port()                                  # nothing listens there
    t = time.monotonic()
    with pytest.raises(InputError, match=f"cannot open stream rtsp://127.0.0.1:{port}/x"):
        StreamReader(f"rtsp://127.0.0.1:{port}/x", timeout_s=3).open()
    assert time.monotonic() - t < 15


# -- reconnect logic on a stand-in capture ------------------------------------------------

class FakeCapture:
    def __init__(self, frames):
        self.frames = list(frames)

    def read(self):
        if not self.frames:
            return False, None
        return True, self.frames.pop(0)

    def get(self, prop):
        return 0.0

    def release(self):
        pass


def test_a_drop_is_retried_with_bounded_attempts_said_on_the_console():
    frame = lambda v: np.full((4, 4, 3), v, np.uint8)            # noqa: E731
    sessions = [[frame(1), frame(2)], None, [frame(3), frame(4)], None, None]
    lines, pauses = [], []

    def opener(url, timeout_s):
        s = sessions.pop(0)
        return None if s is None else FakeCapture(s)

    r = StreamReader("rtsp://cam.local/live", retries=2, backoff_s=0.25, opener=opener,
                     say=lines.append, sleep=pauses.append)
    got = [int(f[0, 0, 0]) for f in r.frames()]
    assert got == [1, 2, 3, 4]
    assert r.stats.reconnects == 1 and r.stats.drops == 2 and r.stats.ended == "retries"
    assert pauses == [0.25, 0.5, 0.25, 0.5]                # doubling, reset after success
    assert any("reconnecting (2/2)" in ln for ln in lines)
    assert lines[-1].startswith("stream rtsp://cam.local/live: gave up after 2")


# -- a real RTSP server -----------------------------------------------------------------

@pytest.mark.slow
def test_rtsp_frames_from_a_local_server(rtsp_python):
    with RtspServer(rtsp_python, free_port(), seconds=30) as srv:
        r = StreamReader(srv.url, timeout_s=10)
        r.open()
        assert r.live and 10 <= r.fps <= 30
        frames = list(r.frames(12))
    assert len(frames) == 12 and frames[0].shape == (240, 320, 3)
    assert frames[0].dtype == np.uint8
    # the test pattern moves: the stream is live, not one frame repeated
    assert any(np.abs(f.astype(int) - frames[0]).mean() > 0.1 for f in frames[1:])


@pytest.mark.slow
def test_rtsp_drop_and_reconnect(rtsp_python):
    port = free_port()
    first = RtspServer(rtsp_python, port, seconds=30).start()
    lines = []
    r = StreamReader(f"rtsp://127.0.0.1:{port}/test", retries=6, backoff_s=0.5, timeout_s=5,
                     say=lines.append)
    got = []
    second = None
    try:
        for f in r.frames(30):
            got.append(f)
            if len(got) == 10:          # the server goes away mid-stream, and comes back
                first.stop()

                def restart():
                    nonlocal second
                    time.sleep(1.0)
                    second = RtspServer(rtsp_python, port, seconds=30).start()
                threading.Thread(target=restart, daemon=True).start()
    finally:
        first.stop()
        deadline = time.monotonic() + 20
        while second is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if second is not None:
            second.stop()
    assert len(got) == 30, lines
    assert r.stats.reconnects >= 1 and r.stats.ended == "max_frames"
    assert any("dropped after frame" in ln and "reconnecting (1/6)" in ln for ln in lines)
    assert any(ln.endswith("reconnected") for ln in lines)


@pytest.mark.slow
def test_a_video_over_http_is_read_to_its_end(tmp_path):
    """An http:// URL of a video file on a local server (127.0.0.1, bounded): every
    frame, in order, and its end is the end (a file, not a drop to reconnect)."""
    import functools
    import http.server

    from moduseg.app.encode import OverlayVideo

    v = OverlayVideo(tmp_path / "clip.mp4", 10.0)
    for i in range(12):
        f = np.full((64, 96, 3), 30, np.uint8)
        f[:, 6 * i:6 * i + 12] = 220
        v.write(f)
    v.close()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.timeout = 1
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    lines = []
    try:
        r = StreamReader(f"http://127.0.0.1:{server.server_address[1]}/clip.mp4", retries=2,
                         timeout_s=10, say=lines.append)
        r.open()
        assert not r.live                   # a file with a frame count
        frames = list(r.frames())
    finally:
        server.shutdown()
        server.server_close()
    assert len(frames) == 12 and r.stats.ended == "end" and not lines
    xs = [int(np.argmax(f[32, :, 0] > 128)) for f in frames]
    assert xs == sorted(xs) and xs[-1] > xs[0]          # the bar moves right, in order
