"""The options of the SAM automatic mask generator, checked once."""

from __future__ import annotations

from dataclasses import dataclass, fields

from ...errors import InputError


@dataclass(frozen=True)
class SamOptions:
    """What shapes SAM's proposals (the generator's keyword arguments).

    ``points_per_side`` is an int (n x n grid, as in SAM) or ``(rows, cols)``;
    with ``point_sampler="kmeans"`` the same number of points is placed by
    colour+position clustering instead (``mask_ops.color_cluster_points``).
    ``min_region_area`` (image pixels): holes and islands smaller than this
    are filled / removed. ``refine_points``: at most this many extra prompts
    in uncovered regions of at least ``refine_min_area`` image pixels.
    ``mask_stride`` 1, 2 or 4: logits on the 256, 128 or 64 grid;
    ``output_upsample`` 1, 2 or 4: kept masks are the bilinearly upsampled
    logits of that grid thresholded at 0 (smoother boundaries; on CamVid it
    did not raise the oracle mIoU, thin poles suffer, so it is off).
    ``encoder_crop``: run a copy of the encoder rewritten for the content
    size rounded up to multiples of 64 (``graphs.sam_encoder``, built once
    per size and cached) instead of encoding the zero padding of the 1024
    square. ``padding_pool``: the decoder sees the content cells plus the
    64x64 grid's padding cells pooled in blocks of this many cells a side
    (``sam_cells``); 1 = every padding cell (with ``encoder_crop=False``
    exactly SAM's padded decoder), 0 = none (content only).
    """

    points_per_side: int | tuple[int, int] = (6, 8)
    points_per_batch: int = 64
    point_sampler: str = "kmeans"
    pred_iou_thresh: float = 0.7
    stability_score_thresh: float = 0.8
    stability_score_offset: float = 1.0
    nms_iou_thresh: float = 0.7
    min_region_area: int = 100
    multimask: bool = True
    mask_stride: int = 4
    output_upsample: int = 1
    refine_points: int = 16
    refine_min_area: int = 600
    crop_n_layers: int = 0
    quantize_decoder: bool = False
    quantize_encoder: bool = True
    fast_attention: bool = True
    padding_pool: int = 4
    encoder_crop: bool = True

    def __post_init__(self):
        pps = self.points_per_side
        rc = (pps, pps) if isinstance(pps, int) else tuple(pps)
        if len(rc) != 2 or min(int(rc[0]), int(rc[1])) < 1:
            raise InputError(f"points_per_side must be >= 1, got {pps}")
        if self.mask_stride not in (1, 2, 4):
            raise InputError(f"mask_stride must be 1, 2 or 4, got {self.mask_stride}")
        for nm in ("pred_iou_thresh", "stability_score_thresh", "nms_iou_thresh"):
            v = getattr(self, nm)
            if not 0.0 <= v <= 1.0:
                raise InputError(f"{nm} must be in [0, 1], got {v}")
        if self.point_sampler not in ("grid", "kmeans"):
            raise InputError(f"point_sampler must be 'grid' or 'kmeans', got "
                             f"{self.point_sampler!r}")
        if self.output_upsample not in (1, 2, 4):
            raise InputError(f"output_upsample must be 1, 2 or 4, got {self.output_upsample}")
        if int(self.padding_pool) < 0:
            raise InputError(f"padding_pool must be >= 0 (0: no padding cells, 1: all), "
                             f"got {self.padding_pool}")
        norm = {"points_per_batch": max(1, int(self.points_per_batch)),
                "pred_iou_thresh": float(self.pred_iou_thresh),
                "stability_score_thresh": float(self.stability_score_thresh),
                "stability_score_offset": float(self.stability_score_offset),
                "nms_iou_thresh": float(self.nms_iou_thresh),
                "min_region_area": int(self.min_region_area), "multimask": bool(self.multimask),
                "mask_stride": int(self.mask_stride),
                "output_upsample": int(self.output_upsample),
                "refine_points": int(self.refine_points),
                "refine_min_area": int(self.refine_min_area),
                "crop_n_layers": int(self.crop_n_layers), "padding_pool": int(self.padding_pool),
                "encoder_crop": bool(self.encoder_crop)}
        for k, v in norm.items():
            object.__setattr__(self, k, v)

    @property
    def grid_rc(self) -> tuple[int, int]:
        pps = self.points_per_side
        rc = (pps, pps) if isinstance(pps, int) else tuple(pps)
        return int(rc[0]), int(rc[1])

    @classmethod
    def names(cls) -> frozenset:
        return frozenset(f.name for f in fields(cls)) | {"grid_rc"}
