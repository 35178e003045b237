"""Mask NMS and confidence-priority rasterisation, vectorised over masks."""

from __future__ import annotations

import numpy as np


def pairwise_iou(masks: np.ndarray) -> np.ndarray:
    """``[P, H, W]`` binary -> ``[P, P]`` IoU via one matrix product."""
    P = len(masks)
    if P == 0:
        return np.zeros((0, 0), np.float32)
    flat = masks.reshape(P, -1).astype(np.float32)
    inter = flat @ flat.T
    area = np.diag(inter)
    union = area[:, None] + area[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0).astype(np.float32)


def class_nms(masks: np.ndarray, labels: np.ndarray, scores: np.ndarray,
              iou_threshold: float) -> np.ndarray:
    """Indices kept by class-specific greedy mask NMS, in descending score order.

    A mask is suppressed by a higher-scoring kept mask of the same class whose
    IoU with it exceeds ``iou_threshold``.
    """
    order = np.argsort(-scores, kind="stable")
    if len(order) == 0:
        return order
    iou = pairwise_iou(masks[order])
    same = labels[order][:, None] == labels[order][None, :]
    over = (iou > iou_threshold) & same
    suppressed = np.zeros(len(order), bool)
    keep = []
    for i in range(len(order)):           # loop over masks (<= a few hundred), not pixels
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= over[i]
    return order[np.asarray(keep, dtype=np.int64)]


def rasterize(masks: np.ndarray, labels: np.ndarray, order: np.ndarray,
              fill: int) -> tuple[np.ndarray, np.ndarray]:
    """Paint ``masks[order]`` first come first served.

    Returns the label map (``fill`` where no mask lands) and, per painted
    mask, how many pixels it won.
    """
    H, W = masks.shape[1:]
    out = np.full((H, W), fill, np.int32)
    if len(order) == 0:
        return out, np.zeros(0, np.int64)
    stack = masks[order]
    covered = stack.any(0)
    first = stack.argmax(0)                   # index of the first mask covering each pixel
    out[covered] = labels[order][first[covered]]
    won = np.bincount(first[covered], minlength=len(order))
    return out, won
