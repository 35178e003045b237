"""The online pipeline: proposals + features -> label map.

``assign`` is the pure post-backbone part (filter, pool, search, vote, NMS,
rasterise, fill) and works on any ``FeatureMap`` and ``Proposals``, so
diagnostics can feed ground-truth regions as proposals. ``Segmenter`` adds
the models at the edges and times every stage.
"""

from __future__ import annotations

import logging
import time

import cv2
import numpy as np

from ..shipped import rebuild_hint
from ..config import ModuSegConfig, RuntimeConfig
from ..errors import InputError
from ..io import check_image
from ..smfa import center_image, l2_normalize
from ..timing import StageTimer
from ..types import IGNORE, UNKNOWN_NAME, Backbone, Bank, FeatureMap, Proposals, \
    Proposer, Segment, SegmentationResult, check_identity
from .index import SearchIndex, bank_index, bank_projection, project_queries
from .masks import PackedMasks, class_nms, full_resolution_areas, rasterize
from .pooling import HOST, Pooler, as_pooler, vote_by_weight
from .refine import guided_label_refine
from .calibrate import density
from .unknown import segment_rule, to_label_values, unknown_rule
from .prototypes import frame_prototype_scores
from .vote import class_scores, vote

log = logging.getLogger(__name__)

cpu_pooler = HOST                 # the host ``Pooler`` (the name earlier code imports)
patch_vote = vote_by_weight       # likewise


def unknown_quantile(cfg: RuntimeConfig) -> float:
    """``runtime.unknown`` (0 = off)."""
    return float(getattr(cfg, "unknown", 0.0) or 0.0)


def class_prior(bank: Bank, few_images: float = 0.0) -> np.ndarray:
    """Each class's share of the bank's vectors (the weighted vote divides by it).

    ``few_images`` (``runtime.few_image_balance``): a class whose vectors come from
    fewer than ``few_images`` x the median class's image count has its share scaled
    by ``images / (few_images x median)``. Vectors from a handful of frames cover few
    appearances of their class, so held-out patches find them among their neighbours
    less often than a class's vector count suggests (``bank add`` samples a few frames
    densely to reach a typical count, docs/results.md "Classes")."""
    counts = np.bincount(bank.labels, minlength=len(bank.class_names)).astype(np.float64)
    prior = counts / max(counts.sum(), 1.0)
    if few_images > 0:
        images = class_image_counts(bank)
        have = images > 0
        if have.any():
            ref = few_images * float(np.median(images[have]))
            prior = prior * np.minimum(1.0, images / max(ref, 1e-12))
    return prior


def class_image_counts(bank: Bank) -> np.ndarray:
    """``[C]`` how many distinct images each class's vectors come from."""
    n = len(bank.class_names)
    if len(bank.labels) == 0:
        return np.zeros(n, np.int64)
    _, img = np.unique(np.asarray(bank.image_ids), return_inverse=True)
    pairs = np.unique(np.asarray(bank.labels, np.int64) * (int(img.max()) + 1) + img.ravel())
    return np.bincount(pairs // (int(img.max()) + 1), minlength=n).astype(np.int64)


def pixel_cells(geometry, out_hw) -> tuple[np.ndarray, np.ndarray]:
    """Grid cell (row, col) under the centre of each pixel of an ``out_hw`` image."""
    (rh, rw), (h, w), p = geometry.resized_hw, geometry.grid_hw, geometry.patch
    ho, wo = out_hw
    iy = np.minimum(((np.arange(ho) + 0.5) * (rh / ho) / p).astype(np.int64), h - 1)
    ix = np.minimum(((np.arange(wo) + 0.5) * (rw / wo) / p).astype(np.int64), w - 1)
    return iy, ix


def label_patches(fmap: FeatureMap, cells: np.ndarray, bank: Bank, index: SearchIndex,
                  cfg: RuntimeConfig, prior=None, whole_frame: bool = False,
                  evidence_out: list | None = None) -> np.ndarray:
    """Retrieval labels for the given flat grid cells (background votes kept).

    With ``runtime.unknown`` and ``runtime.assignment='patch'`` a cell whose evidence is
    too far from its class is labelled ``len(bank.class_names)`` (unknown,
    ``runtime/unknown.py``) and ``evidence_out`` receives the cells' p-values; with the
    other assignments unknown is decided per proposal (``unknown.segment_rule``) and
    ``evidence_out`` receives each cell's ``calibrate.density`` score, which the
    proposals average.

    ``whole_frame`` (``cells`` are every cell of the frame): with
    ``runtime.frame_prototypes`` the frame's own class means correct the labels
    (``prototypes.frame_prototype_scores``).
    """
    f = l2_normalize(fmap.features.reshape(fmap.dim, -1)[:, cells].T.astype(np.float32))
    # projected once, here: the index (which leaves projected queries as they are) and
    # the prototypes share it
    f = project_queries(f, bank_projection(bank))
    sims, ids = index.search(f, cfg.top_k)
    nbr = np.where(ids >= 0, bank.labels[np.maximum(ids, 0)], -1)
    if not (whole_frame and cfg.frame_prototypes > 0):
        lab, _ = vote(sims, nbr, len(bank.class_names), cfg.voting, prior, cfg.vote_balance)
    else:
        scores, _, _ = class_scores(sims, nbr, len(bank.class_names), cfg.voting, prior,
                                    cfg.vote_balance)
        scores = frame_prototype_scores(scores, f, cfg.frame_prototypes,
                                        cfg.prototype_temperature)
        lab = np.where(np.isfinite(scores).any(1), scores.argmax(1), -1).astype(np.int32)
    q = unknown_quantile(cfg)
    if q and cfg.assignment != "patch":      # decided per proposal, from these scores
        if evidence_out is not None:
            evidence_out.append(density(sims, cfg.top_k))
        return lab
    rule = unknown_rule(bank, q)
    if rule is not None:       # unknown cells take the index after the bank's classes
        if evidence_out is not None:
            evidence_out.append(rule.p_values(sims, nbr, lab))
        lab = rule.apply(sims, nbr, lab)
    return lab


def fill_unassigned(label_map: np.ndarray, fmap: FeatureMap, bank: Bank, index: SearchIndex,
                    cfg: RuntimeConfig, prior=None,
                    cell_labels: np.ndarray | None = None) -> np.ndarray:
    """Apply the unassigned-pixel policy to pixels still at -1.

    ``cell_labels`` (every grid cell's retrieval label, when already known)
    spares the ``nearest`` policy its own search.
    """
    un = label_map == -1
    if not un.any():
        return label_map
    if cfg.unassigned == "ignore":
        label_map[un] = IGNORE
    elif cfg.unassigned == "background":
        label_map[un] = IGNORE if bank.background_index is None else bank.background_index
    else:  # nearest: search only the patches under unassigned pixels
        iy, ix = pixel_cells(fmap.geometry, label_map.shape)
        w = fmap.geometry.grid_hw[1]
        cell_of = iy[:, None] * w + ix[None, :]
        cells = np.unique(cell_of[un])
        lut = np.full(fmap.geometry.grid_hw[0] * w, IGNORE, np.int32)
        labs = (cell_labels[cells] if cell_labels is not None
                else label_patches(fmap, cells, bank, index, cfg, prior))
        lut[cells] = np.where(labs >= 0, labs, IGNORE)
        label_map[un] = lut[cell_of[un]]
    return label_map


# a pixel only a left-out segment covers (runtime.min_confidence / runtime.classes):
# not filled by the unassigned policy, IGNORE in the label map
ABSTAIN = -2


def class_filter(classes, class_names) -> np.ndarray | None:
    """``runtime.classes`` as a ``[C]`` bool mask over the bank's classes (``None``: all).

    An unknown name is an ``InputError`` listing the bank's classes."""
    if not classes:
        return None
    index = {str(n): i for i, n in enumerate(class_names)}
    lower = {str(n).lower(): i for i, n in enumerate(class_names)}
    shown = np.zeros(len(class_names), bool)
    for name in classes:
        i = index.get(name, lower.get(str(name).lower()))
        if i is None:
            import difflib
            close = difflib.get_close_matches(str(name), list(index), n=1)
            raise InputError(
                f"runtime.classes: the bank has no class {name!r}"
                + (f" (did you mean {close[0]!r}?)" if close else "")
                + f"; its classes: {', '.join(map(str, class_names))}")
        shown[i] = True
    return shown


def only_classes(label_map: np.ndarray, shown: np.ndarray) -> np.ndarray:
    """Pixels of classes outside ``shown`` set to ``IGNORE``."""
    lut = np.full(max(256, len(shown)), IGNORE, np.int64)
    lut[:len(shown)] = np.where(shown, np.arange(len(shown)), IGNORE)
    lm = np.asarray(label_map)
    valid = (lm >= 0) & (lm < len(lut))
    return np.where(valid, lut[np.clip(lm, 0, len(lut) - 1)], lm).astype(lm.dtype)


def all_cell_labels(fmap: FeatureMap, bank: Bank, index: SearchIndex, cfg: RuntimeConfig,
                    prior=None, evidence_out: list | None = None) -> np.ndarray:
    """Retrieval label of every grid cell (``patch_vote``); needs no proposals."""
    if bank.centers_images:
        fmap = center_image(fmap)
    cells = np.arange(fmap.geometry.grid_hw[0] * fmap.geometry.grid_hw[1])
    return label_patches(fmap, cells, bank, index, cfg, prior, whole_frame=True,
                         evidence_out=evidence_out)


def assign(fmap: FeatureMap, proposals: Proposals, bank: Bank, index: SearchIndex,
           cfg: RuntimeConfig, timer: StageTimer | None = None,
           pooler: Pooler | None = None, prior: np.ndarray | None = None,
           cell_labels: np.ndarray | None = None,
           image: np.ndarray | None = None, cell_scores: np.ndarray | None = None,
           scores_out: list | None = None) -> SegmentationResult:
    """Post-backbone stages of ModuSeg for one image.

    ``cell_labels`` (``patch_vote``: from ``all_cell_labels``, e.g. computed
    while the proposer was still running) spares the search; with ``runtime.unknown``
    it needs the cells' scores too (``cell_scores``, that call's ``evidence_out``),
    else the search runs again. ``image`` (the frame) is the guide of
    ``runtime.refine_radius``; without it the refinement is skipped (retrieval
    diagnostics on given regions). ``scores_out`` (unknown on) receives the kept
    proposals' unknown scores, in the order of ``proposal`` indices kept.
    """
    timer = timer or StageTimer()
    pooler = as_pooler(pooler)
    if cfg.assignment == "patch":
        return assign_patches(fmap, bank, index, cfg, timer, prior, cell_labels, image)
    _check_pair(fmap, proposals, bank)
    if bank.centers_images:
        fmap = center_image(fmap)
    if prior is None and cfg.voting == "weighted":
        prior = class_prior(bank, cfg.few_image_balance)
    rule = segment_rule(bank, unknown_quantile(cfg), cfg.top_k)
    with timer("filter"):
        keep, scores, packed = _kept_proposals(proposals, cfg)
    if cfg.assignment != "patch_vote":
        cell_labels = None
    labels, conf, cell_labels = _label_proposals(fmap, proposals, keep, packed, bank, index,
                                                 cfg, timer, pooler, prior, cell_labels, rule,
                                                 cell_scores, scores_out)
    if scores_out is not None and rule is not None:
        scores_out.append(keep)
    shown = class_filter(cfg.classes, bank.class_names)
    with timer("nms"):
        order, unsure, hidden = _paint_order(packed, labels, conf, bank, cfg, shown)
    with timer("raster"):
        owner, label_map = _paint(packed, proposals, keep, labels, order, unsure | hidden)
    with timer("fill"):
        label_map = fill_unassigned(label_map, fmap, bank, index, cfg, prior, cell_labels)
        label_map[label_map == ABSTAIN] = IGNORE
        label_map = to_label_values(label_map, rule)
        if shown is not None:
            label_map = only_classes(label_map, shown)
    if cfg.refine_radius > 0 and image is not None:
        with timer("refine"):
            label_map = guided_label_refine(label_map.astype(np.uint8), image,
                                            cfg.refine_radius, cfg.refine_eps)
    segments, owners = _segments(proposals, keep, scores, labels, conf, owner, unsure, hidden,
                                 bank, rule)
    return SegmentationResult(label_map=label_map.astype(np.uint8), segments=segments,
                              timings_ms=timer.as_dict(), class_names=list(bank.class_names),
                              proposals=proposals, owners=owners)


def _check_pair(fmap: FeatureMap, proposals, bank: Bank) -> None:
    """Proposals and features of the same image, features of the bank's backbone."""
    if not isinstance(proposals, Proposals):
        raise InputError(f"proposals must be a moduseg.Proposals, got {type(proposals).__name__}")
    if tuple(proposals.image_hw) != tuple(fmap.image_hw):
        raise InputError(
            f"proposals describe a {proposals.image_hw} image but the features come from a "
            f"{fmap.image_hw} image; run the proposer and the backbone on the same image")
    if fmap.dim != bank.backbone.feature_dim:
        raise InputError(
            f"feature dim {fmap.dim} does not match the bank's {bank.backbone.feature_dim}; the "
            f"bank was built with {bank.backbone.name}")


def _kept_proposals(proposals: Proposals, cfg: RuntimeConfig):
    """(indices, objectness, packed masks) of the proposals objectness and area keep."""
    packed = PackedMasks.pack(proposals.masks)
    (H, W), (mh, mw) = proposals.image_hw, proposals.mask_hw
    all_areas = packed.areas * (H * W / float(mh * mw))
    keep = np.flatnonzero((proposals.scores >= cfg.min_objectness)
                          & (all_areas >= cfg.min_area))
    return keep, proposals.scores[keep], packed.take(keep)


def _label_proposals(fmap, proposals, keep, packed, bank, index, cfg, timer, pooler, prior,
                     cell_labels, rule, cell_scores=None, scores_out=None):
    """(label, confidence) per kept proposal (-1: no evidence), by the patches' vote
    (``patch_vote``) or by its pooled vector's neighbours; and the cell labels used.
    With ``rule`` (``unknown.SegmentRule``) a proposal whose score is too low is
    unknown; ``scores_out`` receives the kept proposals' scores."""
    n_classes = len(bank.class_names)
    if cfg.assignment == "patch_vote":
        if cell_labels is None or (rule is not None and cell_scores is None):
            found: list | None = [] if rule is not None else None
            with timer("search"):
                cell_labels = all_cell_labels(fmap, bank, index, cfg, prior,
                                              evidence_out=found)
            cell_scores = found[0] if found else None
        with timer("pool"):      # the weights and the vote by weight, in one pooler call
            labels, conf, wsum = pooler.patch_vote(proposals.masks, keep, packed.row_span(),
                                                   fmap, cell_labels, n_classes)
            labels = np.where(wsum > 0, labels, -1)
        if rule is not None:
            with timer("unknown"):
                scores = segment_scores(proposals.masks, keep, fmap.geometry, cell_scores)
                if scores_out is not None:
                    scores_out.append(scores)
                labels = rule.apply(labels, scores)
        return labels, conf, cell_labels
    with timer("pool"):
        queries, wsum = pooler.pool(proposals.masks, keep, packed.row_span(), fmap, cfg.eps)
        pooled = wsum > 0
    with timer("search"):
        sims, ids = index.search(queries, cfg.top_k)
    with timer("vote"):
        nbr = np.where(ids >= 0, bank.labels[np.maximum(ids, 0)], -1)
        labels, conf = vote(sims, nbr, n_classes, cfg.voting, prior, cfg.vote_balance)
        if rule is not None:
            scores = density(sims, cfg.top_k)
            if scores_out is not None:
                scores_out.append(scores)
            labels = rule.apply(labels, scores)
        return np.where(pooled, labels, -1), conf, cell_labels


def segment_scores(masks: np.ndarray, keep: np.ndarray, geometry,
                   cell_scores: np.ndarray, inside: float = 0.999) -> np.ndarray:
    """``[K]`` each kept mask's score: the mean of the scores of the grid cells wholly
    inside it (``inside``: the share of a cell's pixels; a bank holds pure patches, so a
    cell straddling the mask's edge is like no bank vector); a mask holding no whole
    cell averages the cells it touches, weighted by coverage. +inf for an empty mask
    (never unknown)."""
    mh, mw = masks.shape[1:]
    iy, ix = pixel_cells(geometry, (mh, mw))
    n_cells = geometry.grid_hw[0] * geometry.grid_hw[1]
    cell_of = (iy[:, None] * geometry.grid_hw[1] + ix[None, :]).ravel()
    per_cell = np.maximum(np.bincount(cell_of, minlength=n_cells), 1)
    cs = np.asarray(cell_scores, np.float64)
    out = np.full(len(keep), np.inf)
    for j, p in enumerate(keep):
        hit = cell_of[masks[p].ravel()]
        if not len(hit):
            continue
        cov = np.bincount(hit, minlength=n_cells) / per_cell
        w = (cov >= inside).astype(np.float64)
        if not w.any():
            w = cov
        out[j] = float(w @ cs / w.sum())
    return out


def _paint_order(packed, labels, conf, bank: Bank, cfg: RuntimeConfig, shown):
    """The proposals to paint, in class-NMS order, and the ones left out: too unsure
    (``runtime.min_confidence``) or of a class not shown (``runtime.classes``); the
    pixels only those cover stay unassigned (not filled from the patches)."""
    n_classes, bg = len(bank.class_names), bank.background_index
    named = (labels >= 0) & (labels != (-2 if bg is None else bg))
    unsure = named & (conf < cfg.min_confidence)
    # (an unknown label, index n_classes, is not one of the named classes either)
    hidden = ((labels >= 0) & ~((labels < n_classes)
                                & shown[np.clip(labels, 0, n_classes - 1)])
              if shown is not None else np.zeros(len(labels), bool))
    paintable = np.flatnonzero(named & ~unsure & ~hidden)
    order = paintable[class_nms(packed.take(paintable), labels[paintable],
                                conf[paintable], cfg.nms_iou)]
    return order, unsure, hidden


def _paint(packed, proposals: Proposals, keep, labels, order, left_out_mask):
    """(owner, label map) at the frame's size: which kept proposal owns each pixel
    (painted on the proposer's grid by mask index, then scaled, nearest) and its label;
    -1 where none, ``ABSTAIN`` where only left-out proposals cover it."""
    owner, _ = rasterize(packed, np.arange(len(keep)), order, fill=-1)
    left_out = np.flatnonzero(left_out_mask)
    if len(left_out):
        covered, _ = rasterize(packed, np.zeros(len(keep), np.int64), left_out, fill=-1)
        owner[(owner == -1) & (covered == 0)] = ABSTAIN
    if owner.shape != tuple(proposals.image_hw):
        H, W = proposals.image_hw
        owner = cv2.resize(owner, (W, H), interpolation=cv2.INTER_NEAREST)
    lut = np.append(labels, -1).astype(np.int32)          # -1 / ABSTAIN stay as they are
    label_map = np.where(owner >= 0, lut[np.where(owner >= 0, owner, len(labels))],
                         owner).astype(np.int32)
    return owner, label_map


def _segments(proposals, keep, scores, labels, conf, owner, unsure, hidden, bank, rule):
    """The listed segments (every kept proposal of a shown class) with exact
    full-resolution areas and painted pixels (before fill and refinement), and each
    pixel's segment index (-1: none)."""
    areas = full_resolution_areas(proposals.masks[keep], proposals.image_hw)
    painted = np.bincount(owner[owner >= 0].ravel(), minlength=len(keep))
    names = list(bank.class_names) + [UNKNOWN_NAME]
    values = np.where(unsure, -1, to_label_values(labels, rule))   # too unsure: unassigned
    listed = np.flatnonzero(~hidden)
    segments = [Segment(proposal=int(keep[i]), label=int(values[i]),
                        class_name=names[labels[i]] if values[i] >= 0 else "",
                        confidence=float(conf[i]), objectness=float(scores[i]),
                        area=int(areas[i]), painted_pixels=int(painted[i]))
                for i in listed]
    position = np.full(len(keep) + 1, -1, np.int64)
    position[listed] = np.arange(len(listed))
    owners = position[np.where(owner >= 0, owner, len(keep))].astype(np.int16 if len(listed)
                                                                         < 32767 else np.int32)
    return segments, owners


# Frames above this many pixels (3840x2160, 4K UHD) are segmented on a copy
# downscaled to it and the label map is scaled back (nearest): the backbone and
# the proposer see a few hundred thousand pixels anyway, and the full-resolution
# stages (rasterise, fill, refine) would otherwise grow with the frame.
MAX_WORK_PIXELS = 3840 * 2160


def work_image(image: np.ndarray, max_pixels: int | None = None) -> np.ndarray:
    """``image`` itself, or a copy downscaled (area-averaged) to at most ``max_pixels``."""
    max_pixels = max_pixels or MAX_WORK_PIXELS
    H, W = image.shape[:2]
    if H * W <= max_pixels:
        return image
    f = (max_pixels / float(H * W)) ** 0.5
    w, h = max(1, int(W * f)), max(1, int(H * f))
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)


def assign_patches(fmap: FeatureMap, bank: Bank, index: SearchIndex, cfg: RuntimeConfig,
                   timer: StageTimer | None = None, prior: np.ndarray | None = None,
                   cell_labels: np.ndarray | None = None,
                   image: np.ndarray | None = None) -> SegmentationResult:
    """``runtime.assignment='patch'``: no proposals, each pixel takes its patch's label.

    The patch grid is coarse (14 px cells); the guided refinement with the frame
    as guide (``runtime.refine_radius``) puts the class edges on image edges.
    """
    timer = timer or StageTimer()
    if fmap.dim != bank.backbone.feature_dim:
        raise InputError(
            f"feature dim {fmap.dim} does not match the bank's {bank.backbone.feature_dim}; the "
            f"bank was built with {bank.backbone.name}")
    if cell_labels is None:
        with timer("search"):
            cell_labels = all_cell_labels(fmap, bank, index, cfg, prior)
    rule = unknown_rule(bank, unknown_quantile(cfg))
    shown = class_filter(cfg.classes, bank.class_names)
    with timer("raster"):
        iy, ix = pixel_cells(fmap.geometry, fmap.image_hw)
        if shown is not None:            # runtime.classes: other classes (and unknown) unassigned
            n = len(bank.class_names)
            ok = (cell_labels >= 0) & (cell_labels < n)
            cell_labels = np.where(ok & shown[np.clip(cell_labels, 0, n - 1)], cell_labels, -1)
        lut = np.where(cell_labels >= 0, to_label_values(cell_labels, rule),
                       IGNORE).astype(np.uint8)
        label_map = lut[iy[:, None] * fmap.geometry.grid_hw[1] + ix[None, :]]
    if cfg.refine_radius > 0 and image is not None:
        with timer("refine"):
            label_map = guided_label_refine(label_map, image, cfg.refine_radius,
                                            cfg.refine_eps)
    return SegmentationResult(label_map=label_map.astype(np.uint8), segments=[],
                              timings_ms=timer.as_dict(), class_names=list(bank.class_names))


def run_beside(pool, side, main):
    """``(main(), side())``, with ``side`` running in ``pool`` while ``main`` runs here
    (after ``main`` when there is no pool; not at all when ``side`` is None).

    The proposer runs beside the backbone this way in ``Segmenter`` and in the
    served pipeline: ONNX Runtime releases the GIL, so on a CPU a frame costs about
    the slower of the two. ``side`` is waited for even when ``main`` raises.
    """
    pending = pool.submit(side) if pool is not None and side is not None else None
    try:
        out = main()
    finally:
        beside = pending.result() if pending is not None else None
    if pending is None and side is not None:
        beside = side()
    return out, beside


def _to_frame_size(res: SegmentationResult, frame_hw, work_hw) -> SegmentationResult:
    """A result made on the downscaled work image, at the frame's size: label map and
    owners resized (nearest), segment areas in the frame's pixels."""
    (H, W), (h, w) = frame_hw, work_hw
    res.label_map = cv2.resize(res.label_map, (W, H), interpolation=cv2.INTER_NEAREST)
    if res.owners is not None:
        res.owners = cv2.resize(res.owners, (W, H), interpolation=cv2.INTER_NEAREST)
    for s in res.segments:
        s.area = int(round(s.area * (H * W) / float(h * w)))
    return res


class Segmenter:
    """Backbone + proposer + bank: ``Segmenter(...)(image) -> SegmentationResult``."""

    def __init__(self, backbone: Backbone, proposer: Proposer, bank: Bank,
                 config: ModuSegConfig | RuntimeConfig | None = None,
                 pooler: Pooler | None = None, index: SearchIndex | None = None,
                 parallel: bool = True):
        cfg = config.runtime if isinstance(config, ModuSegConfig) else config
        self.config = (cfg or RuntimeConfig())
        # the whole configuration, recorded with every result
        self.full_config = (config if isinstance(config, ModuSegConfig)
                            else ModuSegConfig(runtime=self.config, preset="custom"))
        check_identity(bank.backbone, backbone.identity,
                       fix=rebuild_hint(bank.config, self.full_config.preset))
        class_filter(self.config.classes, bank.class_names)     # unknown names: now
        self.backbone, self.proposer = backbone, proposer
        # the bank, its index and class prior, read once per frame (``swap_bank``
        # replaces the tuple between frames; a frame in flight keeps the one it read)
        self._state = (bank, index or bank_index(bank, self.config.index, self.config.nprobe),
                       class_prior(bank, self.config.few_image_balance))
        # how a swapped-in bank gets its index (``moduseg.build`` sets the backend's)
        self.make_index = lambda b: bank_index(b, self.config.index, self.config.nprobe)
        self.pooler = as_pooler(pooler)
        warn_small_classes(bank, self.config.top_k)
        # The backbone and the proposer are independent: on a CPU the proposer runs
        # in a second thread (ONNX Runtime releases the GIL), so the frame costs about
        # the slower of the two instead of their sum.
        self._last: tuple | None = None      # (thumbnail, proposals, age) for reuse
        self._pool = None
        if parallel:
            from concurrent.futures import ThreadPoolExecutor
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="proposer")

    @property
    def bank(self) -> Bank:
        return self._state[0]

    @bank.setter
    def bank(self, bank: Bank) -> None:
        self._state = (bank, self._state[1], class_prior(bank, self.config.few_image_balance))

    @property
    def index(self):
        return self._state[1]

    @index.setter
    def index(self, index) -> None:
        self._state = (self._state[0], index, self._state[2])

    @property
    def prior(self):
        return self._state[2]

    @prior.setter
    def prior(self, prior) -> None:
        self._state = (self._state[0], self._state[1], prior)

    def swap_bank(self, bank: Bank) -> None:
        """Use ``bank`` from the next frame on (same backbone, same configuration).

        Everything is built before the swap (index, prior, the unknown rule), so
        a bad bank raises here and the current one stays; the swap itself is one
        assignment, so a frame in flight finishes on the bank it started with.
        """
        check_identity(bank.backbone, self.backbone.identity, "the new bank")
        index = self.make_index(bank)
        q = unknown_quantile(self.config)
        if self.config.assignment == "patch":
            unknown_rule(bank, q)
        else:
            segment_rule(bank, q, self.config.top_k)
        warn_small_classes(bank, self.config.top_k)
        self._state = (bank, index, class_prior(bank, self.config.few_image_balance))

    def _propose(self, image, timer):
        with timer("proposer"):
            return self.proposer(image)

    def _reusable(self, image: np.ndarray):
        """The previous frame's proposals if this frame barely changed, else None."""
        cfg = self.config
        if cfg.reuse_proposals_below <= 0:
            return None, None
        thumb = cv2.resize(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), (64, 48),
                           interpolation=cv2.INTER_AREA).astype(np.float32)
        last = self._last
        if (last is not None and last[1].image_hw == tuple(image.shape[:2])
                and last[2] < cfg.reuse_max_age
                and float(np.abs(thumb - last[0]).mean()) < cfg.reuse_proposals_below):
            self._last = (last[0], last[1], last[2] + 1)
            return thumb, last[1]
        return thumb, None

    def __call__(self, image: np.ndarray, timer: StageTimer | None = None) -> SegmentationResult:
        """Segment one RGB frame; frames above ``MAX_WORK_PIXELS`` are worked on downscaled.

        The label map always has the frame's size; segment areas are in the
        frame's pixels.
        """
        check_image(image)
        small = work_image(image)
        if small is image:
            return self._segment(image, timer)
        t0 = time.perf_counter()
        res = _to_frame_size(self._segment(small, timer), image.shape[:2], small.shape[:2])
        res.timings_ms["total"] = (time.perf_counter() - t0) * 1e3
        if timer is not None:
            timer.ms["total"] = res.timings_ms["total"]
        return res

    def relabel(self, image: np.ndarray, proposals: Proposals,
                timer: StageTimer | None = None) -> SegmentationResult:
        """Label given ``proposals`` of ``image`` with the image's own features: the
        backbone and the post-backbone stages run, the proposer does not (the temporal
        path's vote frames: a keyframe's proposals carried to a later frame by the flow,
        voted on by that frame's fresh patches). ``proposals`` describe the work image
        (``work_image(image)``: the image itself below ``MAX_WORK_PIXELS``)."""
        check_image(image)
        timer = timer or StageTimer()
        t0 = time.perf_counter()
        small = work_image(image)
        bank, index, prior = self._state
        with timer("backbone"):
            fmap = self.backbone(small)
        fmap.check_finite()
        if self.config.assignment == "patch":
            res = assign_patches(fmap, bank, index, self.config, timer, prior, image=small)
        else:
            res = assign(fmap, proposals, bank, index, self.config, timer, self.pooler, prior,
                         None, small)
        if small is not image:
            res = _to_frame_size(res, image.shape[:2], small.shape[:2])
        timer.ms["total"] = res.timings_ms["total"] = (time.perf_counter() - t0) * 1e3
        return res

    def _segment(self, image: np.ndarray, timer: StageTimer | None = None) -> SegmentationResult:
        timer = timer or StageTimer()
        t0 = time.perf_counter()
        bank, index, prior = self._state          # this frame's bank, whatever swaps meanwhile
        if self.config.assignment == "patch":
            with timer("backbone"):
                fmap = self.backbone(image)
            fmap.check_finite()
            result = assign_patches(fmap, bank, index, self.config, timer, prior, image=image)
            timer.ms["total"] = result.timings_ms["total"] = (time.perf_counter() - t0) * 1e3
            return result
        thumb, reused = self._reusable(image)
        beside = reused is None and self._pool is not None

        def features():
            with timer("backbone"):
                fmap = self.backbone(image)
            fmap.check_finite()
            cells, found = None, []
            if beside and self.config.assignment == "patch_vote":
                # the patch search needs only the features: run it while the
                # proposer is still busy
                with timer("search"):
                    cells = all_cell_labels(fmap, bank, index, self.config, prior,
                                            evidence_out=found)
            return fmap, cells, (found[0] if found else None)

        propose = None if reused is not None else (lambda: self._propose(image, timer))
        (fmap, cell_labels, cell_scores), proposals = run_beside(self._pool, propose, features)
        if reused is not None:
            proposals = reused
            timer.ms["proposer"] += 0.0
        if reused is None and thumb is not None:
            self._last = (thumb, proposals, 0)
        result = assign(fmap, proposals, bank, index, self.config, timer,
                        self.pooler, prior, cell_labels, image, cell_scores)
        # wall time of the frame: less than the sum of stages when the proposer ran
        # beside the backbone
        timer.ms["total"] = result.timings_ms["total"] = (time.perf_counter() - t0) * 1e3
        return result


_warned: set = set()


def warn_small_classes(bank: Bank, top_k: int) -> list[str]:
    """Classes with fewer vectors than K can rarely win a count vote: say so once."""
    counts = np.bincount(bank.labels, minlength=len(bank.class_names))
    small = [f"{n} ({c})" for n, c in zip(bank.class_names, counts) if 0 < c < top_k]
    key = (id(bank), top_k)
    if small and key not in _warned:
        _warned.add(key)
        log.warning("bank classes with fewer vectors than top_k=%d: %s; they can rarely win "
                    "a count vote: add images of them, lower runtime.top_k, or use "
                    "runtime.voting='weighted'", top_k, ", ".join(small))
    return small
