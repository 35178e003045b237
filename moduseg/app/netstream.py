"""Network streams as inputs: RTSP and HTTP(S) URLs, read by OpenCV's FFmpeg.

A live stream drops: the camera reboots, Wi-Fi blinks, the server restarts.
``StreamReader`` reads frames until ``max_frames``; when a read fails it
reopens the URL up to ``retries`` times in a row (a pause that doubles from
``backoff_s``), saying each attempt on the console, and ends the stream
cleanly when they are used up. A URL that does not open at all is an
``InputError`` naming the URL (with any password masked) and the fix.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from ..errors import InputError

SCHEMES = ("rtsp", "rtsps", "http", "https")
DEFAULT_RETRIES = 5
DEFAULT_BACKOFF_S = 0.5
DEFAULT_TIMEOUT_S = 10.0


def is_stream_url(spec: str) -> bool:
    """Whether an input looks like a URL (``scheme://``): then it is checked as one."""
    return "://" in str(spec)


def check_stream_url(spec: str) -> str:
    """The URL itself when it is a usable stream URL, else one ``InputError`` line."""
    spec = str(spec)
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in spec):
        raise InputError(f"input {_show(spec)} contains spaces or control characters; "
                         f"percent-encode them (a space is %20)")
    try:
        parts = urlsplit(spec)
        port = parts.port            # raises on a non-numeric or out-of-range port
    except ValueError as e:
        raise InputError(f"input {_show(spec)} is not a valid URL ({e}); give e.g. "
                         f"rtsp://HOST:8554/path or https://HOST/video.mp4") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise InputError(f"input {_show(spec)}: unsupported scheme {parts.scheme!r}; "
                         f"streams are {', '.join(s + '://' for s in SCHEMES)}")
    if not parts.hostname:
        raise InputError(f"input {_show(spec)} names no host; give e.g. "
                         f"{scheme}://HOST:{port or 8554}/path")
    return spec


def _show(spec: str) -> str:
    """A URL for a one-line message: password masked, control characters escaped."""
    return mask_url(spec).encode("unicode_escape").decode("ascii").replace(" ", "\\x20")


def mask_url(url: str) -> str:
    """The URL with its password (if any) replaced by ``***``: safe to print."""
    try:
        parts = urlsplit(str(url))
        if parts.password is None:
            return str(url)
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        netloc = f"{parts.username}:***@{host}" if parts.username else f"***@{host}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    except ValueError:
        return "<URL>"


def _ffmpeg_options(url: str) -> None:
    """RTSP over TCP by default: no lost packets (and grey smears) on a busy host; FFmpeg
    says only fatal errors (a refused connection is our one line, not its log). A user's
    own ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` / ``OPENCV_FFMPEG_LOGLEVEL`` win."""
    if url.lower().startswith("rtsp") and "OPENCV_FFMPEG_CAPTURE_OPTIONS" not in os.environ:
        os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = "rtsp_transport;tcp"
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")


def open_stream_capture(url: str, timeout_s: float = DEFAULT_TIMEOUT_S):
    """An opened ``cv2.VideoCapture`` (FFmpeg backend) or None, within ``timeout_s``."""
    import cv2

    _ffmpeg_options(url)
    ms = int(max(0.1, timeout_s) * 1000)
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    level = logging.getLogLevel() if logging else None
    if logging:                  # OpenCV's own warning about a capture that did not open
        logging.setLogLevel(logging.LOG_LEVEL_ERROR)
    try:
        cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms,
                                                     cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])
    finally:
        if logging:
            logging.setLogLevel(level)
    if not cap.isOpened():
        cap.release()
        return None
    return cap


@dataclass
class StreamStats:
    frames: int = 0
    reconnects: int = 0          # successful reopenings
    drops: int = 0               # reads that failed on an open stream
    ended: str = ""              # why the stream stopped: "max_frames", "end", "retries"


class StreamReader:
    """Frames (RGB uint8) of a stream URL, with bounded reconnects.

    ``live``: a failed read is a drop to recover from (RTSP, a camera over
    HTTP); else (a file over HTTP with a frame count) it is the end.
    ``say`` receives the console lines (reconnect attempts, the end).
    """

    def __init__(self, url: str, *, retries: int = DEFAULT_RETRIES,
                 backoff_s: float = DEFAULT_BACKOFF_S, timeout_s: float = DEFAULT_TIMEOUT_S,
                 say: Callable[[str], None] | None = None, opener=open_stream_capture,
                 sleep=time.sleep):
        self.url = check_stream_url(url)
        if retries < 0:
            raise InputError(f"--reconnect must be >= 0, got {retries}")
        self.retries, self.backoff_s, self.timeout_s = retries, backoff_s, timeout_s
        self.say = say or (lambda line: None)
        self._open, self._sleep = opener, sleep
        self.stats = StreamStats()
        self.fps = 25.0
        self.live = True
        self._cap = None

    def open(self) -> "StreamReader":
        """Open the URL once (no retries): a bad URL fails here, before any model loads."""
        import cv2

        cap = self._open(self.url, self.timeout_s)
        if cap is None:
            raise InputError(f"cannot open stream {mask_url(self.url)} (no answer, refused, or "
                             f"not a video within {self.timeout_s:g} s); check the address, "
                             f"port and path, and that the camera or server is up")
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if np.isfinite(fps) and 0 < fps <= 240 else 25.0
        count = float(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0.0)
        self.live = self.url.lower().startswith("rtsp") or not (np.isfinite(count) and count > 0)
        self._cap = cap
        return self

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def _reconnect(self) -> bool:
        """Reopen after a drop: up to ``retries`` attempts, each said on the console."""
        self.close()
        pause = self.backoff_s
        for attempt in range(1, self.retries + 1):
            self.say(f"stream {mask_url(self.url)}: dropped after frame {self.stats.frames}; "
                     f"reconnecting ({attempt}/{self.retries}) in {pause:.1f} s")
            self._sleep(pause)
            cap = self._open(self.url, self.timeout_s)
            if cap is not None:
                ok, bgr = cap.read()
                if ok:
                    self._cap = cap
                    self.stats.reconnects += 1
                    self.say(f"stream {mask_url(self.url)}: reconnected")
                    self._pending = bgr
                    return True
                cap.release()
            pause = min(pause * 2, 8.0)
        self.say(f"stream {mask_url(self.url)}: gave up after {self.retries} reconnect "
                 f"attempt(s); ending the run with {self.stats.frames} frame(s)")
        return False

    def frames(self, max_frames: int | None = None) -> Iterator[np.ndarray]:
        import cv2

        if self._cap is None:
            self.open()
        self._pending = None
        try:
            while max_frames is None or self.stats.frames < max_frames:
                if self._pending is not None:
                    ok, bgr, self._pending = True, self._pending, None
                else:
                    ok, bgr = self._cap.read()
                if not ok or bgr is None:
                    if not self.live:
                        self.stats.ended = "end"
                        return
                    self.stats.drops += 1
                    if not self._reconnect():
                        self.stats.ended = "retries"
                        return
                    continue
                self.stats.frames += 1
                yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            self.stats.ended = "max_frames"
        finally:
            self.close()
