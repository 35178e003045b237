"""Temporal consistency (TC): how much of a label map survives to the next frame.

For consecutive frames t-1, t: DIS optical flow (``PRESET_MEDIUM``, grey,
full resolution) t -> t-1 and t-1 -> t; valid pixels of t land inside t-1
and come back within 1 px (forward-backward check); TC of the pair is the
share of valid pixels where label_t equals label_{t-1} warped by the flow
(nearest). A clip's TC is the mean, median and 10th percentile over its
pairs, leaving out pairs across a shot cut.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .flow import flow_pair, fb_valid, gray, to_map, warp_nearest

METRIC_PRESET = "medium"
FB_MAX_ERR = 1.0


def pair_consistency(prev_image: np.ndarray, image: np.ndarray, prev_labels: np.ndarray,
                     labels: np.ndarray, preset: str = METRIC_PRESET) -> float | None:
    """TC of one pair of frames (None when no pixel passes the flow check)."""
    g0, g1 = gray(prev_image), gray(image)
    if g0.shape != g1.shape or labels.shape != g1.shape or prev_labels.shape != g0.shape:
        raise ValueError(f"frames {g0.shape}, {g1.shape} and label maps {prev_labels.shape}, "
                         f"{labels.shape} must have one size")
    bwd, fwd = flow_pair(g0, g1, preset)
    valid = fb_valid(bwd, fwd, FB_MAX_ERR)
    n = int(valid.sum())
    if n == 0:
        return None
    warped = warp_nearest(np.ascontiguousarray(prev_labels, np.uint8), to_map(bwd))
    return float((warped[valid] == labels[valid]).sum()) / n


def summarize_tc(values) -> dict:
    v = np.asarray([x for x in values if x is not None], np.float64)
    if not len(v):
        return {"pairs": 0, "mean": None, "median": None, "p10": None}
    return {"pairs": int(len(v)), "mean": round(float(v.mean()) * 100, 2),
            "median": round(float(np.median(v)) * 100, 2),
            "p10": round(float(np.percentile(v, 10)) * 100, 2)}


@dataclass
class ConsistencyMeter:
    """Feeds frames in order; ``cut=True`` on the first frame of a new shot leaves
    that pair out. ``summary()`` gives mean / median / p10 in percent."""

    preset: str = METRIC_PRESET
    values: list = field(default_factory=list)
    cuts_skipped: int = 0
    _prev: tuple | None = None

    def add(self, image: np.ndarray, labels: np.ndarray, cut: bool = False) -> float | None:
        tc = None
        if self._prev is not None:
            if cut:
                self.cuts_skipped += 1
            elif self._prev[0].shape == image.shape:
                tc = pair_consistency(self._prev[0], image, self._prev[1], labels, self.preset)
                self.values.append(tc)
        self._prev = (image, labels)
        return tc

    def summary(self) -> dict:
        s = summarize_tc(self.values)
        s["cut_pairs_excluded"] = self.cuts_skipped
        s["definition"] = ("DIS PRESET_MEDIUM grey flow both ways, forward-backward error <= 1 "
                           "px, label_{t-1} warped (nearest); percent of valid pixels")
        return s


def clip_consistency(images, labels, cuts=()) -> dict:
    """TC summary of a whole clip: ``images`` and ``labels`` in frame order, ``cuts`` the
    indices of frames that start a new shot."""
    meter, cuts = ConsistencyMeter(), set(cuts)
    for i, (im, lab) in enumerate(zip(images, labels)):
        meter.add(im, lab, cut=i in cuts)
    return meter.summary()
