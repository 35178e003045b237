"""When the full pipeline must run again: the keyframe choice.

A frame is a keyframe when it is the first, starts a new shot (cut), moves
too much for the flow to be trusted, is no longer explained by the last
keyframe warped to it (poor fit), or the maximum interval has passed; or
the segmenter's bank was hot-swapped since the last keyframe ("bank", decided
by ``temporal.segmenter.TemporalSegmenter``).
Every signal is measured on the grey frames the flow already uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..config import TemporalOptions

REASONS = ("first", "cut", "motion", "fit", "interval", "bank")


# The thresholds are options of the configuration's ``temporal`` section, declared once
# in ``moduseg.config.TemporalOptions``: the functions below take it as ``policy``.


@dataclass(frozen=True)
class FrameChange:
    """What changed between two consecutive frames (and since the keyframe)."""

    residual: float          # photometric error of t-1 warped to t
    histogram: float         # grey histogram distance t-1 vs t
    valid: float             # share passing the forward-backward check
    motion: float            # mean flow length / width
    fit_residual: float      # photometric error of the keyframe warped to t

    def to_json(self) -> dict:
        return {k: round(float(v), 4) for k, v in self.__dict__.items()}


def histogram_distance(g0: np.ndarray, g1: np.ndarray) -> float:
    h0 = cv2.calcHist([g0], [0], None, [32], [0, 256])
    h1 = cv2.calcHist([g1], [0], None, [32], [0, 256])
    return float(cv2.compareHist(h0, h1, cv2.HISTCMP_BHATTACHARYYA))


def photometric_residual(target: np.ndarray, source: np.ndarray, m: np.ndarray) -> float:
    """Mean |target - source sampled at map m| (grey levels)."""
    w = cv2.remap(source, m, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return float(cv2.absdiff(w, target).mean())


def is_cut(change: FrameChange, policy: TemporalOptions) -> bool:
    return (change.residual > policy.cut_residual or change.histogram > policy.cut_histogram
            or change.valid < policy.cut_min_valid)


def keyframe_reason(change: FrameChange | None, since_key: int,
                    policy: TemporalOptions) -> str | None:
    """Why this frame must be a keyframe (one of ``REASONS``), or None to propagate.

    ``change`` is None for the first frame (or after a reset); ``since_key`` counts
    the frames since the last keyframe, this one included.
    """
    if change is None:
        return "first"
    if is_cut(change, policy):
        return "cut"
    if change.motion > policy.max_motion:
        return "motion"
    if change.fit_residual > policy.max_fit_residual:
        return "fit"
    if since_key >= policy.max_interval:
        return "interval"
    return None
