"""Mask NMS and confidence-priority rasterisation on bit-packed masks.

Masks are packed once (8 pixels a byte); areas, intersections and the
first-come-first-served painting are then popcounts and bitwise ops on
1/8 of the memory, vectorised over masks, never a loop over pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..coco import full_resolution_areas, nearest_counts  # noqa: F401 (used by the pipeline)

_BYTE_BITS = np.array([bin(i).count("1") for i in range(256)], np.uint8)


def _popcount_table(words: np.ndarray) -> np.ndarray:
    """Set bits of each uint64 by a byte table: numpy 1.x has no ``bitwise_count``."""
    words = np.ascontiguousarray(words, dtype=np.uint64)
    per_byte = _BYTE_BITS[words.view(np.uint8)]
    return per_byte.reshape(words.shape + (8,)).sum(-1, dtype=np.uint8)


# numpy >= 2 counts bits in one ufunc; the serving side (PyTriton) pins numpy < 2
popcount = getattr(np, "bitwise_count", _popcount_table)


@dataclass
class PackedMasks:
    bits: np.ndarray            # [P, ceil(H*W/64)] uint64, pixels in row-major bit order
    hw: tuple[int, int]
    areas: np.ndarray           # [P] int64 pixel counts
    # (first, one-past-last) non-zero word per mask, computed on first use and
    # carried by take(), so the pooling and the NMS of one frame share it
    spans: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def pack(cls, masks: np.ndarray) -> "PackedMasks":
        P, H, W = masks.shape
        b8 = np.packbits(masks.reshape(P, H * W), axis=1)
        pad = (-b8.shape[1]) % 8
        if pad:
            b8 = np.pad(b8, ((0, 0), (0, pad)))
        bits = np.ascontiguousarray(b8).view(np.uint64)
        return cls(bits, (H, W), popcount(bits).sum(1, dtype=np.int64))

    def __len__(self) -> int:
        return int(self.bits.shape[0])

    def take(self, idx) -> "PackedMasks":
        spans = None if self.spans is None else (self.spans[0][idx], self.spans[1][idx])
        return PackedMasks(self.bits[idx], self.hw, self.areas[idx], spans)

    def word_spans(self) -> tuple[np.ndarray, np.ndarray]:
        """First and one-past-last non-zero 64-bit word of each mask."""
        if self.spans is None:
            from ..kernels import word_spans
            self.spans = word_spans(self.bits)
        return self.spans

    def row_span(self) -> tuple[np.ndarray, np.ndarray]:
        """First and one-past-last pixel row holding any pixel of each mask."""
        H, W = self.hw
        first, last = self.word_spans()
        return (first * 64) // W, np.minimum(H, -((-last * 64) // W))

    def unpack(self, row: np.ndarray) -> np.ndarray:
        H, W = self.hw
        return np.unpackbits(row.view(np.uint8), count=H * W).reshape(H, W).astype(bool)


def _as_packed(masks) -> PackedMasks:
    return masks if isinstance(masks, PackedMasks) else PackedMasks.pack(masks)


def intersections(a: PackedMasks, b: PackedMasks, chunk_words: int = 1 << 23) -> np.ndarray:
    """``[Pa, Pb]`` pixel counts of pairwise intersections."""
    out = np.zeros((len(a), len(b)), np.int64)
    if len(a) == 0 or len(b) == 0:
        return out
    rows = max(1, chunk_words // max(1, len(b) * a.bits.shape[1]))
    for i in range(0, len(a), rows):
        both = a.bits[i:i + rows, None, :] & b.bits[None, :, :]
        out[i:i + rows] = popcount(both).sum(-1, dtype=np.int64)
    return out


def pairwise_iou(masks) -> np.ndarray:
    """``[P, H, W]`` binary (or ``PackedMasks``) -> ``[P, P]`` IoU."""
    pm = _as_packed(masks)
    inter = intersections(pm, pm)
    union = pm.areas[:, None] + pm.areas[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0).astype(np.float32)


def class_nms(masks, labels: np.ndarray, scores: np.ndarray,
              iou_threshold: float) -> np.ndarray:
    """Indices kept by class-specific greedy mask NMS, in descending score order.

    A mask is suppressed by a higher-scoring kept mask of the same class whose
    IoU with it exceeds ``iou_threshold``. IoU is only computed within a class.
    """
    from ..kernels import greedy_class_nms

    pm = _as_packed(masks)
    order = np.argsort(-np.asarray(scores), kind="stable")
    keep_flag = greedy_class_nms(pm.bits, pm.areas, pm.word_spans(), np.asarray(labels),
                                 order, iou_threshold)
    if keep_flag is not None:          # compiled: lazy IoU on the masks' common rows
        return order[keep_flag[order]]
    keep_flag = np.zeros(len(order), bool)
    for c in np.unique(labels):
        members = order[labels[order] == c]          # this class, by descending score
        if len(members) == 1:
            keep_flag[members[0]] = True
            continue
        over = pairwise_iou(pm.take(members)) > iou_threshold
        suppressed = np.zeros(len(members), bool)
        for i in range(len(members)):                # loop over masks, not pixels
            if not suppressed[i]:
                keep_flag[members[i]] = True
                suppressed |= over[i]
    return order[keep_flag[order]]


def rasterize(masks, labels: np.ndarray, order: np.ndarray,
              fill: int) -> tuple[np.ndarray, np.ndarray]:
    """Paint ``masks[order]`` first come first served.

    Returns the label map (``fill`` where no mask lands) and, per painted
    mask, how many pixels it won.
    """
    pm = _as_packed(masks)
    H, W = pm.hw
    out = np.full((H, W), fill, np.int32)
    won = np.zeros(len(order), np.int64)
    if len(order) == 0:
        return out, won
    taken = np.zeros(pm.bits.shape[1], np.uint64)
    per_class: dict[int, np.ndarray] = {}
    for k, i in enumerate(order):                  # loop over masks, bitwise on packed rows
        new = pm.bits[i] & ~taken
        taken |= new
        won[k] = int(popcount(new).sum())
        lab = int(labels[i])
        per_class[lab] = per_class[lab] | new if lab in per_class else new
    flat = out.reshape(-1)
    for lab, bits in per_class.items():
        flat[np.unpackbits(bits.view(np.uint8), count=H * W).astype(bool)] = lab
    return out, won
