"""The overlay video a browser plays: H.264 in MP4 through PyAV (libx264).

OpenCV's bundled FFmpeg has no H.264 encoder and its ``mp4v`` (MPEG-4
Part 2) does not play in Chromium or Firefox; PyAV's wheels carry libx264.
Frames are RGB uint8, converted to yuv420p (what every browser decodes),
and the ``moov`` atom goes first (``+faststart``) so a page starts playing
before the whole file has loaded. Without PyAV the writer falls back to
``mp4v`` and says so once: the file still opens in desktop players.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import OutputError

H264_OPTIONS = {"preset": "veryfast", "crf": "23", "movflags": "+faststart"}


@dataclass(frozen=True)
class Encoding:
    codec: str            # what the file holds: "h264" or "mpeg4"
    browser_playable: bool


def have_pyav() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


class OverlayVideo:
    """Writes RGB frames of one size to ``path`` (``.mp4``); ``close`` finishes the file.

    Odd sides are padded by one dark row/column (yuv420p needs even sides).
    """

    def __init__(self, path: str | Path, fps: float, *, prefer_h264: bool = True,
                 warn=None):
        self.path = Path(path)
        self.fps = float(fps) if fps and np.isfinite(fps) and fps > 0 else 25.0
        self.frames = 0
        self._use_av = prefer_h264 and have_pyav()
        if prefer_h264 and not self._use_av and warn is not None:
            warn("PyAV is not installed: overlay.mp4 is written as MPEG-4 Part 2, which "
                 "browsers do not play; pip install av for H.264")
        self.encoding = Encoding("h264", True) if self._use_av else Encoding("mpeg4", False)
        self._container = self._stream = self._cv = None
        self._size: tuple[int, int] | None = None

    def write(self, rgb: np.ndarray) -> None:
        rgb = _even(np.ascontiguousarray(rgb, np.uint8))
        h, w = rgb.shape[:2]
        if self._size is None:
            self._open(w, h)
        elif (w, h) != self._size:
            raise OutputError(f"overlay video {self.path.name}: frame size {w}x{h} differs "
                              f"from the first frame's {self._size[0]}x{self._size[1]}")
        try:
            if self._use_av:
                import av
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                for packet in self._stream.encode(frame):
                    self._container.mux(packet)
            else:
                import cv2
                self._cv.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        except OutputError:
            raise
        except Exception as e:   # noqa: BLE001 - e.g. a full disk, as av.error.OSError
            raise OutputError(f"cannot write the overlay video {self.path}: {e}") from None
        self.frames += 1

    def _open(self, w: int, h: int) -> None:
        self._size = (w, h)
        try:
            if self._use_av:
                import av
                from fractions import Fraction
                self._container = av.open(str(self.path), "w", format="mp4",
                                          options={"movflags": "+faststart"})
                rate = Fraction(self.fps).limit_denominator(1001)
                self._stream = self._container.add_stream("libx264", rate=rate)
                self._stream.width, self._stream.height = w, h
                self._stream.pix_fmt = "yuv420p"
                self._stream.options = {k: v for k, v in H264_OPTIONS.items()
                                        if k != "movflags"}
            else:
                import cv2
                self._cv = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"),
                                           self.fps, (w, h))
                if not self._cv.isOpened():
                    raise OutputError(f"cannot write the overlay video {self.path}")
        except OutputError:
            raise
        except Exception as e:   # noqa: BLE001
            raise OutputError(f"cannot write the overlay video {self.path}: {e}") from None

    def close(self) -> None:
        """Flush the encoder and finish the container (idempotent)."""
        try:
            if self._stream is not None:
                for packet in self._stream.encode():
                    self._container.mux(packet)
            if self._container is not None:
                self._container.close()
            if self._cv is not None:
                self._cv.release()
        except Exception as e:   # noqa: BLE001
            raise OutputError(f"cannot finish the overlay video {self.path}: {e}") from None
        finally:
            self._container = self._stream = self._cv = None

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            if self._container is not None:
                self._container.close()
            if self._cv is not None:
                self._cv.release()
        self._container = self._stream = self._cv = None


def _even(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    if h % 2 or w % 2:
        rgb = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), constant_values=28)
    return rgb


def video_codec(path: str | Path) -> str | None:
    """The codec name of the first video stream (``h264``, ``mpeg4``...), None if unreadable."""
    if have_pyav():
        import av
        try:
            with av.open(str(path)) as c:
                return c.streams.video[0].codec_context.name if c.streams.video else None
        except Exception:   # noqa: BLE001
            return None
    import cv2
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            return None
        tag = int(cap.get(cv2.CAP_PROP_FOURCC))
        return "".join(chr((tag >> (8 * i)) & 0xFF) for i in range(4)).strip().lower() or None
    finally:
        cap.release()
