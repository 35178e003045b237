"""Edit a bank instead of rebuilding it: add examples or classes, drop a class, refit.

A bank is data: adding the vectors of a few labelled images (new classes or
more examples of known ones) costs their backbone passes, not a rebuild. The
added images go through the bank's own stored configuration (purification,
granularity, patch selection) and its stored projection, so the new vectors
live in the same space as the old ones. Each class keeps a provenance list
(which command and source gave how many vectors), and the ``unknown``
calibration of the touched classes is recomputed (``calibrate.py``).

Drift: the projection (``bank.pca_dim`` with ``bank.whiten``) was fitted on
the vectors of the build. Vectors added later can change how the bank's
vectors spread over its axes; ``drift`` compares the per-axis second moments
of the stored vectors with those recorded at the fit (RMS of their log
ratios), and ``refit`` re-whitens in the stored space (a rotation and a
per-axis scale folded into the projection, so queries and vectors stay exact).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import BankError, InputError
from ..smfa import l2_normalize
from ..types import Bank
from ..runtime.calibrate import calibrate
from .augment import view_tags

DRIFT_WARN = 0.25           # RMS log ratio of per-axis second moments that info flags


def provenance_record(op: str, source: str, bank: Bank, c: int, **extra) -> dict:
    """One provenance entry of class ``c``: the command, the source, images and vectors."""
    m = bank.labels == c
    return {"op": op, "source": str(source), "images": int(len(np.unique(bank.image_ids[m]))),
            "vectors": int(m.sum()), **extra}


def axis_moments(vectors: np.ndarray) -> list[float]:
    """Per-axis mean square of stored vectors (the drift reference)."""
    v = np.asarray(vectors, np.float64)
    return [float(x) for x in (v * v).mean(0)]


def drift(bank: Bank) -> dict | None:
    """How far the stored vectors have moved from the projection's fit (None without one).

    ``score``: RMS over axes of ``log(now / at fit)`` of the per-axis mean square;
    ``added``: vectors added since the fit. Flagged above ``DRIFT_WARN``.
    """
    if bank.projection is None:
        return None
    ref = bank.stats.get("projection_fit")
    if not _is_reference(ref, bank.dim):
        return {"score": None, "added": None, "flagged": False,
                "note": "no fit reference stored (the bank predates it); it is recorded at "
                        "the first 'bank add'"}
    now = np.asarray(axis_moments(bank.vectors))
    was = np.maximum(np.asarray(ref["moments"], np.float64), 1e-12)
    score = float(np.sqrt(np.mean(np.log(np.maximum(now, 1e-12) / was) ** 2)))
    added = int(ref.get("added", 0))
    fit = ref.get("vectors", 0)
    return {"score": round(score, 4), "added": added,
            "fit_vectors": fit if isinstance(fit, int) else None,
            "flagged": score > DRIFT_WARN}


def _is_reference(ref, dim: int) -> bool:
    """A stored drift reference of the right shape (the file may be old or edited)."""
    if not isinstance(ref, dict):
        return False
    m, added = ref.get("moments"), ref.get("added", 0)
    return (isinstance(m, list) and len(m) == dim
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in m)
            and isinstance(added, int) and not isinstance(added, bool))


def _fit_reference(bank: Bank) -> dict:
    """The drift reference: recorded at the fit; taken from the current vectors when absent."""
    ref = bank.stats.get("projection_fit")
    if _is_reference(ref, bank.dim):
        return dict(ref)
    return {"vectors": len(bank), "moments": axis_moments(bank.vectors), "added": 0}


def add_sampling(bank_cfg, bank: Bank, images: int, flip: bool = False):
    """The bank configuration ``bank add`` embeds its ``images`` labelled images with.

    A patch bank keeps at most ``bank.patches_per_region`` patches per class
    and image: enough when a class is seen in hundreds of images, far too
    sparse for a class taught from a few (5 CamVid frames gave 40 vectors
    against ~2,000 per class in the bank; the nearest vector of the class was
    the nearest of all for 7 % of its held-out patches, docs/results.md). So
    an add samples its images densely: up to the vector count of the class a
    typical *vector* of the bank belongs to (the count-weighted median of the
    classes' counts) spread over the images, never fewer patches than the build
    took. (The plain median over classes collapsed in a bank of many rare
    classes: coco128's is 16, so 5 images gave person 23-34 vectors against
    ~300 before, docs/results.md.) A bank built from a dataset is not touched
    (its build keeps the stored configuration).

    ``flip`` (``bank add --flip``): each image is also embedded mirrored left-right
    (``bank.augment_flip``, one more backbone pass an image), so a class taught from a
    few frames is seen from both sides; the target is then spread over every view.
    """
    if flip and not bank_cfg.augment_flip:
        bank_cfg = dataclasses.replace(bank_cfg, augment_flip=True)
    if getattr(bank_cfg, "granularity", None) != "patch" or images <= 0 or len(bank) == 0:
        return bank_cfg
    target = add_target(bank)
    views = int(images) * len(view_tags(bank_cfg))
    per = max(int(bank_cfg.patches_per_region), -(-target // views))
    return dataclasses.replace(bank_cfg, patches_per_region=per)


def add_target(bank: Bank) -> int:
    """The vector count of the class a typical vector of ``bank`` belongs to (the
    count-weighted median of the classes' counts): what an added class is sampled up to."""
    counts = np.bincount(bank.labels, minlength=len(bank.class_names))
    present = np.sort(counts[counts > 0])
    if len(present) == 0:
        return 0
    return int(present[np.searchsorted(np.cumsum(present) / present.sum(), 0.5)])


def zoom_gaps(labels: np.ndarray, classes, target: int) -> dict[int, int]:
    """``bank add --zoom``: how many zoomed vectors each of the ``classes`` being added
    may take: its shortfall from ``target`` given its vectors from the images themselves
    (``labels``), but never more than those (classes without a gap are left out).

    A class that fills its target at the images' own scale (road, sky in a street
    frame) needs no zoomed copy; a small or thin one (a sign, a bicyclist: few pure
    patches at full scale) is topped up from the zoomed views of its images. Frames
    are labelled at their own scale, so zoomed vectors never outnumber a class's
    own-scale ones (letting them fill the whole gap cost car, pavement and pedestrian
    IoU on the screen, docs/results.md); a class with no own-scale vector gets none.
    """
    counts = np.bincount(np.asarray(labels, np.int64), minlength=max(classes, default=-1) + 1)
    gaps = {int(c): int(min(target - counts[c], counts[c])) for c in sorted(set(classes))}
    return {c: g for c, g in gaps.items() if g > 0}


def zoom_tile_wanted(tile_label: np.ndarray, gaps: dict[int, int]) -> bool:
    """Whether a zoom tile shows any pixel of a class that is short (else no backbone pass)."""
    return bool(gaps) and bool(np.isin(tile_label, list(gaps)).any())


def fill_gaps(labels: np.ndarray, gaps: dict[int, int]) -> np.ndarray:
    """Indices of the zoomed vectors (``labels``, in image and tile order) that are kept:
    those of a short class, at most its shortfall, evenly spread over them."""
    labels = np.asarray(labels)
    keep = []
    for c, gap in gaps.items():
        idx = np.flatnonzero(labels == c)
        if len(idx) > gap:       # evenly spaced, as the builder spreads a region's patches
            idx = idx[np.linspace(0, len(idx) - 1, gap).round().astype(np.int64)]
        if len(idx):
            keep.append(idx)
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)


def zoom_views(image: np.ndarray, label: np.ndarray, zoom, gaps: dict[int, int]):
    """The zoom tiles of one added image (``augment.bank_views`` with only
    ``bank.augment_zoom = zoom``) that show a short class."""
    from ..config import BankConfig
    from .augment import bank_views

    for view in bank_views(image, label, BankConfig(augment_zoom=tuple(zoom))):
        if view.tag and zoom_tile_wanted(view.label, gaps):
            yield view


def _replace(bank: Bank, **changes) -> Bank:
    return dataclasses.replace(bank, **changes)


def add_vectors(bank: Bank, vectors: np.ndarray, labels: np.ndarray, image_ids,
                source_names: list[str], source: str, op: str = "add",
                skip_names=()) -> tuple[Bank, dict]:
    """Add raw backbone vectors (``[N, D]``, L2-normalised, labels index ``source_names``).

    Classes are matched to the bank's by name; new names become new classes at
    the end. The vectors go through the bank's stored projection. Returns the
    new bank and a report (vectors added per class, classes created).
    """
    labels = np.asarray(labels, np.int64)
    vectors = np.asarray(vectors, np.float32)
    image_ids = np.asarray(image_ids).astype(str)
    if len(vectors) != len(labels) or len(image_ids) != len(labels):
        raise InputError(f"{len(vectors)} vectors, {len(labels)} labels and {len(image_ids)} "
                         f"image ids: give one label and image id per vector")
    keep = np.array([source_names[int(l)] not in skip_names for l in labels], bool)
    vectors, labels, image_ids = vectors[keep], labels[keep], image_ids[keep]
    if len(vectors) == 0:
        raise InputError(f"{source} gave no vectors to add (no labelled region survived the "
                         f"bank's configuration, or every class was skipped)")
    if vectors.shape[1] != bank.backbone.feature_dim:
        raise BankError(f"{source} gave {vectors.shape[1]}-dim features; the bank's backbone "
                        f"has {bank.backbone.feature_dim}")
    names = list(bank.class_names)
    created = []
    to_bank = {}
    for l in np.unique(labels):
        name = source_names[int(l)]
        if name not in names:
            names.append(name)
            created.append(name)
        to_bank[int(l)] = names.index(name)
    if len(names) > 254:
        raise InputError(f"the bank would hold {len(names)} classes; a bank holds at most 254 "
                         f"(label maps are uint8 with 254 = unknown, 255 = ignore)")
    new_labels = np.array([to_bank[int(l)] for l in labels], np.int32)
    if bank.projection is not None:
        new = l2_normalize((l2_normalize(vectors) - bank.projection_mean) @ bank.projection)
    else:
        new = l2_normalize(vectors)
    stats = dict(bank.stats)
    if bank.projection is not None:
        ref = _fit_reference(bank)
        ref["added"] = int(ref.get("added", 0)) + len(new)
        stats["projection_fit"] = ref
    out = _replace(bank, vectors=np.concatenate([bank.vectors, new.astype(bank.vectors.dtype)]),
                   labels=np.concatenate([bank.labels, new_labels]),
                   image_ids=np.concatenate([bank.image_ids, image_ids]),
                   class_names=names, stats=stats,
                   palette=_extend_palette(bank.palette, len(names)))
    touched = sorted({names[c] for c in new_labels.tolist()})
    prov = {k: list(v) for k, v in bank.provenance.items()}
    for name in touched:
        c = names.index(name)
        m = new_labels == c
        rec = provenance_record(op, source, out, c)
        rec["images"] = int(len(np.unique(image_ids[m])))
        rec["vectors"] = int(m.sum())
        prov.setdefault(name, []).append(rec)
    out.provenance = prov
    out.calibration = calibrate(out.vectors, out.labels, out.image_ids, names, only=touched,
                                previous=bank.calibration)
    _recount(out)
    report = {"added": {n: int((new_labels == names.index(n)).sum()) for n in touched},
              "created": created, "images": int(len(np.unique(image_ids)))}
    return out, report


def _extend_palette(palette, n):
    """Keep the bank's colours; new classes get colours from the default palette."""
    if palette is None:
        return None
    import colorsys
    out = [list(c) for c in palette]
    while len(out) < n:
        h = (0.11 + 0.618034 * len(out)) % 1.0
        out.append([int(round(255 * v)) for v in colorsys.hsv_to_rgb(h, 0.7, 0.95)])
    return out


def _recount(bank: Bank) -> None:
    counts = np.bincount(bank.labels, minlength=len(bank.class_names))
    bank.stats = dict(bank.stats)
    bank.stats["per_class"] = {n: int(c) for n, c in zip(bank.class_names, counts)}


def drop_class(bank: Bank, name: str) -> Bank:
    """The bank without class ``name`` (its vectors, name, colour, provenance, calibration)."""
    if name not in bank.class_names:
        raise InputError(f"the bank has no class {name!r}; its classes: "
                         f"{', '.join(bank.class_names)}")
    if len(bank.class_names) == 1:
        raise InputError(f"{name!r} is the bank's only class; a bank needs at least one")
    c = bank.class_names.index(name)
    keep = bank.labels != c
    if not keep.any():
        raise InputError(f"dropping {name!r} would leave the bank without vectors")
    labels = bank.labels[keep]
    labels = np.where(labels > c, labels - 1, labels).astype(np.int32)
    names = [n for n in bank.class_names if n != name]
    bg = bank.background_index
    bg = None if bg == c else (bg - 1 if bg is not None and bg > c else bg)
    out = _replace(bank, vectors=bank.vectors[keep], labels=labels,
                   image_ids=bank.image_ids[keep], class_names=names, background_index=bg,
                   palette=None if bank.palette is None else
                   [p for i, p in enumerate(bank.palette) if i != c])
    out.provenance = {k: v for k, v in bank.provenance.items() if k != name}
    if bank.calibration is not None:
        out.calibration = dict(bank.calibration)
        out.calibration["per_class"] = {k: v for k, v in bank.calibration["per_class"].items()
                                        if k != name}
    _recount(out)
    return out


def refit(bank: Bank) -> Bank:
    """Re-whiten a whitened projected bank in its stored space.

    With ``S = V^T V / n`` of the stored rows ``V`` and ``S = U L U^T``, the new
    stored rows are ``normalise(V U L^-1/2)`` and the projection becomes
    ``P U L^-1/2`` (same mean): a query projected by the new projection equals
    the old projection followed by the same map, so nothing is approximated.
    """
    if bank.projection is None:
        raise InputError("this bank has no projection (bank.pca_dim=0): there is nothing to "
                         "refit")
    if not bank.config.get("bank", {}).get("whiten", False):
        raise InputError("bank refit re-whitens the stored space; this bank's projection is "
                         "not whitened (bank.whiten=false), so refitting it needs the raw "
                         "features: rebuild it with 'moduseg bank build'")
    v = np.asarray(bank.vectors, np.float64)
    s = v.T @ v / max(len(v), 1)
    w, U = np.linalg.eigh(s)
    order = np.argsort(w)[::-1]
    w, U = w[order], U[:, order]
    U *= np.where(U[np.abs(U).argmax(0), np.arange(U.shape[1])] < 0, -1.0, 1.0)[None]
    W = U / np.sqrt(np.maximum(w, w[0] * 1e-6))[None]
    new = l2_normalize((v @ W).astype(np.float32))
    P = (bank.projection.astype(np.float64) @ W).astype(np.float32)
    stats = dict(bank.stats)
    old = stats.get("projection_fit")
    refits = old.get("refits", 0) if isinstance(old, dict) else 0
    stats["projection_fit"] = {"vectors": len(new), "moments": axis_moments(new), "added": 0,
                               "refits": (refits if isinstance(refits, int) else 0) + 1}
    out = _replace(bank, vectors=new.astype(bank.vectors.dtype), projection=P, stats=stats)
    out.calibration = calibrate(out.vectors, out.labels, out.image_ids, out.class_names)
    return out
