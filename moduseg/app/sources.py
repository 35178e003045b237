"""Frame sources of ``moduseg segment``: an image, a folder (or a shard of it),
a video file, a camera or a network stream (RTSP, HTTP(S): ``app.netstream``),
as ``Frame`` values in order."""

from __future__ import annotations

import contextlib
import math
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import cv2
import numpy as np

from ..errors import InputError
from ..io import IMAGE_SUFFIXES, opencv_path
from ..text import printable

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
VIDEO_KINDS = ("video", "camera", "stream")     # frames in order: an overlay video, temporal
LIVE_KINDS = ("camera", "stream")               # frames arrive in real time: latency counts


@dataclass
class Frame:
    index: int
    name: str
    image: np.ndarray | None   # RGB uint8; None when not needed (Ray results, no overlays)
    source: str | None = None  # the input file's name (images and folders)
    captured: float | None = None   # time.perf_counter() when a live frame was read
    latency_ms: float | None = None  # a live frame: read -> result of the segmenter


MAX_CAMERA_INDEX = 9999      # OpenCV takes a C int; /dev/videoN numbers are small


def is_camera(spec: str) -> bool:
    """A camera index: ASCII digits only (``²`` or ``١`` are file names)."""
    return spec.isascii() and spec.isdigit()


def camera_index(spec: str) -> int:
    """The camera number of ``spec``; one line for a number no camera can have (OpenCV
    raises OverflowError past a C int)."""
    if len(spec) > 6 or int(spec) > MAX_CAMERA_INDEX:
        raise InputError(f"camera index {printable(spec)[:24]} is out of range (0.."
                         f"{MAX_CAMERA_INDEX}); give the number N of /dev/videoN (list them "
                         f"with 'ls /dev/video*'), e.g. 0 for the first camera")
    return int(spec)


def input_kind(spec: str) -> str:
    """``image``, ``folder``, ``video``, ``camera`` or ``stream`` (a URL) for a CLI input."""
    from .netstream import check_stream_url, is_stream_url

    if is_stream_url(spec):
        check_stream_url(spec)
        return "stream"
    if is_camera(spec):
        camera_index(spec)
        return "camera"
    p = Path(spec)
    shown = printable(spec)
    if p.is_dir():
        return "folder"
    if not p.exists():
        raise InputError(f"input {shown} does not exist (give an image, a folder, a video file, "
                         f"a camera index or an rtsp:// or http(s):// stream URL)")
    suf = p.suffix.lower()
    if suf in IMAGE_SUFFIXES:
        return "image"
    if suf in VIDEO_SUFFIXES:
        return "video"
    raise InputError(f"input {shown}: unknown file type {printable(repr(suf))}; images: "
                     f"{IMAGE_SUFFIXES}, videos: {VIDEO_SUFFIXES}")


@contextlib.contextmanager
def open_capture(spec: str):
    """``cv2.VideoCapture`` of a camera index or a video file (any file name: a name
    that is not UTF-8 is reached through ``io.opencv_path``); released on exit."""
    if is_camera(spec):
        cap = cv2.VideoCapture(camera_index(spec))
        try:
            yield cap
        finally:
            cap.release()
        return
    with opencv_path(spec) as cv_spec:
        cap = cv2.VideoCapture(cv_spec)
        try:
            yield cap
        finally:
            cap.release()


def video_info(spec: str) -> tuple[float, int]:
    if input_kind(spec) == "stream":
        from .netstream import StreamReader
        reader = StreamReader(spec).open()
        reader.close()
        return reader.fps, 0
    with open_capture(spec) as cap:
        if not cap.isOpened():
            raise InputError(f"cannot open video {printable(spec)}")
        fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    if not (math.isfinite(fps) and fps > 0):
        fps = 25.0
    return fps, n


class ImageFile(NamedTuple):
    """One image of an image or folder input: its place in the folder order, its
    file and the name of its outputs (``labels/<name>.png``)."""

    index: int
    path: Path
    name: str


def frame_names(paths) -> list[str]:
    """Output names for a folder's files: distinct and predictable.

    A file is named by its stem (``a.png`` -> ``a``). Files whose stems clash
    (``a.png`` and ``a.jpg``; ``A.png`` and ``a.png``, which a case-blind disk
    would mix up) are named by their whole file name (``a.jpg``, ``a.png``). A clash
    left after that (``a.png`` beside ``a.png.png``) numbers the later files in
    folder order (``a.png~2``). Computed over the whole folder, so ``--max-frames``,
    shards and Ray workers give every file the same name.
    """
    paths = [Path(p) for p in paths]
    stems = Counter(p.stem.casefold() for p in paths)
    names = [p.name if stems[p.stem.casefold()] > 1 else p.stem for p in paths]
    clashes = Counter(n.casefold() for n in names)
    used = set(clashes)
    seen: Counter = Counter()
    out = []
    for n in names:
        key = n.casefold()
        seen[key] += 1
        if clashes[key] > 1 and seen[key] > 1:
            k = seen[key]
            while f"{n}~{k}".casefold() in used:
                k += 1
            n = f"{n}~{k}"
            used.add(n.casefold())
        out.append(n)
    return out


def image_paths(spec: str, max_frames: int | None = None, shard=None) -> list[ImageFile]:
    """``ImageFile(position, path, name)`` of an image or a folder's images (sorted
    by name; names from ``frame_names``).

    The first ``max_frames``, then shard ``i/N``'s share of them (``scale.shard``).
    """
    kind = input_kind(spec)
    if kind not in ("image", "folder"):
        shown = printable(spec)
        raise InputError(f"input {shown} is a {kind}; --shard and --engine ray take an image "
                         f"folder (--engine ray also a whole video file; a live {kind} is "
                         f"read here: run it without them)" if kind in LIVE_KINDS else
                         f"input {shown} is a {kind}; --shard and --engine ray take an image "
                         f"folder (--engine ray also takes the video itself; for --shard "
                         f"extract the frames first)")
    paths = [Path(spec)] if kind == "image" else sorted(
        p for p in Path(spec).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise InputError(f"folder {printable(spec)} holds no images ({IMAGE_SUFFIXES})")
    names = frame_names(paths)
    n = len(paths) if max_frames is None else min(len(paths), max_frames)
    keep = shard.positions(n) if shard is not None else range(n)
    return [ImageFile(i, paths[i], names[i]) for i in keep]


def count_frames(spec: str, max_frames: int | None = None, shard=None) -> int | None:
    """Frames the input will give (None for a camera or a video without a count)."""
    kind = input_kind(spec)
    if kind in ("image", "folder"):
        return len(image_paths(spec, max_frames, shard))
    if kind in LIVE_KINDS:
        return max_frames
    n = video_info(spec)[1] or None
    return n if max_frames is None or n is None else min(n, max_frames)


def probe_input(spec: str) -> None:
    """Fail before any model loads on a video with no decodable frame or a stream
    URL that does not open."""
    kind = input_kind(spec)
    if kind == "stream":
        from .netstream import StreamReader
        StreamReader(spec).open().close()
        return
    if kind != "video":
        return
    with open_capture(spec) as cap:
        ok = cap.isOpened() and cap.read()[0]
    if not ok:
        raise InputError(f"video {printable(spec)} has no decodable frame (empty, truncated or an "
                         f"unsupported codec); re-encode it, e.g. with ffmpeg -i IN out.mp4")


def video_images(spec: str, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """The RGB frames of a video, in order (what a Ray video task reads)."""
    for f in iter_frames(spec, max_frames):
        yield f.image


def iter_frames(spec: str, max_frames: int | None = None, shard=None,
                on_error: Callable[[Path, InputError], None] | None = None,
                stream=None) -> Iterator[Frame]:
    """Frames of an image, a folder (or shard ``i/N`` of it), a video, a camera or a
    stream URL (``stream``: the ``netstream.StreamReader`` to read it with, e.g. with
    its reconnect settings and console).

    In a folder, an unreadable or truncated image is passed to ``on_error``
    (when given) and skipped; otherwise it stops the run.
    """
    kind = input_kind(spec)
    if kind == "stream":
        from .netstream import StreamReader
        reader = stream or StreamReader(spec)
        for i, image in enumerate(reader.frames(max_frames)):
            yield Frame(i, f"frame_{i:06d}", image, captured=time.perf_counter())
        return
    if kind in ("image", "folder") or shard is not None:
        from ..io import read_image
        for i, p, name in image_paths(spec, max_frames, shard):
            try:
                image = read_image(p)
            except InputError as e:
                if on_error is None or kind == "image":
                    raise
                on_error(p, e)
                continue
            yield Frame(i, name, image, p.name)
        return
    with open_capture(spec) as cap:
        if not cap.isOpened():
            raise InputError(f"cannot open {kind} {printable(spec)}")
        i = 0
        while max_frames is None or i < max_frames:
            ok, bgr = cap.read()
            if not ok:
                break
            yield Frame(i, f"frame_{i:06d}", cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB),
                        captured=time.perf_counter() if kind == "camera" else None)
            i += 1
