"""Per-segment records with COCO run-length-encoded masks: what
``SegmentationResult.to_coco`` returns and ``segments.json`` lists per frame."""

from __future__ import annotations

import cv2
import numpy as np


def nearest_counts(n_out: int, n_in: int) -> np.ndarray:
    """How many of ``n_out`` output rows (or columns) a nearest-neighbour resize
    (``cv2.INTER_NEAREST``, as the label map is scaled) takes from each of ``n_in``."""
    src = cv2.resize(np.arange(n_in, dtype=np.int32).reshape(n_in, 1), (1, n_out),
                     interpolation=cv2.INTER_NEAREST).ravel()
    return np.bincount(src, minlength=n_in).astype(np.int64)


def full_resolution_areas(masks: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """``[P]`` exact pixel counts of grid masks ``[P, h, w]`` scaled to the frame's ``hw``
    the way the label map is (nearest): each grid cell weighs the pixels it becomes."""
    masks = np.asarray(masks, bool)
    P, h, w = masks.shape
    if P == 0:
        return np.zeros(0, np.int64)
    ry, rx = nearest_counts(int(hw[0]), h), nearest_counts(int(hw[1]), w)
    return np.einsum("pij,i,j->p", masks.astype(np.int64), ry, rx)


def segment_records(result) -> list[dict]:
    """Per segment of a ``SegmentationResult``: class, confidence in [0, 1],
    objectness, full-resolution areas and painted pixels, bounding box
    ``[x, y, w, h]`` and a COCO RLE of its mask (``segment_masks``); ``area``
    counts the pixels of that mask exactly."""
    from pycocotools import mask as mask_utils

    H, W = result.label_map.shape
    props = result.proposals
    masks = segment_masks(result)
    index = [s.proposal for s in result.segments]
    have = props is not None and all(0 <= p < len(props) for p in index)
    proposal_areas = (full_resolution_areas(props.masks[index], (H, W)) if have and index
                      else [int(s.area) for s in result.segments])
    recs = []
    for s, m, pa in zip(result.segments, masks, proposal_areas):
        rec = {
            "proposal": int(s.proposal),
            "class_id": int(s.label) if s.label >= 0 else None,
            "class_name": s.class_name or None,
            "confidence": _unit(s.confidence),
            "objectness": _unit(s.objectness),
            "area": int(s.area),
            "proposal_area": int(pa),
            "painted_pixels": int(s.painted_pixels),
            "painted": bool(s.painted_pixels > 0),
        }
        if m is not None:
            # RLE runs down columns: the transposed C-ordered mask is its Fortran order
            rle = mask_utils.encode(np.asfortranarray(m.view(np.uint8)))
            rec["area"] = int(mask_utils.area(rle))
            x, y, w, h = (int(round(v)) for v in mask_utils.toBbox(rle))
            rec["bbox"] = [x, y, w, h]
            rec["rle"] = {"size": [int(H), int(W)], "counts": rle["counts"].decode("ascii")}
        recs.append(rec)
    return recs


def segment_masks(result) -> list:
    """Each segment's ``H x W`` bool mask at the label map's resolution (``None`` when
    the result carries no proposals).

    A painted segment's mask is its pixels of the final label map: the pixels of its
    class that it painted, plus those the unassigned fill and the edge refinement gave
    its class nearer to it than to any other segment of that class (so the masks of a
    class cover its pixels in the label map, apart from regions no segment of the class
    painted at all, and never overlap). A segment that painted nothing (suppressed, of
    the background class, covered, left unassigned) gets its proposal's mask, scaled to
    the frame the way the label map is.
    """
    segs = result.segments
    lm = np.asarray(result.label_map)
    H, W = lm.shape
    props = result.proposals
    out: list = [None] * len(segs)
    if props is not None:
        for k, s in enumerate(segs):
            if 0 <= s.proposal < len(props):
                m = props.masks[s.proposal].view(np.uint8)
                if m.shape != (H, W):
                    m = cv2.resize(m, (W, H), interpolation=cv2.INTER_NEAREST)
                out[k] = m.astype(bool)
    owners = getattr(result, "owners", None)
    if owners is None or owners.shape != (H, W) or not segs:
        return out
    owners = owners.astype(np.int64)
    seg_label = np.array([s.label for s in segs] + [-1], np.int64)
    owner_class = seg_label[np.where(owners >= 0, owners, len(segs))]
    painted = [k for k, s in enumerate(segs) if s.painted_pixels > 0 and s.label >= 0]
    for c in sorted({segs[k].label for k in painted}):
        of_class = lm == c
        anchors = of_class & (owner_class == c)
        mine = [k for k in painted if segs[k].label == c]
        if not anchors.any():
            for k in mine:
                out[k] = np.zeros((H, W), bool)
            continue
        assign = owners
        if (of_class & ~anchors).any():
            # every pixel of the class goes to the segment owning its nearest anchor
            _, near = cv2.distanceTransformWithLabels(
                np.where(anchors, 0, 1).astype(np.uint8), cv2.DIST_L2, 5,
                labelType=cv2.DIST_LABEL_PIXEL)
            lut = np.full(int(near.max()) + 1, -1, np.int64)
            lut[near[anchors]] = owners[anchors]
            assign = lut[near]
        for k in mine:
            out[k] = of_class & (assign == k)
    return out


def _unit(v) -> float:
    v = float(v)
    return 0.0 if not np.isfinite(v) else round(min(1.0, max(0.0, v)), 6)
