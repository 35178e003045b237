"""Frame prototypes: the frame's own class means correct its retrieval labels.

Across sequences (another camera, time of day, weather) a frame's patches sit
slightly off the bank as a whole, so retrieval mislabels the patches nearest
a class boundary in feature space. The frame's own patches of a class are
closer to each other than to the bank: each patch's retrieval scores, as a
distribution over classes, are mixed with a softmax of its similarity to the
mean feature of every class the retrieval gave to some patch of the frame
(a transductive step; no training, nothing stored). Gain and cost: the changelog,
"Quality".
"""

from __future__ import annotations

import numpy as np


def score_distribution(scores: np.ndarray) -> np.ndarray:
    """``[Q, C]`` class scores (``-inf`` = no neighbour) -> rows summing to 1 (all-zero
    rows for queries with no neighbour). Negative scores count as 0."""
    s = np.where(np.isfinite(scores), np.maximum(scores, 0.0), 0.0)
    total = s.sum(1, keepdims=True)
    return np.where(total > 0, s / np.maximum(total, 1e-12), 0.0)


def frame_prototype_scores(scores: np.ndarray, features: np.ndarray, weight: float,
                           temperature: float) -> np.ndarray:
    """Mix retrieval scores with similarity to the frame's own class means.

    ``scores``: ``[Q, C]`` retrieval scores of every patch of one frame (from
    ``vote.class_scores``); ``features``: ``[Q, d]`` the same patches as
    searched (L2-normalised, in the bank's projected space). Returns ``[Q, C]``
    = ``(1 - weight) * distribution(scores) + weight * softmax(cos(f, mean_c) /
    temperature)`` over the classes that won at least one patch; other classes
    get only their retrieval share. Queries with no neighbour stay all ``-inf``.
    """
    if weight <= 0 or len(scores) == 0:
        return scores
    dist = score_distribution(scores)
    found = dist.sum(1) > 0
    winner = np.where(found, dist.argmax(1), -1)
    classes = np.unique(winner[winner >= 0])
    if len(classes) == 0:
        return scores
    # float64: the result must not depend on the BLAS's summation order (the served
    # models and the in-process pipeline run in different environments and must agree)
    f = features.astype(np.float64)
    means = np.stack([f[winner == c].mean(0) for c in classes])
    means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
    sims = f @ means.T                                                # [Q, present]
    e = np.exp((sims - sims.max(1, keepdims=True)) / float(temperature))
    e /= e.sum(1, keepdims=True)
    out = (1.0 - weight) * dist
    out[:, classes] += weight * e
    return np.where(found[:, None], out, -np.inf)
