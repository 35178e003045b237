"""Hierarchical voting over the retrieved neighbours, for all queries at once."""

from __future__ import annotations

import numpy as np


def class_tallies(sims: np.ndarray, nbr_labels: np.ndarray, n_classes: int):
    """(``[Q, C]`` neighbour counts, ``[Q, C]`` summed similarities); label -1 = no neighbour."""
    Q, K = nbr_labels.shape
    valid = nbr_labels >= 0
    flat = (np.arange(Q)[:, None] * n_classes + np.where(valid, nbr_labels, 0))[valid]
    counts = np.bincount(flat, minlength=Q * n_classes).reshape(Q, n_classes)
    sums = np.bincount(flat, weights=sims[valid].astype(np.float64),
                       minlength=Q * n_classes).reshape(Q, n_classes)
    return counts, sums


def class_scores(sims: np.ndarray, nbr_labels: np.ndarray, n_classes: int, mode: str = "count",
                 class_prior: np.ndarray | None = None, balance: float = 1.0):
    """``[Q, C]`` score of each class, neighbour counts and summed similarities.

    The winner is the argmax of the score.

    ``count``: most neighbours wins, ties go to the larger summed similarity
    (the paper). ``weighted``: summed similarity divided by the class's share
    of the bank raised to ``balance`` (1: fully balanced, 0: plain summed
    similarity), so frequent classes do not outvote rare ones by numbers.
    Classes with no neighbour score ``-inf``.
    """
    counts, sums = class_tallies(sims, nbr_labels, n_classes)
    if mode == "weighted":
        prior = np.ones(n_classes) if class_prior is None else np.maximum(class_prior, 1e-9)
        score = sums / prior[None] ** float(balance)
    else:
        # a count outweighs any sum of at most K similarities in [-1, 1]
        K = max(nbr_labels.shape[1], 1)
        score = counts * (2.0 * K + 1.0) + sums
    return np.where(counts > 0, score, -np.inf), counts, sums


def vote(sims: np.ndarray, nbr_labels: np.ndarray, n_classes: int, mode: str = "count",
         class_prior: np.ndarray | None = None, balance: float = 1.0):
    """Winning class and confidence per query (the scores of ``class_scores``).

    Confidence is the mean similarity of the winner's neighbours.
    Queries with no valid neighbour get label -1 and confidence 0.
    """
    score, counts, sums = class_scores(sims, nbr_labels, n_classes, mode, class_prior, balance)
    winner = score.argmax(1)
    rows = np.arange(len(winner))
    n_win = counts[rows, winner]
    conf = np.where(n_win > 0, sums[rows, winner] / np.maximum(n_win, 1), 0.0)
    winner = np.where(n_win > 0, winner, -1)
    return winner.astype(np.int32), conf.astype(np.float32)
