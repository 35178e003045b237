"""Per-segment records with COCO run-length-encoded masks: what
``SegmentationResult.to_coco`` returns and ``segments.json`` lists per frame."""

from __future__ import annotations

import cv2
import numpy as np


def segment_records(result) -> list[dict]:
    """Per segment of a ``SegmentationResult``: class, confidence in [0, 1],
    objectness, full-resolution area and painted pixels, bounding box
    ``[x, y, w, h]`` and a COCO RLE of its mask."""
    from pycocotools import mask as mask_utils

    H, W = result.label_map.shape
    props = result.proposals
    recs = []
    for s in result.segments:
        rec = {
            "proposal": int(s.proposal),
            "class_id": int(s.label) if s.label >= 0 else None,
            "class_name": s.class_name or None,
            "confidence": _unit(s.confidence),
            "objectness": _unit(s.objectness),
            "area": int(s.area),
            "painted_pixels": int(s.painted_pixels),
            "painted": bool(s.painted_pixels > 0),
        }
        if props is not None and 0 <= s.proposal < len(props):
            # RLE runs down columns: resize the transposed mask, and its transpose is
            # the Fortran-ordered full-resolution mask without a copy
            m = props.masks[s.proposal].view(np.uint8)
            if m.shape == (H, W):
                rle = mask_utils.encode(np.asfortranarray(m))
            else:
                mt = cv2.resize(np.ascontiguousarray(m.T), (H, W),
                                interpolation=cv2.INTER_NEAREST)
                rle = mask_utils.encode(mt.T)
            x, y, w, h = (int(round(v)) for v in mask_utils.toBbox(rle))
            rec["bbox"] = [x, y, w, h]
            rec["rle"] = {"size": [int(H), int(W)], "counts": rle["counts"].decode("ascii")}
        recs.append(rec)
    return recs


def _unit(v) -> float:
    v = float(v)
    return 0.0 if not np.isfinite(v) else round(min(1.0, max(0.0, v)), 6)
