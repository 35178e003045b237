"""The temporal class memory: per-pixel class scores carried by the flow.

Scores ``[C, H, W]`` (float32, each pixel's scores sum to at most 1) live
in the coordinates of the last keyframe. At the next keyframe they are
warped to it and fused with its labels by an exponential moving average,
so a class wins a pixel only when it has won it on most recent keyframes:
one frame's mistaken vote no longer flips a segment. Pixels the flow could
not carry (new content entering the frame) start from the new labels; a
shot cut starts the memory afresh.
"""

from __future__ import annotations

import numpy as np

from ..types import IGNORE
from .flow import warp_nearest


def one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """``[C, H, W]`` float32: 1 at each pixel's class, all 0 at ``IGNORE`` (or >= C)."""
    out = np.zeros((n_classes, labels.size), np.float32)
    px, cls = _labelled(labels, n_classes)
    out[cls, px] = 1.0                     # one scatter, not a pass over every plane
    return out.reshape(n_classes, *labels.shape)


def _labelled(labels: np.ndarray, n_classes: int):
    """(flat pixel indices, their classes) of the pixels with a class below ``n_classes``."""
    flat = labels.ravel()
    px = np.flatnonzero(flat < n_classes)
    return px, flat[px].astype(np.intp)


def start(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """A fresh memory (first frame, after a cut): the frame's labels, fully trusted."""
    return one_hot(labels, n_classes)


def warp(scores: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Scores carried to the current frame by a map (current -> keyframe coordinates)."""
    return warp_nearest(scores, m)


def fuse(warped: np.ndarray, carried: np.ndarray, labels: np.ndarray,
         decay: float) -> np.ndarray:
    """``decay * warped + (1 - decay) * one_hot(labels)`` where the memory was carried,
    the new labels alone elsewhere. A pixel the new frame leaves unassigned
    keeps its (decayed) history.

    Computed in place in ``warped`` (a fresh warp; it is returned): one pass over the
    ``[C, H, W]`` scores and one scatter of the labels, instead of building the
    one-hot planes, a second score array and a select (at 960 x 720 with 12 classes
    each of those is 33 MB; this is a keyframe's cost)."""
    n = warped.shape[0]
    weight = np.where(carried, np.float32(decay), np.float32(0.0))
    warped *= weight[None]                 # decayed history; 0 where nothing was carried
    flat = warped.reshape(n, -1)
    px, cls = _labelled(labels, n)
    add = np.where(carried.ravel()[px], np.float32(1.0 - decay), np.float32(1.0))
    flat[cls, px] += add
    return warped


def decide(scores: np.ndarray) -> np.ndarray:
    """Each pixel's class with the highest score; ``IGNORE`` where all are 0."""
    best = np.zeros(scores.shape[1:], np.float32)
    lab = np.full(scores.shape[1:], IGNORE, np.uint8)
    for c in range(scores.shape[0]):       # planes: faster than argmax over axis 0
        win = scores[c] > best
        lab[win] = c
        best = np.maximum(best, scores[c])
    return lab
