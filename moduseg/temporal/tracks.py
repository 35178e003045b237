"""Tracks: a segment keeps its ``track_id`` while its mask keeps overlapping.

At a keyframe the previous keyframe's masks, warped to it by the flow, are
matched to the new masks by IoU (greedy, best first); a matched segment
takes the track's id, an unmatched one starts a track. Each track carries
class scores (an exponential moving average of its segments' votes), and
its class is their argmax.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Track:
    id: int
    scores: np.ndarray            # [C] float32
    mask: np.ndarray              # bool, the mask at the last keyframe (mask resolution)
    first_frame: int
    frames: int = 1

    @property
    def label(self) -> int:
        return int(self.scores.argmax()) if self.scores.max() > 0 else -1


@dataclass
class TrackSet:
    tracks: dict = field(default_factory=dict)       # id -> Track
    next_id: int = 0

    def reset(self) -> None:
        """A cut: every track ends (ids keep counting, so an id is never reused)."""
        self.tracks = {}


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of masks ``[A, h, w]`` x ``[B, h, w]`` (bool)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float32)
    fa = a.reshape(len(a), -1).astype(np.float32)
    fb = b.reshape(len(b), -1).astype(np.float32)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0).astype(np.float32)


def greedy_match(iou: np.ndarray, min_iou: float) -> list[int]:
    """For each column (new mask), the row (track) it continues, or -1."""
    out = [-1] * iou.shape[1]
    if iou.size == 0:
        return out
    order = np.argsort(-iou, axis=None, kind="stable")
    used_r, used_c = set(), set()
    for flat in order:
        r, c = divmod(int(flat), iou.shape[1])
        if iou[r, c] < min_iou:
            break
        if r in used_r or c in used_c:
            continue
        used_r.add(r)
        used_c.add(c)
        out[c] = r
    return out


def update(tracks: TrackSet, warped_masks: dict, new_masks: np.ndarray, votes: list[int],
           weights: list[float], n_classes: int, frame: int, decay: float,
           min_iou: float = 0.5) -> list[int]:
    """Match the new keyframe's masks to the tracks and fold in their votes.

    ``warped_masks``: track id -> that track's mask warped to this frame;
    ``votes``: each new segment's class (-1 = none), ``weights`` its confidence.
    Returns the track id of each new segment; tracks left unmatched end.
    """
    ids = list(warped_masks)
    prev = np.stack([warped_masks[i] for i in ids]) if ids else \
        np.zeros((0, *new_masks.shape[1:]), bool)
    match = greedy_match(mask_iou(prev, new_masks), min_iou)
    alive, out = {}, []
    for k, r in enumerate(match):
        vote = np.zeros(n_classes, np.float32)
        if 0 <= votes[k] < n_classes:
            vote[votes[k]] = max(float(weights[k]), 1e-3)
        if r >= 0:
            t = tracks.tracks[ids[r]]
            t.scores = t.scores * decay + vote * (1.0 - decay)
            t.mask, t.frames = new_masks[k], t.frames + 1
        else:
            t = Track(tracks.next_id, vote, new_masks[k], frame)
            tracks.next_id += 1
        alive[t.id] = t
        out.append(t.id)
    tracks.tracks = alive
    return out
