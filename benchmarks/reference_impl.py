"""A deliberately straightforward version of the post-backbone stages.

Written separately from ``moduseg.runtime`` in the style of the ModuSeg
reference code, so the benchmark can check the vectorised runtime against it
on the same inputs: one ``cv2.resize(mask, (w, h), INTER_AREA)`` and one
weighted average per proposal, a Python vote per proposal with
``collections.Counter``, per-class greedy NMS with one IoU per pair of masks,
and rasterisation as a Python loop over masks. Only the paper's count vote
and the ``background``/``ignore`` unassigned policies are implemented.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

import cv2
import numpy as np

from moduseg.config import RuntimeConfig
from moduseg.errors import InputError
from moduseg.timing import StageTimer
from moduseg.types import IGNORE, Bank, FeatureMap, Proposals


@dataclass
class ReferenceResult:
    label_map: np.ndarray      # uint8, IGNORE where nothing was assigned
    kept: list[int]            # proposal indices that passed the filter
    labels: list[int]          # class per kept proposal (-1: no vote)
    confidences: list[float]
    painted: list[int]         # proposal indices painted, in painting order
    timings_ms: dict[str, float]


def _grid_mask(mask: np.ndarray, fmap: FeatureMap) -> np.ndarray:
    """One proposal -> area weights on the feature grid, the reference way."""
    geo = fmap.geometry
    h, w = geo.grid_hw
    m = mask.astype(np.float32)
    if tuple(geo.resized_hw) != tuple(geo.padded_hw):
        # the grid has zero padding: only exact when the mask is already at the
        # resized resolution, so padding it is all the geometry does
        if tuple(mask.shape) != tuple(geo.resized_hw):
            raise InputError(
                f"the reference handles padded grids only for masks at the resized size "
                f"{geo.resized_hw}, got {mask.shape}; use GridGeometry.unpadded")
        ph, pw = geo.padded_hw
        m = cv2.copyMakeBorder(m, 0, ph - m.shape[0], 0, pw - m.shape[1],
                               cv2.BORDER_CONSTANT, value=0)
    return cv2.resize(m, (w, h), interpolation=cv2.INTER_AREA)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.logical_and(a, b).sum()
    union = np.logical_or(a, b).sum()
    return float(inter) / float(union) if union > 0 else 0.0


def reference_assign(fmap: FeatureMap, proposals: Proposals, bank: Bank, index,
                     cfg: RuntimeConfig, timer: StageTimer | None = None) -> ReferenceResult:
    """The post-backbone stages, one proposal at a time."""
    if cfg.voting != "count":
        raise InputError("the reference implements only runtime.voting='count'")
    if getattr(cfg, "assignment", "pooled") != "pooled":
        raise InputError("the reference implements only runtime.assignment='pooled' (the "
                         "paper's per-proposal retrieval)")
    if cfg.unassigned not in ("background", "ignore"):
        raise InputError("the reference implements only runtime.unassigned background|ignore")
    timer = timer or StageTimer()
    H, W = proposals.image_hw
    mh, mw = proposals.mask_hw
    px_scale = (H * W) / float(mh * mw)
    bg = bank.background_index

    with timer("filter"):
        kept = []
        for i in range(len(proposals)):
            area = float(proposals.masks[i].sum()) * px_scale
            if float(proposals.scores[i]) >= cfg.min_objectness and area >= cfg.min_area:
                kept.append(i)

    with timer("pool"):
        D = fmap.dim
        feats = fmap.features.astype(np.float32)
        queries, pooled = [], []
        for i in kept:
            wgt = _grid_mask(proposals.masks[i], fmap)
            s = float(wgt.sum())
            v = (feats * wgt[None]).reshape(D, -1).sum(1) / (s + cfg.eps)
            v = v / max(float(np.linalg.norm(v)), 1e-12)
            queries.append(v.astype(np.float32))
            pooled.append(s > 0)

    with timer("search"):
        q = np.stack(queries) if queries else np.zeros((0, fmap.dim), np.float32)
        sims, ids = index.search(q, cfg.top_k)

    with timer("vote"):
        labels, confs = [], []
        for row in range(len(kept)):
            votes, sums = Counter(), defaultdict(float)
            for s, idx in zip(sims[row], ids[row]):
                if idx < 0:
                    continue
                lab = int(bank.labels[idx])
                votes[lab] += 1
                sums[lab] += float(s)
            best, best_n, best_s = -1, 0, -np.inf
            for lab, n in votes.items():
                if n > best_n or (n == best_n and sums[lab] > best_s):
                    best, best_n, best_s = lab, n, sums[lab]
            if not pooled[row]:
                best = -1
            labels.append(best)
            confs.append(best_s / best_n if best_n and best >= 0 else 0.0)

    with timer("nms"):
        groups = defaultdict(list)
        for row, lab in enumerate(labels):
            if lab >= 0 and lab != bg:
                groups[lab].append(row)
        survivors = []
        for lab, rows in groups.items():
            rows = sorted(rows, key=lambda r: -confs[r])
            keep = []
            for r in rows:
                if all(_iou(proposals.masks[kept[r]], proposals.masks[kept[k]]) <= cfg.nms_iou
                       for k in keep):
                    keep.append(r)
            survivors.extend(keep)

    with timer("raster"):
        survivors.sort(key=lambda r: (-confs[r], r))
        sem = np.full((mh, mw), -1, np.int32)
        for r in survivors:
            m = proposals.masks[kept[r]]
            sem[m & (sem == -1)] = labels[r]
        if (mh, mw) != (H, W):
            sem = cv2.resize(sem, (W, H), interpolation=cv2.INTER_NEAREST)

    with timer("fill"):
        fill = bg if (cfg.unassigned == "background" and bg is not None) else IGNORE
        sem[sem == -1] = fill

    return ReferenceResult(sem.astype(np.uint8), kept, labels, confs,
                           [kept[r] for r in survivors], timer.as_dict())


class ReferenceFlatIndex:
    """The reference's own exact inner-product FAISS index (batched search)."""

    def __init__(self, vectors: np.ndarray):
        import faiss
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        self.size = len(x)
        self.index = faiss.IndexFlatIP(x.shape[1])
        self.index.add(x)

    def search(self, queries: np.ndarray, k: int):
        k = min(k, self.size)
        if len(queries) == 0:
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
