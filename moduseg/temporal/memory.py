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
    out = np.zeros((n_classes, *labels.shape), np.float32)
    for c in range(n_classes):
        out[c][labels == c] = 1.0
    return out


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
    keeps its (decayed) history."""
    new = one_hot(labels, warped.shape[0])
    fused = warped * decay
    fused += new * (1.0 - decay)
    return np.where(carried[None], fused, new)


def decide(scores: np.ndarray) -> np.ndarray:
    """Each pixel's class with the highest score; ``IGNORE`` where all are 0."""
    best = np.zeros(scores.shape[1:], np.float32)
    lab = np.full(scores.shape[1:], IGNORE, np.uint8)
    for c in range(scores.shape[0]):       # planes: faster than argmax over axis 0
        win = scores[c] > best
        lab[win] = c
        best = np.maximum(best, scores[c])
    return lab
