"""A local RTSP test server (Debian's GStreamer RTSP server through PyGObject).

Run by the tests with the system ``python3`` (which has ``gi``), not the venv:

    python3 tests/rtsp_server.py --port 8554 --seconds 20

Serves ``rtsp://127.0.0.1:PORT/test``: a moving test pattern (``ball``, so
consecutive frames differ), 320x240 at 15 fps, H.264 when ``x264enc`` is
there, else Motion JPEG. Binds 127.0.0.1 only and quits by itself after
``--seconds``; prints ``READY`` once it listens.
"""

import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--fps", type=int, default=15)
    a = ap.parse_args()
    Gst.init(None)
    src = (f"videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,"
           f"framerate={a.fps}/1 ! videoconvert")
    if Gst.ElementFactory.find("x264enc"):
        enc = ("x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 ! "
               "rtph264pay name=pay0 pt=96 config-interval=1")
    else:
        enc = "jpegenc quality=80 ! rtpjpegpay name=pay0 pt=26"
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(a.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(f"( {src} ! {enc} )")
    factory.set_shared(True)
    server.get_mount_points().add_factory("/test", factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{a.port}", file=sys.stderr)
        return 1
    loop = GLib.MainLoop()
    GLib.timeout_add(int(a.seconds * 1000), loop.quit)
    print("READY", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
