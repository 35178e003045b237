"""Proposal-based map correction (CorrCLIP's map correction step).

Dense CLIP maps are noisy at object boundaries and inside large objects.
Every class-agnostic proposal whose objectness is at least ``min_score``
takes the majority label of its pixels, so each object gets one label. The
majorities are all read from the uncorrected map (order-independent votes);
proposals are then painted from the largest to the smallest, so a small
object inside a large region keeps its own label.
"""

from __future__ import annotations

import cv2
import numpy as np

from ...errors import InputError
from ...types import IGNORE, Proposals


def masks_at(proposals: Proposals, hw: tuple[int, int]) -> np.ndarray:
    """Proposal masks ``[P, H, W]`` bool at ``hw`` (nearest-neighbour resize if needed)."""
    if proposals.mask_hw == tuple(hw) or len(proposals) == 0:
        return proposals.masks if len(proposals) else np.zeros((0, *hw), bool)
    m = np.ascontiguousarray(proposals.masks.transpose(1, 2, 0)).astype(np.uint8)
    out = [cv2.resize(np.ascontiguousarray(m[:, :, i:i + 128]), (hw[1], hw[0]),
                      interpolation=cv2.INTER_NEAREST)
           .reshape(hw[0], hw[1], -1) for i in range(0, m.shape[2], 128)]
    return np.concatenate(out, 2).transpose(2, 0, 1).astype(bool)


def majority_labels(label_map: np.ndarray, masks: np.ndarray,
                    n_labels: int = 256) -> np.ndarray:
    """Majority label of each mask's non-ignored pixels; ``-1`` if it has none."""
    flat = label_map.reshape(-1)
    out = np.full(len(masks), -1, np.int64)
    for i, m in enumerate(masks):
        counts = np.bincount(flat[m.reshape(-1)], minlength=n_labels)
        counts[IGNORE] = 0
        if counts.any():
            out[i] = int(counts.argmax())  # ties -> lowest label index
    return out


def correct_with_proposals(label_map: np.ndarray, proposals: Proposals,
                           min_score: float = 0.5) -> np.ndarray:
    """A new label map where each kept proposal carries its pixels' majority label."""
    label_map = np.asarray(label_map)
    if label_map.ndim != 2 or label_map.dtype != np.uint8:
        raise InputError(f"label map must be H x W uint8, got {label_map.shape} "
                         f"{label_map.dtype}")
    if tuple(proposals.image_hw) != label_map.shape:
        raise InputError(f"proposals describe an image of {proposals.image_hw} but the label "
                         f"map is {label_map.shape}; run the proposer on the same image")
    keep = np.nonzero(proposals.scores >= min_score)[0]
    if len(keep) == 0:
        return label_map.copy()
    masks = masks_at(proposals.select(keep), label_map.shape)
    votes = majority_labels(label_map, masks)
    areas = masks.reshape(len(masks), -1).sum(1)
    out = label_map.copy()
    for i in np.argsort(-areas, kind="stable"):
        if votes[i] >= 0:
            out[masks[i]] = votes[i]
    return out
