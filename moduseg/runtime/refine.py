"""Edge-aware refinement of a label map with the image as guide.

Proposals from a fast proposer are coarse (SAM logits on a 4-pixel grid), so
class boundaries sit up to a few pixels off the image's edges. A guided
filter (He et al.: a local linear model of each class indicator in the grey
image, fitted in ``(2r+1)^2`` windows) smooths every class indicator while
keeping its edges on the image's edges; each pixel then takes the class
with the highest filtered score. Box filters make it O(pixels) per class
(cost and effect on CamVid: docs/results.md and the changelog).
"""

from __future__ import annotations

import cv2
import numpy as np

from ..errors import InputError
from ..types import IGNORE


def guided_label_refine(label_map: np.ndarray, image: np.ndarray, radius: int = 8,
                        eps: float = 1e-3) -> np.ndarray:
    """``[H, W]`` uint8 labels + ``[H, W, 3]`` RGB guide -> refined labels.

    Pixels labelled ``IGNORE`` stay ``IGNORE`` and do not vote.
    """
    if image.shape[:2] != label_map.shape:
        raise InputError(f"guide image {image.shape[:2]} and label map {label_map.shape} "
                         f"differ in size; pass the frame the labels were computed for")
    if radius < 1 or eps <= 0:
        raise InputError(f"refine radius must be >= 1 and eps > 0, got {radius}, {eps}")
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32) * np.float32(1 / 255)
    k = (2 * int(radius) + 1, 2 * int(radius) + 1)

    def box(x):
        return cv2.boxFilter(x, -1, k, borderType=cv2.BORDER_REFLECT)

    mean_i = box(grey)
    var_i = box(grey * grey) - mean_i * mean_i + np.float32(eps)
    classes = [int(c) for c in np.unique(label_map) if c != IGNORE]
    if len(classes) < 2:
        return label_map
    best = np.full(label_map.shape, -np.inf, np.float32)
    out = label_map.copy()
    for c in classes:
        p = (label_map == c).astype(np.float32)
        mean_p = box(p)
        a = (box(grey * p) - mean_i * mean_p) / var_i
        b = mean_p - a * mean_i
        q = box(a) * grey + box(b)
        win = q > best
        best[win] = q[win]
        out[win] = c
    out[label_map == IGNORE] = IGNORE
    return out
