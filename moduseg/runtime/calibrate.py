"""Calibration of ``unknown``: how close a class's own examples are to each other.

A query (a patch or a proposal) is ``unknown`` when its evidence for the class
it won is weaker than what the bank's own examples of that class give each
other. The evidence is the similarity of the query to the nearest bank vector
of its winning class. The calibration asks the same question of the bank: for
each vector of class c (up to ``MAX_QUERIES`` per class, evenly spread), its
similarity to the nearest *other* vector of class c from another image
(leave one image out; a class from one image only leaves the vector itself
out). Those scores, per class, are stored as a quantile table. The run-time
rule (``runtime/unknown.py``) mixes the tables by vector count
(``pooled_table``) and reads that one table for every class: the option
``runtime.unknown`` is the quantile ``q``, and a query whose evidence falls
below the pooled ``q``-quantile is ``unknown`` (about ``q`` of the bank's own
held-out examples would be flagged). The rank of a score in the table
(``p_value``) is the score that decides; a threshold given by hand is ``q``.

Everything here is a pure function of the vectors, labels and image ids;
each class's table depends on that class's vectors only, so ``bank add`` and
``bank drop`` recompute only the classes they touch.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

METHOD = "nearest same-class vector of another image (leave one image out)"
LEVELS = np.linspace(0.0, 1.0, 201)       # quantile levels stored per class
MAX_QUERIES = 400                         # calibration queries per class
CHUNK = 1 << 22                           # similarity entries held at once


def _spread(idx: np.ndarray, k: int) -> np.ndarray:
    if len(idx) <= k:
        return idx
    return idx[np.linspace(0, len(idx) - 1, k).round().astype(np.int64)]


def held_out_scores(vectors: np.ndarray, image_ids: np.ndarray,
                 max_queries: int = MAX_QUERIES) -> np.ndarray:
    """Leave-one-image-out nearest-neighbour similarities within one class.

    ``vectors``: ``[n, d]`` L2-normalised rows of one class; ``image_ids``:
    ``[n]`` where each came from. Returns the scores of up to ``max_queries``
    evenly spread queries (empty when the class has a single vector). When
    every vector comes from one image, only the query itself is left out.
    """
    if len(vectors) < 2:
        return np.zeros(0, np.float32)
    return np.concatenate([sims.max(1) for sims in
                           _held_out_similarities(vectors, image_ids, max_queries)]
                          ).astype(np.float32)


def _held_out_similarities(vectors: np.ndarray, image_ids: np.ndarray, max_queries: int):
    """Chunks of ``[queries, n]`` similarities of up to ``max_queries`` evenly spread
    rows to every row, ``-inf`` where a row comes from the query's own image (only the
    query itself when every row comes from one image). Needs two rows or more."""
    n = len(vectors)
    x = np.ascontiguousarray(vectors, np.float32)
    ids = np.asarray(image_ids).astype(str)
    one_image = len(np.unique(ids)) < 2
    q = _spread(np.arange(n), max_queries)
    rows = max(1, CHUNK // n)
    for s in range(0, len(q), rows):
        qi = q[s:s + rows]
        sims = x[qi] @ x.T
        if one_image:
            sims[np.arange(len(qi)), qi] = -np.inf
        else:
            sims[ids[qi][:, None] == ids[None, :]] = -np.inf
        yield sims


def quantile_table(scores: np.ndarray) -> list[float] | None:
    """Scores -> their quantiles at ``LEVELS`` (None without scores)."""
    if len(scores) == 0:
        return None
    return [round(float(v), 5) for v in np.quantile(scores.astype(np.float64), LEVELS)]


def calibrate(vectors: np.ndarray, labels: np.ndarray, image_ids: np.ndarray,
              class_names: list[str], only: list[str] | None = None,
              previous: dict | None = None, max_queries: int = MAX_QUERIES) -> dict:
    """The bank's calibration record (stored in the bank file's metadata).

    ``only``: recompute these classes, take the others from ``previous``
    (a class's table depends on its own vectors only).
    """
    labels = np.asarray(labels)
    old = (previous or {}).get("per_class", {})
    per_class = {}
    for c, name in enumerate(class_names):
        if only is not None and name not in only and name in old:
            per_class[name] = old[name]
            continue
        idx = np.flatnonzero(labels == c)
        per_class[name] = quantile_table(held_out_scores(vectors[idx], np.asarray(image_ids)[idx],
                                                      max_queries))
    return {"method": METHOD, "levels": len(LEVELS), "max_queries": max_queries,
            "per_class": per_class}


def check_calibration(cal, class_names) -> dict | None:
    """A stored calibration record, or None when it does not fit the bank's classes."""
    if not isinstance(cal, dict) or cal.get("levels") != len(LEVELS):
        return None
    per = cal.get("per_class")
    if not isinstance(per, dict) or set(per) != set(class_names):
        return None
    for t in per.values():
        if t is not None and not (isinstance(t, list) and len(t) == len(LEVELS) and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)
                for v in t)):
            return None
    return cal


def tables(cal: dict, class_names) -> np.ndarray:
    """``[C, L]`` quantile tables; classes without one (a single vector) take the
    element-wise minimum of the others' (the most lenient: a class just taught from one
    example is not rejected more readily than any other; NaN when no class has one)."""
    t = np.full((len(class_names), len(LEVELS)), np.nan)
    for c, name in enumerate(class_names):
        row = cal["per_class"].get(name)
        if row is not None:
            t[c] = row
    have = np.isfinite(t[:, 0])
    if have.any() and not have.all():
        t[~have] = t[have].min(axis=0)
    return t


def pooled_table(table: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``[L]`` quantiles of the mixture of the classes' calibration distributions.

    ``table``: ``[C, L]`` per-class quantile tables (``tables``); ``weights``: ``[C]``
    each class's share (its vector count). The mixture's CDF at ``s`` is
    ``sum_c w_c F_c(s)`` with ``F_c`` read from class c's table; its quantiles at
    ``LEVELS`` are returned. Rows without a table (NaN) get no weight; all NaN -> NaN.
    """
    w = np.where(np.isfinite(table[:, 0]), np.maximum(np.asarray(weights, np.float64), 0), 0)
    if w.sum() <= 0:
        return np.full(len(LEVELS), np.nan)
    w = w / w.sum()
    rows = table[w > 0]
    ww = w[w > 0]
    grid = np.unique(rows.ravel())
    cdf = np.zeros(len(grid))
    for r, wc in zip(rows, ww):
        cdf += wc * _cdf(r, grid)
    # first grid point at which the mixture CDF reaches each level
    idx = np.minimum(np.searchsorted(cdf, LEVELS - 1e-12, side="left"), len(grid) - 1)
    out = grid[idx].astype(np.float64)
    out[0] = grid[0]
    return out


def _cdf(row: np.ndarray, s: np.ndarray) -> np.ndarray:
    """A class's calibration CDF at ``s`` from its quantile table (a step where the
    table repeats a value)."""
    lo = np.searchsorted(row, s, side="left")
    hi = np.searchsorted(row, s, side="right")
    # within the table's range: interpolate between the levels around s
    x = np.interp(s, row, LEVELS, left=0.0, right=1.0)
    ties = hi > lo
    return np.where(ties, LEVELS[np.maximum(hi - 1, 0)], x)


def check_quantile(q: float) -> None:
    """``runtime.unknown`` is a quantile: one line otherwise (before any calibration)."""
    if not 0.0 <= q <= 1.0:
        raise InputError(f"runtime.unknown must be a quantile in [0, 1], got {q}")


def thresholds(table: np.ndarray, q: float) -> np.ndarray:
    """``[C]`` similarity below which a query of each class is unknown (``-inf``
    where the class has no table, i.e. never unknown)."""
    check_quantile(q)
    out = np.array([np.interp(q, LEVELS, row) if np.isfinite(row[0]) else -np.inf
                    for row in table])
    return out


def p_values(table: np.ndarray, winners: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Rank of each query's evidence among its class's calibration scores (0 = below
    every held-out example, 1 = above all). A query is unknown when this is below
    ``runtime.unknown``; it is the score whose ROC the benchmark reports."""
    out = np.ones(len(scores))
    for c in np.unique(winners):
        if c < 0 or c >= len(table) or not np.isfinite(table[c, 0]):
            continue
        m = winners == c
        row = table[c]
        # np.interp needs increasing x: a table of equal values is a step
        out[m] = np.interp(scores[m], row, LEVELS, left=0.0, right=1.0)
    return out


def evidence(sims: np.ndarray, nbr_labels: np.ndarray, winners: np.ndarray) -> np.ndarray:
    """Each query's similarity to its nearest retrieved neighbour of the class it won
    (its nearest neighbour of any class when none of the retrieved ones has that class)."""
    if sims.shape[1] == 0:
        return np.full(len(winners), -np.inf)
    same = nbr_labels == winners[:, None]
    s = np.where(same, sims, -np.inf).max(1)
    return np.where(np.isfinite(s), s, sims[:, 0]).astype(np.float64)


def unknown_mask(sims: np.ndarray, nbr_labels: np.ndarray, winners: np.ndarray,
                 thr: np.ndarray) -> np.ndarray:
    """Queries whose evidence for their winning class is below that class's threshold."""
    ok = winners >= 0
    s = evidence(sims, nbr_labels, winners)
    t = np.where(ok, thr[np.maximum(winners, 0)], -np.inf)
    return ok & (s < t)


# -- the segment-level score ---------------------------------------------------------------
#
# A proposal's evidence is how densely the bank surrounds it: the mean similarity of each
# of its patches (or of its pooled vector) to its ``top_k`` retrieved bank vectors, of any
# class, averaged over the proposal. The calibration asks the bank the same question with
# one image left out: for up to ``SEGMENT_QUERIES`` of its vectors (evenly spread, so
# classes weigh by their vector counts), the mean similarity to the ``top_k`` nearest
# vectors of *other* images. A proposal whose score ranks below the ``q``-quantile of
# those is unknown (``runtime/unknown.segment_rule``).

SEGMENT_METHOD = "mean similarity to the top_k nearest vectors of other images"
SEGMENT_QUERIES = 4000
# the table's levels: fine in the low tail, where the operating points are (a bank's own
# near-duplicate frames make footage it has never seen rank low)
SEGMENT_LEVELS = np.unique(np.concatenate([np.linspace(0.0, 0.05, 501),
                                           np.linspace(0.05, 1.0, 191)]))


def density(sims: np.ndarray, top_k: int | None = None) -> np.ndarray:
    """Each query's mean similarity to its (first ``top_k``) retrieved neighbours; -1
    where nothing was retrieved (missing neighbours, id -1, come as -inf or NaN)."""
    s = np.asarray(sims, np.float64)
    if top_k is not None:
        s = s[:, :top_k]
    ok = np.isfinite(s)
    n = ok.sum(1)
    tot = np.where(ok, s, 0.0).sum(1)
    return np.where(n > 0, tot / np.maximum(n, 1), -1.0)


def held_out_density(vectors: np.ndarray, image_ids: np.ndarray, top_k: int,
                     max_queries: int = SEGMENT_QUERIES) -> np.ndarray:
    """Leave-one-image-out ``density`` of up to ``max_queries`` evenly spread bank
    vectors (every class; a bank from one image leaves only the query itself out)."""
    n = len(vectors)
    if n < 2:
        return np.zeros(0, np.float64)
    k = max(1, min(int(top_k), n - 1))
    out = np.concatenate([density(-np.partition(-sims, k - 1, axis=1)[:, :k])
                          for sims in _held_out_similarities(vectors, image_ids, max_queries)])
    return out[out > -1.0]          # a query with no vector of another image: no score
