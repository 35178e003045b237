"""Starting and stopping the local RTSP test server (tests/rtsp_server.py) from tests."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROBE = ("import gi; gi.require_version('Gst', '1.0'); "
         "gi.require_version('GstRtspServer', '1.0'); "
         "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
         "assert Gst.ElementFactory.find('videotestsrc'), 'videotestsrc'")


def system_python_with_rtsp() -> tuple[str | None, str]:
    """A Python that has PyGObject and GStreamer's RTSP server (Debian's, not the venv's)."""
    tried = []
    for py in ("/usr/bin/python3", shutil.which("python3")):
        if not py or py in tried or not Path(py).exists():
            continue
        tried.append(py)
        r = subprocess.run([py, "-c", PROBE], capture_output=True, text=True, timeout=60)
        if r.returncode == 0:
            return py, ""
    return None, ("no Python with GStreamer's RTSP server (apt-get install python3-gi "
                  "gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp gstreamer1.0-plugins-base "
                  "gstreamer1.0-plugins-good; .ci/run does)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RtspServer:
    """``rtsp://127.0.0.1:PORT/test``, alive at most ``seconds``."""

    def __init__(self, python: str, port: int, seconds: float = 30.0):
        self.python, self.port, self.seconds = python, port, seconds
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/test"

    def start(self) -> "RtspServer":
        self.proc = subprocess.Popen(
            [self.python, str(HERE / "rtsp_server.py"), "--port", str(self.port),
             "--seconds", str(self.seconds)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        deadline = time.monotonic() + 60          # a loaded CI machine starts it slowly
        line = ""
        while time.monotonic() < deadline and self.proc.poll() is None:
            line = self.proc.stdout.readline().strip()
            if line == "READY":
                return self
        self.stop()
        raise RuntimeError(f"the RTSP test server did not start: {line}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(timeout=10)
            for f in (self.proc.stdout, self.proc.stderr):
                if f:
                    f.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
