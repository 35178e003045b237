"""Dense optical flow (OpenCV DIS) and the warps the temporal path is built on.

Conventions: a *flow* is ``[h, w, 2]`` float32 (dx, dy) in pixels; a *map*
is ``[h, w, 2]`` float32 absolute source coordinates, as ``cv2.remap``
takes them. ``backward`` flow of frame t points from each pixel of t to
where it was in t-1, so ``warp(x_{t-1}, grid + backward)`` is x carried to t.
"""

from __future__ import annotations

import functools
import threading

import cv2
import numpy as np

PRESETS = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
           "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
           "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}

_local = threading.local()


def dis(preset: str = "ultrafast"):
    """One DIS instance per thread and preset (they hold buffers; not thread safe),
    reset to the preset's finest scale on every call.

    OpenCV's ``calc`` lowers the instance's finest scale in place when a frame is too
    small for it and never raises it again, so a cached instance that once saw a small
    frame gave every later stream in that thread other flows (seen as 0.2-2 % of a
    propagated frame's labels differing between a Ray actor or server and this process).
    """
    cache = getattr(_local, "dis", None)
    if cache is None:
        cache = _local.dis = {}
    if preset not in cache:
        if preset not in PRESETS:
            raise ValueError(f"unknown DIS preset {preset!r}; choose one of {sorted(PRESETS)}")
        d = cv2.DISOpticalFlow_create(PRESETS[preset])
        cache[preset] = (d, d.getFinestScale())
    d, finest = cache[preset]
    d.setFinestScale(finest)
    return d


def gray(image: np.ndarray, width: int | None = None) -> np.ndarray:
    """Grey uint8 copy of an RGB frame, area-downscaled to ``width`` when it is wider."""
    g = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    if width and g.shape[1] > width:
        h = max(1, int(round(g.shape[0] * width / g.shape[1])))
        g = cv2.resize(g, (width, h), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(g)


def flow_pair(prev: np.ndarray, cur: np.ndarray, preset: str = "ultrafast"):
    """``(backward, forward)``: flow cur -> prev and prev -> cur (grey frames, same size)."""
    d = dis(preset)
    return d.calc(cur, prev, None), d.calc(prev, cur, None)


@functools.lru_cache(maxsize=8)
def _identity(h: int, w: int) -> np.ndarray:
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    m = np.dstack([gx, gy])
    m.flags.writeable = False
    return m


def identity_map(hw) -> np.ndarray:
    """Each pixel's own coordinates (shared and read-only: copy before writing)."""
    return _identity(int(hw[0]), int(hw[1]))


def to_map(flow: np.ndarray) -> np.ndarray:
    return identity_map(flow.shape[:2]) + flow


def inside(m: np.ndarray, hw) -> np.ndarray:
    """Where a map lands inside an image of size ``hw``."""
    h, w = hw
    return (m[..., 0] >= 0) & (m[..., 0] <= w - 1) & (m[..., 1] >= 0) & (m[..., 1] <= h - 1)


def fb_valid(backward: np.ndarray, forward: np.ndarray, max_err: float = 1.0) -> np.ndarray:
    """Pixels of the current frame whose backward flow lands inside the previous frame
    and comes back within ``max_err`` pixels through the forward flow."""
    m = to_map(backward)
    fwd_at = cv2.remap(forward, m, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    err = np.linalg.norm(backward + fwd_at, axis=2)
    return inside(m, backward.shape[:2]) & (err <= max_err)


def compose(prev_map: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """The map from the current frame to an earlier one: ``prev_map`` (t-1 -> earlier)
    sampled where each pixel of t was in t-1. Coordinates are interpolated, so
    chaining never resamples labels more than once."""
    return cv2.remap(prev_map, to_map(backward), None, cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


def resize_map(m: np.ndarray, hw) -> np.ndarray:
    """A map made at one resolution, for images of size ``hw`` (coordinates rescaled)."""
    h, w = hw
    if m.shape[:2] == (h, w):
        return m
    sy, sx = h / m.shape[0], w / m.shape[1]
    # resize the displacement, not the coordinates (no clamping at the borders)
    d = cv2.resize(m - identity_map(m.shape[:2]), (w, h), interpolation=cv2.INTER_LINEAR)
    d[..., 0] *= sx
    d[..., 1] *= sy
    return identity_map((h, w)) + d


def warp_nearest(arr: np.ndarray, m: np.ndarray, border: int = 0) -> np.ndarray:
    """``arr`` (2-D, or [C, h, w] planes) sampled at map ``m`` (nearest; replicate at the
    border unless ``border`` is -1: then a constant 0)."""
    mode = cv2.BORDER_REPLICATE if border == 0 else cv2.BORDER_CONSTANT
    if arr.dtype == np.bool_:
        return warp_nearest(arr.view(np.uint8), m, border).view(np.bool_)
    if arr.ndim == 2:
        return cv2.remap(arr, m, None, cv2.INTER_NEAREST, borderMode=mode)
    out = np.empty((arr.shape[0], *m.shape[:2]), arr.dtype)
    for c in range(arr.shape[0]):
        out[c] = cv2.remap(np.ascontiguousarray(arr[c]), m, None, cv2.INTER_NEAREST,
                           borderMode=mode)
    return out
