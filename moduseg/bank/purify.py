"""Semantic boundary purification: shrink label regions away from their edges.

Erosion by a ``k x k`` square repeated ``n`` times keeps exactly the pixels
whose chessboard distance to the nearest outside pixel exceeds
``n * (k - 1) / 2``; one distance transform therefore gives every erosion
depth at once, which the adaptive policy uses to pick the deepest erosion
that still keeps enough of the region. Like ``cv2.erode`` with its default
border, the image border does not erode a region.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..config import BankConfig


def chessboard_depth(mask: np.ndarray) -> np.ndarray:
    """Per-pixel chessboard distance to the nearest pixel outside ``mask`` (0 outside)."""
    m = mask.astype(np.uint8)
    if m.all():
        return np.full(m.shape, np.iinfo(np.int32).max, np.int32)
    d = cv2.distanceTransform(m, cv2.DIST_C, 3)
    return d.astype(np.int32)


def erode(mask: np.ndarray, kernel: int = 3, iterations: int = 20) -> np.ndarray:
    """``cv2.erode(mask, ones(kernel, kernel), iterations)`` as a boolean mask."""
    if iterations <= 0 or kernel <= 1:
        return mask.astype(bool)
    k = np.ones((kernel, kernel), np.uint8)
    return cv2.erode(mask.astype(np.uint8), k, iterations=iterations).astype(bool)


def erode_adaptive(mask: np.ndarray, kernel: int, max_iterations: int,
                   keep: float) -> np.ndarray:
    """Erode at most ``max_iterations`` times while at least ``keep`` of the area remains."""
    area = int(mask.sum())
    if area == 0 or max_iterations <= 0 or kernel <= 1:
        return mask.astype(bool)
    step = (kernel - 1) // 2
    depth = chessboard_depth(mask)
    inside = np.minimum(depth[mask], max_iterations * step + 1)
    # remaining[i] = pixels surviving i iterations = count(depth > i * step)
    counts = np.bincount(inside, minlength=max_iterations * step + 2)
    survivors = counts[::-1].cumsum()[::-1]          # survivors[t] = count(depth >= t)
    n = max_iterations
    while n > 0 and survivors[n * step + 1] < keep * area:
        n -= 1
    return mask & (depth > n * step)


def purify(mask: np.ndarray, cfg: BankConfig) -> np.ndarray:
    """Apply the configured purification to one binary region."""
    if cfg.purification == "none":
        return mask.astype(bool)
    if cfg.purification == "adaptive":
        return erode_adaptive(mask, cfg.erosion_kernel, cfg.erosion_iterations,
                              cfg.adaptive_keep)
    return erode(mask, cfg.erosion_kernel, cfg.erosion_iterations)
