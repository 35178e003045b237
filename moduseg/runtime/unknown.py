"""``runtime.unknown``: the bank's calibrated rejection, applied to retrieved labels.

Two rules, one option (``runtime.unknown`` = a quantile ``q``; 0 = off):

* ``segment_rule`` (every assignment that has proposals): a proposal whose mean
  similarity to its ``top_k`` retrieved bank vectors (``calibrate.density``,
  averaged over the grid cells wholly inside it) ranks below the ``q``-quantile of
  the same score for the bank's own vectors with their image left out is unknown;
* ``unknown_rule`` (``runtime.assignment='patch'``: no proposals): class ``c`` wins
  a patch but the patch's similarity to its nearest retrieved vector of ``c`` is
  below the ``q``-quantile of the bank's own leave-one-image-out scores, pooled
  over its classes (``pooled_tables``, ``runtime/calibrate.py``).

Inside the pipeline unknown is one more class index (``n_classes``), so class NMS,
painting and the nearest fill treat it like any class; the label map shows it as
``UNKNOWN`` (254).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from . import calibrate as cal
from ..types import UNKNOWN, Bank

log = logging.getLogger(__name__)


@dataclass
class UnknownRule:
    """Per-class thresholds of one bank at one quantile."""

    q: float
    table: np.ndarray            # [C, L] quantile tables
    thresholds: np.ndarray       # [C]
    index: int                   # the class index unknown takes inside the pipeline

    def apply(self, sims: np.ndarray, nbr: np.ndarray, winners: np.ndarray) -> np.ndarray:
        """Winners with the unknown ones replaced by ``index``."""
        m = cal.unknown_mask(sims, nbr, winners, self.thresholds)
        return np.where(m, self.index, winners).astype(np.int32)

    def p_values(self, sims: np.ndarray, nbr: np.ndarray, winners: np.ndarray) -> np.ndarray:
        return cal.p_values(self.table, winners, cal.evidence(sims, nbr, winners))


def bank_calibration(bank: Bank) -> dict:
    """The bank's stored calibration, or one computed now (and kept on the bank object)."""
    if bank.calibration is None:
        t0 = time.perf_counter()
        bank.calibration = cal.calibrate(bank.vectors, bank.labels, bank.image_ids,
                                         bank.class_names)
        log.info("calibrated unknown on the bank's %d vectors in %.1f s (bank files written "
                 "by 'bank build' or 'bank add' store it)", len(bank),
                 time.perf_counter() - t0)
    return bank.calibration


def pooled_tables(bank: Bank) -> np.ndarray:
    """``[C, L]``: every class reads the bank's pooled calibration table (the mixture of
    the classes' tables weighted by their vector counts, ``calibrate.pooled_table``).

    Per-class tables normalise each class's evidence by its own spread, which ranks
    badly: a query of a class the bank lacks is given to some known class, and a class
    whose own examples are spread out (building, tree) makes a far query look typical.
    One threshold on the similarity itself ranked a dropped class's patches better on
    CamVid (docs/results.md, "Classes")."""
    table = cal.tables(bank_calibration(bank), bank.class_names)
    counts = np.bincount(bank.labels, minlength=len(bank.class_names))
    pooled = cal.pooled_table(table, counts)
    if not np.isfinite(pooled[0]):
        return table
    return np.tile(pooled, (len(bank.class_names), 1))


def unknown_rule(bank: Bank, q: float) -> UnknownRule | None:
    """The rule for ``bank`` at quantile ``q`` (None when ``q`` is 0: off). Kept on the
    bank object, so a frame loop computes it once."""
    if not q:
        return None
    cache = bank.__dict__.setdefault("_unknown_rules", {})
    rule = cache.get(q)
    if rule is None:
        table = pooled_tables(bank)
        rule = UnknownRule(q, table, cal.thresholds(table, q), len(bank.class_names))
        cache[q] = rule
    return rule


def to_label_values(labels: np.ndarray, rule: UnknownRule | None) -> np.ndarray:
    """Pipeline indices -> label-map values (``rule.index`` -> ``UNKNOWN``)."""
    if rule is None:
        return labels
    return np.where(labels == rule.index, UNKNOWN, labels)


@dataclass
class SegmentRule:
    """``runtime.unknown`` for proposals (every assignment but ``patch``): a proposal
    whose ``calibrate.density`` score ranks below the ``q``-quantile of the bank's own
    leave-one-image-out scores is unknown.

    The score is class-agnostic: a region the bank has no class for sits in an empty
    part of the feature space, far from *every* bank vector; averaged over a proposal's
    patches it is steadier than any patch's own (docs/results.md, "Classes")."""

    q: float
    top_k: int
    table: np.ndarray            # [L] quantiles of the bank's held-out scores
    threshold: float
    index: int                   # the class index unknown takes inside the pipeline

    def p_values(self, scores: np.ndarray) -> np.ndarray:
        """Rank of each score in the bank's calibration (0: below all its examples)."""
        if not np.isfinite(self.table[0]):
            return np.ones(len(scores))
        return np.interp(np.asarray(scores, np.float64), self.table, cal.SEGMENT_LEVELS,
                         left=0.0, right=1.0)

    def apply(self, labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Labels with the labelled proposals whose score is below the threshold
        replaced by ``index``."""
        # (a hair below: a bank of identical vectors has a threshold its own copies meet)
        m = (labels >= 0) & (np.asarray(scores, np.float64) < self.threshold - 1e-5)
        return np.where(m, self.index, labels).astype(np.int32)


def segment_rule(bank: Bank, q: float, top_k: int) -> SegmentRule | None:
    """The proposal rule for ``bank`` at quantile ``q`` with ``top_k`` neighbours (None
    when ``q`` is 0). Calibrated on first use (4,000 queries: seconds for a bank of
    25,000 vectors) and kept on the bank object."""
    if not q:
        return None
    cal.check_quantile(q)
    cache = bank.__dict__.setdefault("_segment_rules", {})
    rule = cache.get((q, top_k))
    if rule is None:
        tables = bank.__dict__.setdefault("_density_tables", {})
        table = tables.get(top_k)
        if table is None:
            t0 = time.perf_counter()
            scores = cal.held_out_density(bank.vectors, bank.image_ids, top_k)
            table = (np.quantile(scores, cal.SEGMENT_LEVELS) if len(scores)
                     else np.full(len(cal.SEGMENT_LEVELS), np.nan))
            tables[top_k] = table
            log.info("calibrated segment unknown on %d of the bank's %d vectors in %.1f s",
                     len(scores), len(bank), time.perf_counter() - t0)
        thr = (float(np.interp(q, cal.SEGMENT_LEVELS, table)) if np.isfinite(table[0])
               else -np.inf)
        rule = SegmentRule(q, int(top_k), table, thr, len(bank.class_names))
        cache[(q, top_k)] = rule
    return rule
