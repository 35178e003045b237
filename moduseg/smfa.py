"""Soft-masked feature aggregation (SMFA), shared by the bank and the runtime.

A mask's weight on patch ``j`` is the fraction of that patch's area the mask
covers, in the padded network-input frame described by ``GridGeometry``.
The projection is separable: ``W = A_y @ M @ A_x.T`` with overlap matrices
``A`` built once per geometry, so P masks are projected by two matrix
products and no Python loop touches pixels. When the grid covers the image
exactly and masks are at least grid resolution, this equals
``cv2.resize(mask, (w, h), interpolation=cv2.INTER_AREA)`` for integer and
non-integer scale factors. The CUDA kernel (``runtime/cuda``) computes the
same overlaps.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError
from .types import FeatureMap, GridGeometry


def overlap_matrix(src_len: int, content_len: float, cells: int, patch: int) -> np.ndarray:
    """``[cells, src_len]``: fraction of each grid cell covered by each source pixel.

    Source pixel ``i`` spans ``[i, i+1) * content_len / src_len`` in padded
    input pixels; cell ``j`` spans ``[j, j+1) * patch``. Cells beyond the
    content (the zero padding) get zero rows.
    """
    s = content_len / float(src_len)
    src = np.arange(src_len + 1, dtype=np.float64) * s
    dst = np.arange(cells + 1, dtype=np.float64) * patch
    lo = np.maximum(src[None, :-1], dst[:-1, None])
    hi = np.minimum(src[None, 1:], dst[1:, None])
    return (np.clip(hi - lo, 0.0, None) / patch).astype(np.float32)


def geometry_matrices(mask_hw: tuple[int, int], geometry: GridGeometry):
    """Overlap matrices ``(A_y [h, Hm], A_x [w, Wm])`` for masks of ``mask_hw``."""
    (hm, wm), (rh, rw), (h, w) = mask_hw, geometry.resized_hw, geometry.grid_hw
    return (overlap_matrix(hm, rh, h, geometry.patch),
            overlap_matrix(wm, rw, w, geometry.patch))


def soft_weights_matmul(masks: np.ndarray, geometry: GridGeometry) -> np.ndarray:
    """Reference form of ``soft_weights``: two dense matrix products (slow on big masks)."""
    P, hm, wm = masks.shape
    ay, ax = geometry_matrices((hm, wm), geometry)
    h, w = geometry.grid_hw
    if P == 0:
        return np.zeros((0, h, w), np.float32)
    m = masks.reshape(P * hm, wm).astype(np.float32)
    t = (m @ ax.T).reshape(P, hm, w)
    return np.matmul(ay[None], t)


def cell_edges(src_len: int, content_len: float, cells: int, patch: int) -> np.ndarray:
    """Grid-cell edges in source-pixel units, clipped to the source (padding -> empty)."""
    return np.minimum(np.arange(cells + 1, dtype=np.float64) * patch * src_len / content_len,
                      src_len)


def _split(pos: np.ndarray, limit: int):
    lo = np.floor(pos).astype(np.int64)
    return lo, np.minimum(lo + 1, limit), pos - lo


# Integral-image sums are exact in int32 up to this many pixels per chunk.
_CHUNK_PIXELS = 1 << 30


def soft_weights(masks: np.ndarray, geometry: GridGeometry, rows=None,
                 row_span=None) -> np.ndarray:
    """``[P, Hm, Wm]`` binary masks -> ``[P, h, w]`` area weights in [0, 1].

    ``rows`` selects masks without copying them (the runtime's kept
    proposals); ``row_span`` (first, one-past-last occupied pixel row per
    selected mask) lets the compiled kernel skip empty rows. With numba the
    sparse overlap matrices are applied in one pass over the mask bytes
    (``moduseg.kernels.area_weights``). Without it, one integral image over
    the stacked masks (a single SIMD pass in OpenCV) gives every cell's
    covered area: the integral of a piecewise-constant mask is bilinear
    inside each pixel, so evaluating it at fractional cell corners is exact.
    Equal to ``soft_weights_matmul`` up to float rounding.
    """
    import cv2

    from . import kernels

    if masks.ndim != 3:
        raise InputError(f"masks must be [P, H, W], got shape {masks.shape}")
    if rows is not None:
        rows = np.asarray(rows, np.int64).reshape(-1)
        if len(rows) and (rows.min() < 0 or rows.max() >= masks.shape[0]):
            raise InputError(f"rows must index the {masks.shape[0]} masks, got values "
                             f"{rows.min()}..{rows.max()}")
    P = masks.shape[0] if rows is None else len(rows)
    hm, wm = masks.shape[1:]
    h, w = geometry.grid_hw
    if P == 0:
        return np.zeros((0, h, w), np.float32)
    if kernels.HAVE_NUMBA:
        ay, ax = geometry_matrices((hm, wm), geometry)
        out = kernels.area_weights(masks, np.arange(P) if rows is None else rows, ay, ax,
                                   row_span)
        out[out < 1e-6] = 0.0
        return out
    if rows is not None:
        masks = masks[rows]
    (rh, rw), p = geometry.resized_hw, geometry.patch
    ys, xs = cell_edges(hm, rh, h, p), cell_edges(wm, rw, w, p)
    cell_area = (p * hm / rh) * (p * wm / rw)
    y0, y1, fy = _split(ys, hm)
    x0, x1, fx = _split(xs, wm)
    per = max(1, _CHUNK_PIXELS // (hm * wm))
    out = np.empty((P, h, w), np.float32)
    m8 = masks.view(np.uint8) if masks.dtype == np.bool_ else (masks != 0).view(np.uint8)
    for c0 in range(0, P, per):
        chunk = np.ascontiguousarray(m8[c0:c0 + per]).reshape(-1, wm)
        n = chunk.shape[0] // hm
        integral = cv2.integral(chunk, sdepth=cv2.CV_32S)       # [(n*hm)+1, wm+1]
        # the integral at every fractional cell corner, bilinear from 4 integer corners
        base = (np.arange(n) * hm)[:, None, None]
        s = np.zeros((n, h + 1, w + 1))
        for yi, wy in ((y0, 1 - fy), (y1, fy)):
            for xi, wx in ((x0, 1 - fx), (x1, fx)):
                s += integral[base + yi[None, :, None], xi[None, None, :]] * \
                    (wy[:, None] * wx[None, :])
        box = s[:, 1:, 1:] - s[:, :-1, 1:] - s[:, 1:, :-1] + s[:, :-1, :-1]
        out[c0:c0 + n] = box / cell_area
    # float rounding of the integral differences leaves ~1e-9 where nothing is covered
    out[out < 1e-6] = 0.0
    return out


def hard_weights(masks: np.ndarray, geometry: GridGeometry) -> np.ndarray:
    """Nearest-neighbour 0/1 weights: a patch counts if its centre lies in the mask.

    The ablation of soft aggregation (the paper's "w/o SMFA").
    """
    P, hm, wm = masks.shape
    (rh, rw), (h, w), p = geometry.resized_hw, geometry.grid_hw, geometry.patch
    cy = (np.arange(h) + 0.5) * p * hm / rh
    cx = (np.arange(w) + 0.5) * p * wm / rw
    iy, ix = np.floor(cy).astype(int), np.floor(cx).astype(int)
    vy, vx = iy < hm, ix < wm
    out = np.zeros((P, h, w), np.float32)
    sub = masks[:, iy[vy]][:, :, ix[vx]]
    out[:, :vy.sum(), :vx.sum()] = sub
    return out


def pool(weights: np.ndarray, fmap: FeatureMap, eps: float = 1e-6):
    """``[P, h, w]`` weights -> (``[P, D]`` L2-normalised vectors, ``[P]`` weight sums).

    ``vector = normalise(sum_j W_j F_j / (sum_j W_j + eps))``; all P masks in
    one matrix product. Rows whose weights are all zero come back as zero
    vectors with weight sum 0, for the caller to drop.
    """
    P = weights.shape[0]
    D = fmap.dim
    if tuple(weights.shape[1:]) != tuple(fmap.geometry.grid_hw):
        raise InputError(
            f"weights grid {weights.shape[1:]} does not match the feature grid "
            f"{fmap.geometry.grid_hw}")
    h, w = fmap.geometry.grid_hw
    w2 = weights.reshape(P, h * w)
    f2 = fmap.features.reshape(D, h * w).astype(np.float32, copy=False)
    wsum = w2.sum(1)
    v = (w2 @ f2.T) / (wsum[:, None] + eps)
    return l2_normalize(v), wsum


def center_image(fmap: FeatureMap) -> FeatureMap:
    """Patch features minus the image's mean patch feature (``bank.center_image``)."""
    f = fmap.features
    return FeatureMap(f - f.mean(axis=(1, 2), keepdims=True, dtype=np.float32), fmap.geometry)


def l2_normalize(v: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return (v / np.maximum(n, eps)).astype(np.float32, copy=False)


def smfa(masks: np.ndarray, fmap: FeatureMap, aggregation: str = "soft", eps: float = 1e-6):
    """Masks ``[P, Hm, Wm]`` -> (``[P, D]`` query vectors, ``[P]`` weight sums)."""
    weights = (soft_weights if aggregation == "soft" else hard_weights)(masks, fmap.geometry)
    return pool(weights, fmap, eps)
