"""Frame sources of ``moduseg segment``: an image, a folder (or a shard of it),
a video file or a camera, as ``Frame`` values in order."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from ..errors import InputError
from ..io import IMAGE_SUFFIXES

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


@dataclass
class Frame:
    index: int
    name: str
    image: np.ndarray | None   # RGB uint8; None when not needed (Ray results, no overlays)


def input_kind(spec: str) -> str:
    """``image``, ``folder``, ``video`` or ``camera`` for a CLI input."""
    if spec.isdigit():
        return "camera"
    p = Path(spec)
    if p.is_dir():
        return "folder"
    if not p.exists():
        raise InputError(f"input {spec} does not exist (give an image, a folder, a video file "
                         f"or a camera index)")
    suf = p.suffix.lower()
    if suf in IMAGE_SUFFIXES:
        return "image"
    if suf in VIDEO_SUFFIXES:
        return "video"
    raise InputError(f"input {spec}: unknown file type {suf!r}; images: {IMAGE_SUFFIXES}, "
                     f"videos: {VIDEO_SUFFIXES}")


def video_info(spec: str) -> tuple[float, int]:
    cap = cv2.VideoCapture(int(spec) if spec.isdigit() else spec)
    if not cap.isOpened():
        raise InputError(f"cannot open video {spec}")
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    cap.release()
    return fps, n


def image_paths(spec: str, max_frames: int | None = None, shard=None) -> list[tuple[int, Path]]:
    """``(position, path)`` of an image or a folder's images (sorted by name).

    The first ``max_frames``, then shard ``i/N``'s share of them (``scale.shard``).
    """
    kind = input_kind(spec)
    if kind not in ("image", "folder"):
        raise InputError(f"input {spec} is a {kind}; --shard and --engine ray take an image "
                         f"folder (extract the frames first)")
    paths = [Path(spec)] if kind == "image" else sorted(
        p for p in Path(spec).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise InputError(f"folder {spec} holds no images ({IMAGE_SUFFIXES})")
    paths = paths[:max_frames]
    keep = shard.positions(len(paths)) if shard is not None else range(len(paths))
    return [(i, paths[i]) for i in keep]


def count_frames(spec: str, max_frames: int | None = None, shard=None) -> int | None:
    """Frames the input will give (None for a camera or a video without a count)."""
    kind = input_kind(spec)
    if kind in ("image", "folder"):
        return len(image_paths(spec, max_frames, shard))
    if kind == "camera":
        return max_frames
    n = video_info(spec)[1] or None
    return n if max_frames is None or n is None else min(n, max_frames)


def probe_input(spec: str) -> None:
    """Fail before any model loads on a video with no decodable frame."""
    if input_kind(spec) != "video":
        return
    cap = cv2.VideoCapture(spec)
    try:
        ok = cap.isOpened() and cap.read()[0]
    finally:
        cap.release()
    if not ok:
        raise InputError(f"video {spec} has no decodable frame (empty, truncated or an "
                         f"unsupported codec); re-encode it, e.g. with ffmpeg -i IN out.mp4")


def iter_frames(spec: str, max_frames: int | None = None, shard=None,
                on_error: Callable[[Path, InputError], None] | None = None) -> Iterator[Frame]:
    """Frames of an image, a folder (or shard ``i/N`` of it), a video or a camera.

    In a folder, an unreadable or truncated image is passed to ``on_error``
    (when given) and skipped; otherwise it stops the run.
    """
    kind = input_kind(spec)
    if kind in ("image", "folder") or shard is not None:
        from ..io import read_image
        for i, p in image_paths(spec, max_frames, shard):
            try:
                image = read_image(p)
            except InputError as e:
                if on_error is None or kind == "image":
                    raise
                on_error(p, e)
                continue
            yield Frame(i, p.stem, image)
        return
    cap = cv2.VideoCapture(int(spec) if kind == "camera" else spec)
    if not cap.isOpened():
        raise InputError(f"cannot open {kind} {spec}")
    try:
        i = 0
        while max_frames is None or i < max_frames:
            ok, bgr = cap.read()
            if not ok:
                break
            yield Frame(i, f"frame_{i:06d}", cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            i += 1
    finally:
        cap.release()
