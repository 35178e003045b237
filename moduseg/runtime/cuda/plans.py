"""Launch plans and argument checks shared by the GPU launcher and the host emulator.

Grid sizes, tile constants and buffer sizes are computed here once, so the
CPU emulation tests exercise the same launch configuration the GPU gets. The
tile constants are read from the ``#define`` lines of the ``.cu`` files, so
Python and CUDA cannot drift apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

import numpy as np

from ...errors import InputError
from ...types import GridGeometry
from .nvrtc import kernel_source


@cache
def defines(name: str) -> dict[str, int]:
    """Integer ``#define``s of ``runtime/cuda/<name>.cu``."""
    text = kernel_source(name).decode()
    return {m.group(1): int(m.group(2))
            for m in re.finditer(r"^#define\s+(\w+)\s+(\d+)\b", text, re.MULTILINE)}


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class SmfaPlan:
    P: int
    D: int
    N: int
    weights_grid: tuple[int, int]
    weights_block: int
    pool_grid: tuple[int, int]
    pool_block: int
    tiles: int              # ticket counters: one per tile of PT masks


def smfa_plan(P: int, D: int, N: int) -> SmfaPlan:
    d = defines("smfa")
    return SmfaPlan(P, D, N, (P, 1), d["SMFA_THREADS"],
                    (_cdiv(D, d["DT"]), _cdiv(P, d["PT"])), d["POOL_THREADS"],
                    max(1, _cdiv(P, d["PT"])))


@dataclass(frozen=True)
class TopkPlan:
    Q: int
    Nb: int
    K: int
    nseg: int
    rows_per_seg: int
    partial_grid: tuple[int, int]
    partial_block: int
    merge_grid: tuple[int, int]
    merge_block: int


def topk_plan(Q: int, Nb: int, K: int, max_segments: int = 64) -> TopkPlan:
    """Split the bank into at most ``max_segments`` segments of whole tiles."""
    d = defines("topk")
    if not 1 <= K <= d["TK_MAX"]:
        raise InputError(f"top-K on the GPU needs 1 <= k <= {d['TK_MAX']}, got k={K}")
    tiles = max(1, _cdiv(Nb, d["TB"]))
    nseg = min(max_segments, tiles)
    rows = _cdiv(tiles, nseg) * d["TB"]
    nseg = max(1, _cdiv(Nb, rows))
    return TopkPlan(Q, Nb, K, nseg, rows, (nseg, _cdiv(Q, d["TQ"])), d["TB"],
                    (_cdiv(Q, d["MERGE_THREADS"]), 1), d["MERGE_THREADS"])


def check_masks(masks) -> np.ndarray:
    """``[P, Hm, Wm]`` bool/uint8 masks -> C-contiguous uint8 0/1."""
    m = np.asarray(masks)
    if m.ndim != 3:
        raise InputError(f"masks must be [P, H, W], got shape {m.shape}")
    if m.dtype != np.uint8:
        m = (m != 0).astype(np.uint8)
    return np.ascontiguousarray(m)


def check_geometry(mask_hw: tuple[int, int], geometry: GridGeometry) -> None:
    """The kernel's integer arithmetic stays inside int32 for these sizes."""
    (hm, wm), (rh, rw), (h, w), p = mask_hw, geometry.resized_hw, geometry.grid_hw, geometry.patch
    if min(hm, wm) <= 0:
        raise InputError(f"masks must have positive height and width, got {mask_hw}")
    if max(h * p * hm, w * p * wm, (hm + 1) * rh, (wm + 1) * rw) >= 2 ** 31:
        raise InputError(
            f"masks {mask_hw} on a {geometry.grid_hw} x {p} grid are too large for the CUDA "
            f"kernel's 32-bit indexing; downsample the masks")


def feature_strides(shape: tuple[int, ...], layout: str) -> tuple[int, int, int, tuple[int, int]]:
    """``(D, stride_d, stride_n, grid_hw)`` for a contiguous feature buffer.

    ``layout="dhw"``: ``[D, h, w]`` (a conv/FeatureMap layout);
    ``layout="hwd"``: ``[h, w, D]`` (transformer tokens, no transpose needed).
    """
    if len(shape) != 3:
        raise InputError(f"features must be 3-D ([D, h, w] or [h, w, D]), got {shape}")
    if layout == "dhw":
        D, h, w = shape
        return D, h * w, 1, (h, w)
    if layout == "hwd":
        h, w, D = shape
        return D, 1, D, (h, w)
    raise InputError(f"feature layout must be 'dhw' or 'hwd', got {layout!r}")
