"""Bank builder: label maps + backbone features -> labelled prototype vectors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import cv2
import numpy as np

from ..config import BankConfig
from ..errors import InputError
from ..smfa import center_image, l2_normalize, smfa, soft_weights
from ..types import IGNORE, Backbone, Bank, FeatureMap
from .datasets import Dataset, Sample, check_label_map
from .purify import purify


@dataclass
class BuildStats:
    images: int = 0
    regions: int = 0
    skipped_small: int = 0
    dropped_outliers: int = 0
    per_class: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return dict(images=self.images, regions=self.regions, skipped_small=self.skipped_small,
                    dropped_outliers=self.dropped_outliers, per_class=self.per_class)


def region_masks(label: np.ndarray, n_classes: int, cfg: BankConfig):
    """Label map -> (``[R, H, W]`` purified masks, ``[R]`` labels, skipped count).

    One region per class present, or per connected component with
    ``granularity="component"``; regions whose purified area is below
    ``min_area`` are skipped and counted.
    """
    masks, labels, skipped = [], [], 0
    for c in np.unique(label):
        if c == IGNORE or c >= n_classes:
            continue
        full = label == c
        parts = [full]
        if cfg.granularity == "component":
            n, cc, st, _ = cv2.connectedComponentsWithStats(full.astype(np.uint8), connectivity=8)
            parts = [cc == i for i in range(1, n) if st[i, cv2.CC_STAT_AREA] >= cfg.component_min_area]
            if not parts:
                parts = [full]
        for part in parts:
            m = purify(part, cfg)
            if m.sum() < cfg.min_area:
                skipped += 1
                continue
            masks.append(m)
            labels.append(int(c))
    h, w = label.shape
    if not masks:
        return np.zeros((0, h, w), bool), np.zeros(0, np.int32), skipped
    return np.stack(masks), np.asarray(labels, np.int32), skipped


def spread(idx: np.ndarray, k: int) -> np.ndarray:
    """At most ``k`` of ``idx``, evenly spaced (deterministic, covers the region)."""
    if len(idx) <= k:
        return idx
    return idx[np.linspace(0, len(idx) - 1, k).round().astype(np.int64)]


def patch_vectors(fmap: FeatureMap, masks: np.ndarray, labels: np.ndarray, cfg: BankConfig):
    """Patch-level entries: pure patches of each region, L2-normalised."""
    weights = soft_weights(masks, fmap.geometry).reshape(len(masks), -1)
    feats = fmap.features.reshape(fmap.dim, -1)
    vecs, labs, empty = [], [], 0
    for r in range(len(masks)):
        idx = spread(np.flatnonzero(weights[r] >= cfg.patch_purity), cfg.patches_per_region)
        if len(idx) == 0 and cfg.patch_fallback_purity < cfg.patch_purity:
            ok = np.flatnonzero(weights[r] >= cfg.patch_fallback_purity)
            idx = ok[np.argsort(-weights[r][ok], kind="stable")[:cfg.patches_per_region]]
        if len(idx) == 0:
            empty += 1
            continue
        vecs.append(l2_normalize(feats[:, idx].T.astype(np.float32)))
        labs.append(np.full(len(idx), labels[r], np.int32))
    if not vecs:
        return np.zeros((0, fmap.dim), np.float32), np.zeros(0, np.int32), empty
    return np.concatenate(vecs), np.concatenate(labs), empty


def image_vectors(fmap: FeatureMap, label: np.ndarray, n_classes: int, cfg: BankConfig):
    """One image's bank entries: (``[R, D]`` vectors, ``[R]`` labels, skipped count)."""
    masks, labels, skipped = region_masks(label, n_classes, cfg)
    if cfg.center_image:
        fmap = center_image(fmap)
    if len(masks) == 0:
        return np.zeros((0, fmap.dim), np.float32), labels, skipped
    if cfg.granularity == "patch":
        vecs, labs, empty = patch_vectors(fmap, masks, labels, cfg)
        return vecs, labs, skipped + empty
    vecs, wsum = smfa(masks, fmap, cfg.aggregation, cfg.eps)
    ok = wsum > 0
    return vecs[ok], labels[ok], skipped + int((~ok).sum())


def reject_outliers(vectors: np.ndarray, labels: np.ndarray, fraction: float,
                    background_index: int | None) -> np.ndarray:
    """Keep-mask dropping, per foreground class, the ``fraction`` farthest from the class mean.

    Distances are Euclidean to the mean of the class's vectors; the number
    dropped is ``floor(fraction * n)``. Background is kept whole.
    """
    keep = np.ones(len(vectors), bool)
    if fraction <= 0:
        return keep
    for c in np.unique(labels):
        if background_index is not None and c == background_index:
            continue
        idx = np.flatnonzero(labels == c)
        n_drop = int(np.floor(fraction * len(idx)))
        if n_drop == 0:
            continue
        v = vectors[idx].astype(np.float32)
        d = np.linalg.norm(v - v.mean(0), axis=1)
        keep[idx[np.argsort(d, kind="stable")[len(idx) - n_drop:]]] = False
    return keep


def fit_projection(vectors: np.ndarray, dim: int, whiten: bool = False):
    """(``[D, dim]`` principal axes, ``[D]`` mean) of the bank's own vectors.

    Centring on the bank mean removes the direction every DINOv2 patch shares
    (which dominates cosine similarity across scenes); keeping the top axes
    drops the rest of the noise and shrinks bank and search. ``whiten`` divides
    each axis by its standard deviation. Axis signs are fixed (largest entry
    positive) so a rebuild gives the same bytes.
    """
    n, D = vectors.shape
    if not 0 < dim < D or dim > n:
        raise InputError(f"bank.pca_dim={dim} must be below the feature dim {D} and at most "
                         f"the number of bank vectors {n}")
    v = vectors.astype(np.float64)
    mean = v.mean(0)
    cov = (v - mean).T @ (v - mean) / max(n - 1, 1)
    w, U = np.linalg.eigh(cov)
    order = np.argsort(w)[::-1][:dim]
    P = U[:, order]
    P *= np.where(P[np.abs(P).argmax(0), np.arange(dim)] < 0, -1.0, 1.0)[None]
    if whiten:
        P = P / np.sqrt(np.maximum(w[order], w[order[0]] * 1e-6))[None]
    return P.astype(np.float32), mean.astype(np.float32)


def project(vectors: np.ndarray, projection: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """L2-normalised rows -> their L2-normalised projection (see ``fit_projection``)."""
    return l2_normalize((vectors.astype(np.float32) - mean) @ projection)


def finish_bank(vectors: np.ndarray, labels: np.ndarray, ids, class_names, identity,
                background_index, cfg: BankConfig, config_record=None, stats=None) -> Bank:
    """Outlier rejection and the optional projection: the last steps of every bank build."""
    keep = reject_outliers(vectors, labels, cfg.outlier_fraction, background_index)
    if cfg.max_per_class:
        for c in np.unique(labels):
            idx = np.flatnonzero(keep & (labels == c))
            keep[np.setdiff1d(idx, spread(idx, cfg.max_per_class))] = False
    vectors, labels, ids = vectors[keep], labels[keep], np.asarray(ids)[keep]
    proj = mean = None
    if cfg.pca_dim:
        proj, mean = fit_projection(vectors, cfg.pca_dim, cfg.whiten)
        vectors = project(vectors, proj, mean)
    if stats is not None:
        stats.dropped_outliers = int((~keep).sum())
        counts = np.bincount(labels, minlength=len(class_names))
        stats.per_class = {n: int(c) for n, c in zip(class_names, counts)}
    return Bank(vectors=vectors.astype(cfg.dtype), labels=labels,
                class_names=list(class_names), backbone=identity, image_ids=ids,
                background_index=background_index,
                config=config_record or {"bank": cfg.__dict__.copy()},
                stats=stats.as_dict() if stats is not None else {},
                projection=proj, projection_mean=mean)


def select_shots(dataset: Dataset, shots: int) -> list[Sample]:
    """At most ``shots`` images per class: greedily take images that add a class still short."""
    need = {c: shots for c in range(len(dataset.class_names)) if c != dataset.background_index}
    chosen = []
    for s in dataset:
        present = set(np.unique(s.label()).tolist())
        if any(need.get(c, 0) > 0 for c in present):
            chosen.append(s)
            for c in present:
                if c in need:
                    need[c] -= 1
        if all(v <= 0 for v in need.values()):
            break
    return chosen


def build_bank(dataset: Dataset, backbone: Backbone, cfg: BankConfig | None = None,
               limit: int | None = None, shots: int | None = None,
               progress: bool = False, config_record: dict | None = None) -> Bank:
    """Build a bank from every (image, label map) in ``dataset``."""
    cfg = cfg or BankConfig()
    cfg.validate()
    for name, n in (("limit", limit), ("shots", shots)):
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
            raise InputError(f"{name} must be a positive integer (or None for all), got {n!r}")
    samples: Iterable[Sample] = select_shots(dataset, shots) if shots else list(dataset)
    samples = list(samples)[:limit] if limit else list(samples)
    if not samples:
        raise InputError(f"dataset {dataset.name!r} gave no images to build a bank from")
    n_classes = len(dataset.class_names)
    stats = BuildStats()
    all_v, all_l, all_ids = [], [], []
    it = samples
    if progress:
        from tqdm import tqdm
        it = tqdm(samples, desc="bank", unit="img")
    for s in it:
        image, label = s.image(), s.label()
        check_label_map(s.image_id, image.shape[:2], label, n_classes)
        fmap = backbone(image)
        fmap.check_finite(f"backbone features of {s.image_id}")
        if fmap.dim != backbone.identity.feature_dim:
            raise InputError(f"backbone returned dim {fmap.dim}, its identity says "
                             f"{backbone.identity.feature_dim}")
        v, l, skipped = image_vectors(fmap, label, n_classes, cfg)
        stats.images += 1
        stats.regions += len(l) + skipped
        stats.skipped_small += skipped
        all_v.append(v)
        all_l.append(l)
        all_ids += [s.image_id] * len(l)
    vectors = np.concatenate(all_v) if all_v else np.zeros((0, backbone.identity.feature_dim))
    labels = np.concatenate(all_l) if all_l else np.zeros(0, np.int32)
    if len(vectors) == 0:
        raise InputError(
            f"no region of {dataset.name!r} survived purification and min_area="
            f"{cfg.min_area}; lower bank.min_area or bank.erosion_iterations")
    return finish_bank(vectors, labels, all_ids, dataset.class_names, backbone.identity,
                       dataset.background_index, cfg, config_record, stats)
