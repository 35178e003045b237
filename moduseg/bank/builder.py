"""Bank builder: label maps + backbone features -> labelled prototype vectors."""

from __future__ import annotations

from dataclasses import dataclass, field
import logging
from typing import Callable

import cv2
import numpy as np

from ..config import BankConfig
from ..errors import InputError, ModuSegError
from ..smfa import center_image, l2_normalize, smfa, soft_weights
from ..types import IGNORE, Backbone, BackboneIdentity, Bank, FeatureMap
from .augment import bank_views
from .datasets import Dataset, Sample, check_label_map
from .purify import purify

log = logging.getLogger(__name__)


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
    positive) so a rebuild gives the same bytes. A bank of fewer vectors than
    ``dim`` has at most ``n - 1`` axes with any variance: it keeps those (a
    one-image bank still builds; ``bank info`` shows the stored dimension).
    """
    n, D = vectors.shape
    if not 0 < dim < D:
        raise InputError(f"bank.pca_dim={dim} must be below the feature dim {D} (0 = off)")
    if n < 3:
        raise InputError(f"bank.pca_dim needs at least 3 bank vectors, got {n}; add images or "
                         f"use --set bank.pca_dim=0")
    if dim > n - 1:
        log.warning("bank.pca_dim=%d but the bank has only %d vectors: keeping %d axes",
                    dim, n, n - 1)
        dim = n - 1
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


def finish_vectors(vectors: np.ndarray, labels: np.ndarray, ids, class_names, identity,
                   background_index, cfg: BankConfig, config_record=None,
                   stats=None) -> Bank:
    """Outlier rejection, the per-class cap and the optional projection: the last
    steps of every bank build (``finish_bank``) and of the cached-feature studies."""
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


def select_indices(dataset: Dataset, limit: int | None = None,
                   shots: int | None = None) -> list[int]:
    """Dataset indices of the images a build uses, in build order.

    At most ``shots`` images per class (greedily, images that add a class
    still short), then the first ``limit``. Every shard and engine calls
    this, so they all agree on which images a build covers and in what order.
    """
    if shots:
        need = {c: shots for c in range(len(dataset.class_names))
                if c != dataset.background_index}
        chosen = []
        for i, s in enumerate(dataset):
            present = set(np.unique(s.label()).tolist())
            if any(need.get(c, 0) > 0 for c in present):
                chosen.append(i)
                for c in present:
                    if c in need:
                        need[c] -= 1
            if all(v <= 0 for v in need.values()):
                break
    else:
        chosen = list(range(len(dataset)))
    return chosen[:limit] if limit else chosen


def select_shots(dataset: Dataset, shots: int) -> list[Sample]:
    """At most ``shots`` images per class: greedily take images that add a class still short."""
    return [dataset.samples[i] for i in select_indices(dataset, shots=shots)]


@dataclass
class ImageEntries:
    """The per-image step's output: one image's bank entries, or why it failed."""

    image_id: str
    vectors: np.ndarray          # [R, D]
    labels: np.ndarray           # [R] int32
    regions: int = 0             # regions seen, kept or skipped
    skipped: int = 0
    error: str | None = None     # the one-line reason the image was left out


def image_entries(sample: Sample, backbone: Backbone, n_classes: int,
                  cfg: BankConfig) -> ImageEntries:
    """The per-image step: read, check, embed, pool. Bad input fails this image only.

    With ``cfg.augment_*`` each extra view of the image (``augment.bank_views``) is
    embedded and pooled too; its entries carry the image's id."""
    dim = backbone.identity.feature_dim
    vecs, labs, skipped = [], [], 0
    try:
        image, label = sample.image(), sample.label()
        check_label_map(sample.image_id, image.shape[:2], label, n_classes)
        for view in bank_views(image, label, cfg):
            where = sample.image_id + (f" ({view.tag})" if view.tag else "")
            fmap = backbone(view.image)
            fmap.check_finite(f"backbone features of {where}")
            if fmap.dim != dim:
                raise InputError(f"backbone returned dim {fmap.dim}, its identity says {dim}")
            v, l, s = image_vectors(fmap, view.label, n_classes, cfg)
            vecs.append(v)
            labs.append(np.asarray(l, np.int32))
            skipped += s
    except ModuSegError as e:
        return ImageEntries(sample.image_id, np.zeros((0, dim), np.float32),
                            np.zeros(0, np.int32), error=str(e))
    v, l = (vecs[0], labs[0]) if len(vecs) == 1 else (np.concatenate(vecs), np.concatenate(labs))
    return ImageEntries(sample.image_id, v, l, len(l) + skipped, skipped)


def finish_bank(entries: list[ImageEntries], class_names: list[str],
                background_index: int | None, identity: BackboneIdentity, cfg: BankConfig,
                config_record: dict | None = None, dataset_name: str = "dataset") -> Bank:
    """The global step: concatenate in build order, reject outliers, count, make the Bank.

    ``bank build`` and ``bank merge`` both end here, which is why a merged
    bank equals a single-process one.
    """
    ok = [e for e in entries if e.error is None]
    failed = [e for e in entries if e.error is not None]
    if not ok:
        first = f"; first error: {failed[0].image_id}: {failed[0].error}" if failed else ""
        raise InputError(f"no image of {dataset_name!r} could be used ({len(failed)} failed)"
                         f"{first}")
    stats = BuildStats(images=len(ok), regions=sum(e.regions for e in ok),
                       skipped_small=sum(e.skipped for e in ok))
    vectors = np.concatenate([e.vectors for e in ok])
    labels = np.concatenate([e.labels for e in ok])
    ids = np.asarray([e.image_id for e in ok for _ in range(len(e.labels))], dtype=str)
    if len(vectors) == 0:
        raise InputError(
            f"no region of {dataset_name!r} survived purification and min_area="
            f"{cfg.min_area}; lower bank.min_area or bank.erosion_iterations")
    bank = finish_vectors(vectors, labels, ids, class_names, identity, background_index, cfg,
                          config_record, stats)
    from ..runtime.calibrate import calibrate
    from .edit import provenance_record
    bank.provenance = {n: [provenance_record("build", dataset_name, bank, c)]
                       for c, n in enumerate(bank.class_names) if (bank.labels == c).any()}
    bank.calibration = calibrate(bank.vectors, bank.labels, bank.image_ids, bank.class_names)
    if bank.projection is not None:       # the drift reference of 'bank info'
        from .edit import axis_moments
        bank.stats["projection_fit"] = {"vectors": len(bank), "added": 0,
                                        "moments": axis_moments(bank.vectors)}
    if failed:
        bank.stats["failed"] = [{"image": e.image_id, "error": e.error} for e in failed]
    return bank


def build_bank(dataset: Dataset, backbone: Backbone, cfg: BankConfig | None = None,
               limit: int | None = None, shots: int | None = None,
               progress: bool = False, config_record: dict | None = None) -> Bank:
    """Build a bank from every (image, label map) in ``dataset`` in this process."""
    cfg = cfg or BankConfig()
    for name, n in (("limit", limit), ("shots", shots)):
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
            raise InputError(f"{name} must be a positive integer (or None for all), got {n!r}")
    order = select_indices(dataset, limit, shots)
    if not order:
        raise InputError(f"dataset {dataset.name!r} gave no images to build a bank from")
    n_classes = len(dataset.class_names)
    it = order
    if progress:
        from tqdm import tqdm
        it = tqdm(order, desc="bank", unit="img")
    entries = [image_entries(dataset.samples[i], backbone, n_classes, cfg) for i in it]
    return finish_bank(entries, dataset.class_names, dataset.background_index,
                       backbone.identity, cfg, config_record, dataset.name)


@dataclass
class BankTask:
    """Per-image bank entries and the backbone identity; item keys are dataset indices."""

    open_dataset: Callable            # () -> Dataset
    models: Callable                  # () -> Backbone
    bank_config: dict = field(default_factory=dict)

    def setup(self):
        ds, backbone = self.open_dataset(), self.models()
        cfg = BankConfig(**self.bank_config)
        n = len(ds.class_names)
        identity = backbone.identity
        return lambda key: (image_entries(ds.samples[int(key)], backbone, n, cfg), identity)
