"""EntitySeg proposer: an exported EntitySeg Mask2Former run by ONNX Runtime.

No torch at run time. The graph (``moduseg export entityseg``) maps a fixed
size RGB input to class logits ``[1, Q, 2]`` and mask logits
``[1, Q, H/4, W/4]``; resizing, padding and EntitySeg's non-overlapping entity
post-processing happen here in numpy/OpenCV.

Scores are EntitySeg's (see ``moduseg.export.entityseg.postprocess`` for the
reference): ``score_q = p_q * mean_{x in M_q} sigmoid(sigmoid(l_q(x)))`` with
``p_q`` the softmax entity probability and ``M_q`` the query's non-overlapping
mask; so ``runtime.min_objectness = 0.6`` keeps what it keeps for EntitySeg.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ...config import EntitySegOptions
from ...errors import InputError, ModelNotFoundError
from ...io import check_image
from ...types import Proposals

# "moduseg." keys of the ONNX file are copied into TensorRT engine sidecars
# (without the prefix), so one key serves both runtimes
METADATA_KEY = "moduseg.entityseg"
EPS = 1e-6
# sigmoid(sigmoid(l)) < sigmoid(1) for every l: the largest mask confidence
MAX_MASK_CONF = float(1.0 / (1.0 + np.exp(-1.0)))
CV_MAX_CHANNELS = 512


@dataclass(frozen=True)
class EntitySegMeta:
    """What the runtime needs to know about an exported graph."""

    input_hw: tuple[int, int]
    min_size: int
    max_size: int
    pixel_mean: tuple[float, float, float]
    num_queries: int
    backbone: str = "unknown"

    def to_json(self) -> str:
        return json.dumps({"input_hw": list(self.input_hw), "min_size": self.min_size,
                           "max_size": self.max_size, "pixel_mean": list(self.pixel_mean),
                           "num_queries": self.num_queries, "backbone": self.backbone})

    @classmethod
    def from_json(cls, text: str) -> "EntitySegMeta":
        d = json.loads(text)
        return cls(tuple(d["input_hw"]), int(d["min_size"]), int(d["max_size"]),
                   tuple(d["pixel_mean"]), int(d["num_queries"]), d.get("backbone", "unknown"))


def resized_size(image_hw, input_hw, min_size: int, max_size: int) -> tuple[int, int]:
    """detectron2 ``ResizeShortestEdge(min_size, max_size)``, then shrunk to fit the input.

    For landscape images within the exported size this is exactly the reference
    test-time resize; portrait images are scaled down to fit the fixed input.
    """
    h, w = int(image_hw[0]), int(image_hw[1])
    if h <= 0 or w <= 0:
        raise InputError(f"image size must be positive, got {image_hw}")
    scale = min_size / min(h, w)
    nh, nw = h * scale, w * scale
    if max(nh, nw) > max_size:
        s = max_size / max(nh, nw)
        nh, nw = nh * s, nw * s
    H, W = input_hw
    if nh > H or nw > W:
        s = min(H / nh, W / nw)
        nh, nw = nh * s, nw * s
    return (max(1, min(H, int(nh + 0.5))), max(1, min(W, int(nw + 0.5))))


def preprocess(image: np.ndarray, input_hw, resized_hw, pixel_mean) -> np.ndarray:
    """RGB uint8 ``[H, W, 3]`` -> ``[1, 3, Hin, Win]`` float32 0..255, padded with the mean.

    Resizing uses PIL bilinear, as detectron2's ``ResizeTransform`` does; the
    pad value is the pixel mean so the padding is zero after normalisation.
    """
    from PIL import Image

    rh, rw = resized_hw
    if image.shape[:2] != (rh, rw):
        image = np.asarray(Image.fromarray(image).resize((rw, rh), Image.BILINEAR))
    H, W = input_hw
    out = np.empty((1, 3, H, W), np.float32)
    out[0] = np.asarray(pixel_mean, np.float32)[:, None, None]
    out[0, :, :rh, :rw] = image.transpose(2, 0, 1)
    return out


def _resize(stack: np.ndarray, hw) -> np.ndarray:
    """Bilinear (half-pixel, like ``F.interpolate(align_corners=False)``) ``[c, h, w]`` -> ``[c, H, W]``."""
    c = stack.shape[0]
    if stack.shape[1:] == tuple(hw):
        return stack
    out = cv2.resize(np.ascontiguousarray(stack.transpose(1, 2, 0)), (int(hw[1]), int(hw[0])),
                     interpolation=cv2.INTER_LINEAR)
    return out.reshape(int(hw[0]), int(hw[1]), c).transpose(2, 0, 1)


def upsample_masks(mask_logits: np.ndarray, input_hw, resized_hw, image_hw) -> np.ndarray:
    """Network-resolution logits -> padded input -> crop -> original image size."""
    out = []
    for s in range(0, mask_logits.shape[0], CV_MAX_CHANNELS):
        x = _resize(mask_logits[s:s + CV_MAX_CHANNELS].astype(np.float32), input_hw)
        x = x[:, :resized_hw[0], :resized_hw[1]]
        out.append(_resize(x, image_hw))
    return np.concatenate(out, 0) if out else np.zeros((0, *image_hw), np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def entity_postprocess(class_logits: np.ndarray, mask_logits: np.ndarray, input_hw, resized_hw,
                       image_hw, top_k: int = 100, min_score: float = 0.0, chunk: int = 8):
    """EntitySeg's non-overlapping entity inference, in bounded memory.

    ``class_logits [Q, K+1]``, ``mask_logits [Q, h, w]`` -> ``(masks [P, H, W] bool,
    scores [P] float32, query [P] int)`` at the image size, in decreasing class
    probability; entities whose mask is empty (score 0) are left out.

    Queries are visited from the most to the least probable, ``chunk`` at a
    time, and each pixel goes to the first query with a positive logit there:
    the same id map as EntitySeg's paint-in-increasing-order loop. Dropping
    queries with ``p * 0.7311 < min_score`` is exact (they could only score
    below ``min_score`` and only claim pixels after every kept query), and so
    is skipping queries without a positive mask logit.
    """
    class_logits = np.asarray(class_logits, np.float32)
    mask_logits = np.asarray(mask_logits, np.float32)
    if class_logits.ndim != 2 or mask_logits.ndim != 3 or \
            class_logits.shape[0] != mask_logits.shape[0]:
        raise InputError(f"EntitySeg outputs must be [Q, K+1] and [Q, h, w], got "
                         f"{class_logits.shape} and {mask_logits.shape}")
    z = class_logits - class_logits.max(-1, keepdims=True)
    probs = np.exp(z)
    probs = (probs / probs.sum(-1, keepdims=True))[:, :-1]
    num_classes = probs.shape[1]
    flat = probs.reshape(-1)
    order = np.argsort(-flat, kind="stable")[:max(0, min(int(top_k), flat.size))]
    order = order[flat[order] * MAX_MASK_CONF >= min_score] if min_score > 0 else order
    # bilinear resizing is a convex combination: a query with no positive logit
    # at network resolution has an empty mask at any size (score 0), skip it
    alive = mask_logits.reshape(len(mask_logits), -1).max(1) > 0
    order = order[alive[order // num_classes]]
    H, W = int(image_hw[0]), int(image_hw[1])
    claimed = np.zeros((H, W), bool)
    masks, scores, queries = [], [], []
    for s in range(0, len(order), max(1, int(chunk))):
        idx = order[s:s + chunk]
        q = idx // num_classes
        logits = upsample_masks(mask_logits[q], input_hw, resized_hw, (H, W))
        pos = (logits > 0) & ~claimed
        anypos = pos.any(0)
        owner = np.where(anypos, pos.argmax(0), -1)
        sel = owner >= 0
        own = owner[sel]
        lsel = np.take_along_axis(logits, np.maximum(owner, 0)[None], 0)[0][sel]
        area = np.bincount(own, minlength=len(idx))
        conf = np.bincount(own, weights=_sigmoid(_sigmoid(lsel)), minlength=len(idx))
        claimed |= anypos
        for j in np.flatnonzero(area):
            masks.append(owner == j)
            scores.append(flat[idx[j]] * conf[j] / (area[j] + EPS))
            queries.append(int(q[j]))
    if not masks:
        return np.zeros((0, H, W), bool), np.zeros(0, np.float32), np.zeros(0, np.int64)
    return np.stack(masks), np.asarray(scores, np.float32), np.asarray(queries, np.int64)


class EntitySegProposer:
    """``Proposer``: RGB image -> non-overlapping entity masks with EntitySeg scores.

    ``model_path`` is the ONNX file written by ``moduseg export entityseg``
    (run by ONNX Runtime; ``providers`` picks its TensorRT / CUDA / CPU
    execution providers, ``auto`` = best available, as for the SAM proposer),
    or a TensorRT engine built from it (``.engine``, run by
    ``runtime.runners.TrtEngineRunner``; its sidecar JSON carries the metadata).
    ``runners`` (``runtime.runners.RunnerFactory``) opens either; by default ONNX
    Runtime on ``providers`` for a graph, TensorRT on ``device`` for an engine.
    """

    name = "entityseg"

    def __init__(self, model_path: str | Path, providers: str = "auto",
                 threads: int | None = None, top_k: int = EntitySegOptions.top_k,
                 min_score: float = EntitySegOptions.min_score,
                 chunk: int = EntitySegOptions.chunk, device: int = 0, runners=None):
        self.path = Path(model_path)
        if not self.path.is_file():
            raise ModelNotFoundError(
                f"EntitySeg model {self.path} does not exist; export it with 'moduseg export "
                f"entityseg --checkpoint model_final.pth --output {self.path}'")
        from ..runners import OrtRunner, runner_factory

        runners = runners or runner_factory(OrtRunner, providers, device)
        self.runner = runners(self.path, "entityseg", threads=threads)
        meta = self.runner.metadata
        # an ONNX file's metadata key; an engine sidecar's drops the "moduseg." prefix
        text = meta.get(METADATA_KEY, meta.get(METADATA_KEY[len("moduseg."):]))
        self.input_name = self.runner.inputs[0].name
        if text is None:
            raise InputError(f"{self.path} has no '{METADATA_KEY}' metadata; it was not "
                             f"written by 'moduseg export entityseg' (or its engine sidecar "
                             f"JSON is missing)")
        self.meta = EntitySegMeta.from_json(text)
        self.top_k, self.min_score, self.chunk = int(top_k), float(min_score), int(chunk)

    def infer(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Network input ``[1, 3, H, W]`` -> (class logits ``[Q, K+1]``, mask logits)."""
        out = self.runner.run({self.input_name: x}, ["pred_logits", "pred_masks"])
        cls, masks = out["pred_logits"], out["pred_masks"]
        return np.asarray(cls[0], np.float32), np.asarray(masks[0], np.float32)

    def raw(self, image: np.ndarray):
        """(class logits ``[Q, K+1]``, mask logits ``[Q, h, w]``, resized size)."""
        image = np.ascontiguousarray(check_image(image))
        rhw = resized_size(image.shape[:2], self.meta.input_hw, self.meta.min_size,
                           self.meta.max_size)
        x = preprocess(image, self.meta.input_hw, rhw, self.meta.pixel_mean)
        cls, masks = self.infer(x)
        return cls, masks, rhw

    def __call__(self, image: np.ndarray) -> Proposals:
        cls, mask_logits, rhw = self.raw(image)
        hw = image.shape[:2]
        masks, scores, _ = entity_postprocess(cls, mask_logits, self.meta.input_hw, rhw, hw,
                                              self.top_k, self.min_score, self.chunk)
        return Proposals(masks, scores, hw)

    def close(self) -> None:
        if self.runner is not None:
            self.runner.close()
            self.runner = None

    def __repr__(self) -> str:
        return (f"EntitySegProposer({self.path.name}, backbone={self.meta.backbone}, "
                f"input={self.meta.input_hw}, queries={self.meta.num_queries})")
