"""Dense CLIP segmentation with sliding windows (SCLIP/CorrCLIP-style inference).

The image is resized so its short side is ``short_side`` (CorrCLIP: 336),
padded to at least one crop with the mean colour, and covered by
``crop x crop`` windows every ``stride`` pixels (CorrCLIP: 336/112; the last
window on each axis is aligned to the image edge). Each window's patch
embeddings are scored against the query text embeddings (cosine times the
CLIP logit scale), upsampled bilinearly to the window, and summed; the sum
is divided by how many windows covered each pixel. The stitched query
logits are resized to the original image, reduced to classes by a max over
each class's queries, and turned into probabilities by a softmax.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ...errors import InputError
from .model import ClipModel

NO_QUERY = -1e30  # logit of a class without queries (finite, so it can be resized)
CV_MAX_CHANNELS = 128  # OpenCV 5 resizes at most 128 channels at once


@dataclass(frozen=True)
class SlidingWindow:
    """Sliding-window settings; ``crop`` must equal the exported image size."""

    crop: int = 336
    stride: int = 112
    short_side: int | None = 336
    batch: int = 4

    def validate(self) -> SlidingWindow:
        if self.crop <= 0 or self.stride <= 0:
            raise InputError(f"crop and stride must be positive, got {self.crop}/{self.stride}")
        if self.stride > self.crop:
            raise InputError(f"stride {self.stride} is larger than the crop {self.crop}: "
                             f"pixels between windows would get no prediction")
        if self.short_side is not None and self.short_side <= 0:
            raise InputError("short_side must be positive (or None for no resize)")
        if self.batch <= 0:
            raise InputError("batch must be positive")
        return self


def axis_starts(length: int, crop: int, stride: int) -> list[int]:
    """Window starts along one axis; the last window ends at the edge."""
    if length <= crop:
        return [0]
    n = -(-(length - crop) // stride) + 1
    return sorted({min(i * stride, length - crop) for i in range(n)})


def window_boxes(hw: tuple[int, int], crop: int, stride: int) -> list[tuple[int, int, int, int]]:
    """``(y0, x0, y1, x1)`` windows covering an image of ``hw`` (clipped to it)."""
    H, W = hw
    return [(y, x, min(y + crop, H), min(x + crop, W))
            for y in axis_starts(H, crop, stride) for x in axis_starts(W, crop, stride)]


def stitch(windows: list[np.ndarray], boxes: list[tuple[int, int, int, int]],
           hw: tuple[int, int]) -> np.ndarray:
    """Average overlapping window logits ``[Q, h_i, w_i]`` into ``[Q, H, W]``."""
    if not windows or len(windows) != len(boxes):
        raise InputError(f"stitch needs one logit array per box, got {len(windows)} arrays "
                         f"and {len(boxes)} boxes")
    acc = np.zeros((windows[0].shape[0], *hw), np.float32)
    count = np.zeros(hw, np.float32)
    for w, (y0, x0, y1, x1) in zip(windows, boxes):
        acc[:, y0:y1, x0:x1] += w[:, :y1 - y0, :x1 - x0]
        count[y0:y1, x0:x1] += 1
    if (count == 0).any():
        raise InputError("the windows do not cover the whole image; check crop and stride")
    return acc / count


def resize_channels(x: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of ``[C, h, w]`` (half-pixel centres, like torch align_corners=False)."""
    if tuple(x.shape[1:]) == tuple(hw):
        return x.astype(np.float32, copy=False)
    hwc = np.ascontiguousarray(x.transpose(1, 2, 0), dtype=np.float32)
    parts = [cv2.resize(np.ascontiguousarray(hwc[:, :, i:i + CV_MAX_CHANNELS]), (hw[1], hw[0]),
                        interpolation=cv2.INTER_LINEAR).reshape(hw[0], hw[1], -1)
             for i in range(0, hwc.shape[2], CV_MAX_CHANNELS)]
    return np.concatenate(parts, 2).transpose(2, 0, 1)


def resize_short_side(image: np.ndarray, short_side: int | None) -> np.ndarray:
    if short_side is None:
        return image
    H, W = image.shape[:2]
    s = short_side / min(H, W)
    hw = (max(1, round(H * s)), max(1, round(W * s)))
    if hw == (H, W):
        return image
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, (hw[1], hw[0]), interpolation=interp)


def classes_from_queries(query_logits: np.ndarray, query_class, n_classes: int) -> np.ndarray:
    """``[Q, H, W]`` -> ``[C, H, W]``: each class takes its best query; no query -> -inf."""
    qc = np.asarray(query_class)
    out = np.full((n_classes, *query_logits.shape[1:]), -np.inf, np.float32)
    for c in np.unique(qc):
        out[c] = query_logits[qc == c].max(0)
    return out


class DenseClipSegmenter:
    """Exported dense CLIP + query embeddings -> per-class logits for an image."""

    def __init__(self, model: ClipModel, query_embeddings: np.ndarray, query_class,
                 n_classes: int, window: SlidingWindow | None = None, providers: str = "auto",
                 threads: int | None = None, runners=None):
        from ...runtime.runners import default_factory

        self.model = model
        self.window = (window or SlidingWindow(crop=model.crop, stride=max(1, model.crop // 3),
                                               short_side=model.crop)).validate()
        if self.window.crop != model.crop:
            raise InputError(f"crop {self.window.crop} differs from the exported CLIP's input "
                             f"size {model.crop}; re-export with moduseg export clip --crop "
                             f"{self.window.crop} or use --crop {model.crop}")
        q = np.asarray(query_embeddings, np.float32)
        if q.ndim != 2 or q.shape[1] != model.embed_dim:
            raise InputError(f"query embeddings {q.shape} do not match the CLIP embedding "
                             f"dim {model.embed_dim}; clear the text cache and rerun")
        if len(query_class) != len(q):
            raise InputError("one class index per query embedding is needed")
        self.text = q * np.float32(model.logit_scale)
        self.query_class = np.asarray(query_class, np.int64)
        self.n_classes = n_classes
        self.mean_rgb = np.asarray(model.mean, np.float32) * 255.0
        self.runner = default_factory(runners, providers)(model.image_onnx, "clip_image",
                                                          threads=threads)
        self.input = self.runner.inputs[0].name
        self.output = self.runner.outputs[0].name

    def features(self, crops: np.ndarray) -> np.ndarray:
        """``[B, S, S, 3]`` RGB (uint8 or float 0..255) -> ``[B, E, g, g]`` unit features."""
        x = np.ascontiguousarray(crops.transpose(0, 3, 1, 2), dtype=np.float32)
        return self.runner.run({self.input: x}, [self.output])[self.output]

    def window_logits(self, crops: np.ndarray) -> np.ndarray:
        """Query logits per window at window resolution: ``[B, Q, S, S]``."""
        f = self.features(crops)
        logits = np.einsum("qe,behw->bqhw", self.text, f, optimize=True)
        S = self.window.crop
        return np.stack([resize_channels(l, (S, S)) for l in logits])

    def query_logits(self, image: np.ndarray, original_size: bool = True) -> np.ndarray:
        """``[Q, H, W]`` stitched query logits (at the resized working size if not
        ``original_size``)."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise InputError(f"image must be H x W x 3 RGB, got shape {image.shape}")
        H, W = image.shape[:2]
        win = self.window
        img = resize_short_side(image, win.short_side)
        h, w = img.shape[:2]
        ph, pw = max(h, win.crop), max(w, win.crop)
        if (ph, pw) != (h, w):  # pad with the mean colour (zero after normalisation)
            padded = np.empty((ph, pw, 3), np.float32)
            padded[:] = self.mean_rgb
            padded[:h, :w] = img
            img = padded
        boxes = window_boxes((ph, pw), win.crop, win.stride)
        windows = []
        for i in range(0, len(boxes), win.batch):
            chunk = boxes[i:i + win.batch]
            crops = np.stack([img[y0:y0 + win.crop, x0:x0 + win.crop]
                              for y0, x0, _, _ in chunk])
            windows.extend(self.window_logits(crops))
        stitched = stitch(windows, boxes, (ph, pw))[:, :h, :w]
        return resize_channels(stitched, (H, W)) if original_size else stitched

    def class_logits(self, image: np.ndarray) -> np.ndarray:
        """``[C, H, W]`` class logits at the image size.

        Each class takes the max over its queries at the working size; only
        the C class maps (not the Q query maps) are resized to the image,
        which keeps memory at C x H x W for large photos.
        """
        per_class = classes_from_queries(self.query_logits(image, original_size=False),
                                         self.query_class, self.n_classes)
        per_class[~np.isfinite(per_class)] = NO_QUERY  # bilinear resize needs finite values
        return resize_channels(per_class, image.shape[:2])
