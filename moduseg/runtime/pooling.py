"""The ``Pooler`` protocol: proposals -> SMFA queries, or patch-vote labels.

``assign`` (``pipeline.py``) calls a pooler for the two uses of the mask ->
patch area weights: SMFA pooling (``pooled`` assignment: one query vector per
kept proposal) and the patch vote (``patch_vote``: each kept proposal takes
the class holding most of its weight among the patches' retrieval labels).
``HostPooler`` is the numpy path; ``runtime.cuda.smfa_gpu.GpuSmfa`` runs both
on the device (the weights kernel, then the pooling kernel over the features
or over the one-hot patch labels). Which one is used is chosen once, by the
backend value (``moduseg.build``), never by inspecting the pooler.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from ..smfa import pool, soft_weights
from ..types import FeatureMap


@runtime_checkable
class Pooler(Protocol):
    """Both calls take all proposals' masks ``[P, Hm, Wm]`` and the kept rows."""

    backend: str

    def pool(self, masks: np.ndarray, keep: np.ndarray, row_span, fmap: FeatureMap,
             eps: float) -> tuple[np.ndarray, np.ndarray]:
        """-> (``[K, D]`` L2-normalised queries, ``[K]`` weight sums)."""

    def patch_vote(self, masks: np.ndarray, keep: np.ndarray, row_span, fmap: FeatureMap,
                   cell_labels: np.ndarray, n_classes: int):
        """-> (``[K]`` labels (-1: none), ``[K]`` confidences, ``[K]`` weight sums)."""


def vote_by_weight(weights: np.ndarray, cell_labels: np.ndarray, n_classes: int):
    """Each mask takes the class holding most of its soft weight among patch labels.

    Confidence is that class's share of the mask's weight (in [0, 1]).
    """
    valid = cell_labels >= 0
    onehot = np.zeros((len(cell_labels), n_classes), np.float32)
    onehot[np.flatnonzero(valid), cell_labels[valid]] = 1.0
    mass = weights @ onehot                              # [P, C]
    winner = mass.argmax(1).astype(np.int32)
    total = weights.sum(1)
    conf = mass[np.arange(len(mass)), winner] / np.maximum(total, 1e-12)
    winner = np.where(mass.max(1) > 0, winner, -1)
    return winner, conf.astype(np.float32)


class HostPooler:
    """numpy SMFA: the kept masks' weights are read in place (no copy of the masks)."""

    backend = "cpu"

    def weights(self, masks, keep, row_span, fmap: FeatureMap) -> np.ndarray:
        return soft_weights(masks, fmap.geometry, rows=keep, row_span=row_span)

    def pool(self, masks, keep, row_span, fmap, eps):
        return pool(self.weights(masks, keep, row_span, fmap), fmap, eps)

    def patch_vote(self, masks, keep, row_span, fmap, cell_labels, n_classes):
        # explicit cell count: a frame whose proposals were all filtered is a normal
        # frame (0 rows), and reshape(0, -1) is ambiguous
        gh, gw = fmap.geometry.grid_hw
        w = self.weights(masks, keep, row_span, fmap).reshape(len(keep), gh * gw)
        labels, conf = vote_by_weight(w, cell_labels, n_classes)
        return labels, conf, w.sum(1)


HOST = HostPooler()


def as_pooler(p) -> Pooler:
    """A ``Pooler`` from None (the host path) or a ``Pooler``."""
    if p is None:
        return HOST
    if isinstance(p, Pooler):
        return p
    raise TypeError(f"pooler must implement moduseg.runtime.pooling.Pooler, got {type(p).__name__}")
