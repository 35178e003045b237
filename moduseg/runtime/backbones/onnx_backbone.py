"""A patch-feature backbone run by ONNX Runtime (the default DINOv2 ViT-S/14).

Preprocessing decides where every patch lies on the image, so it is done here
and recorded exactly in the returned ``GridGeometry``:

* keep the aspect ratio and resize to about ``pixels`` pixels (default
  172,800 = 480x360), or, when ``short_side`` is given, so the short side is
  ``short_side`` (both ``None`` keeps the native size). A pixel budget keeps
  the cost per frame the same whatever the aspect ratio: a 640x272 video
  frame stays native instead of becoming 847x360 (1.8x the patches) as a
  360-pixel short side would make it;
* ``pad``: place the resized image top-left and pad bottom/right up to the
  next multiple of the patch size (padding is 0 after normalisation, i.e. the
  mean colour); ``stretch``: resize each side to its nearest multiple instead;
* ``normalize``: ``dataset`` subtracts the graph's fixed mean and divides by
  its std (ImageNet's); ``image`` first gives each colour channel of the
  frame the dataset's mean and std (its own mean and spread mapped onto
  them), which removes the exposure and white balance of the camera and the
  light: footage from another camera or dusk then looks like the bank's.

The default budget is CamVid's native 480x360: no resampling, a 364x490
input and a 26x35 grid (14-pixel patches; about 0.65 CPU-seconds per frame).

A graph with a static input size (exported for TensorRT at one resolution)
ignores ``short_side``: ``pad`` letterboxes the image top-left into it,
``stretch`` fills it.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from ...io import check_image, sha256_file as _sha256
from ...errors import InputError, ModelNotFoundError
from ...types import (DEFAULT_PIXELS, DEFAULT_SHORT_SIDE, BackboneIdentity, FeatureMap,  # noqa: F401
                      GridGeometry, input_size_tag)
from .views import check_shifts, fine_geometry, view_features, view_suffix

POLICIES = ("pad", "stretch")
NORMALIZATIONS = ("dataset", "image")
# a flat frame's channel spread (in [0, 1]) is not stretched beyond this
MIN_CHANNEL_STD = 0.02
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_normalize(normalize: str) -> str:
    if normalize not in NORMALIZATIONS:
        raise InputError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    return normalize


def resolve_sizing(short_side, pixels) -> tuple[int | None, int | None]:
    """Checked ``(short_side, pixels)``; a short side, when given, wins over the budget."""
    if short_side is not None and int(short_side) < 1:
        raise InputError(f"short_side must be a positive number of pixels, got {short_side}")
    if pixels is not None and int(pixels) < 1:
        raise InputError(f"pixels must be a positive pixel budget (e.g. 172800 = 480x360), "
                         f"got {pixels}")
    short = int(short_side) if short_side else None
    return short, (int(pixels) if pixels and not short else None)


def plan_geometry(image_hw, patch: int, short_side: int | None = DEFAULT_SHORT_SIDE,
                  policy: str = "pad", fixed_hw: tuple[int, int] | None = None,
                  pixels: int | None = None) -> GridGeometry:
    """Where an image of ``image_hw`` goes on the patch grid (pure, no pixels).

    ``fixed_hw`` is a graph's static input size: ``pad`` then fits the image
    inside it keeping the aspect (letterbox, top-left), ``stretch`` fills it.
    """
    if policy not in POLICIES:
        raise InputError(f"resize policy must be one of {POLICIES}, got {policy!r}")
    H, W = int(image_hw[0]), int(image_hw[1])
    if fixed_hw is not None:
        fh, fw = int(fixed_hw[0]), int(fixed_hw[1])
        grid = (fh // patch, fw // patch)
        if policy == "stretch":
            return GridGeometry.unpadded((H, W), grid, patch)
        s = min(fh / H, fw / W)
        rh, rw = min(fh, max(1, round(H * s))), min(fw, max(1, round(W * s)))
        return GridGeometry((H, W), (rh, rw), grid, patch)
    if short_side:
        s = float(short_side) / min(H, W)
        rh, rw = max(1, round(H * s)), max(1, round(W * s))
        if H <= W:
            rh = int(short_side)
        else:
            rw = int(short_side)
    elif pixels:
        s = float(np.sqrt(float(pixels) / (H * W)))
        rh, rw = max(1, round(H * s)), max(1, round(W * s))
    else:
        rh, rw = H, W
    if policy == "pad":
        grid = (-(-rh // patch), -(-rw // patch))
        return GridGeometry((H, W), (rh, rw), grid, patch)
    grid = (max(1, round(rh / patch)), max(1, round(rw / patch)))
    return GridGeometry.unpadded((H, W), grid, patch)


def image_channel_affine(image: np.ndarray, mean, std) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``(gain, bias)`` taking a uint8 RGB ``image`` straight to the graph's input
    with its channels given ImageNet's mean and std first: ``v / 255`` becomes
    ``(v / 255 - m) * IMAGENET_STD / s + IMAGENET_MEAN`` (``m``, ``s``: the image's own channel
    mean and std, ``s`` at least ``MIN_CHANNEL_STD``), then ``(. - mean) / std``."""
    m, s = cv2.meanStdDev(image)
    m = m.reshape(3) / 255.0
    s = np.maximum(s.reshape(3) / 255.0, MIN_CHANNEL_STD)
    k = np.asarray(IMAGENET_STD, np.float64) / s
    mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    return k / (255.0 * std), (np.asarray(IMAGENET_MEAN, np.float64) - m * k - mean) / std


def preprocess(image: np.ndarray, geometry: GridGeometry, mean, std,
               normalize: str = "dataset") -> np.ndarray:
    """uint8 HWC RGB -> normalised float32 [1, 3, Hp, Wp] laid out as ``geometry`` says."""
    rh, rw = geometry.resized_hw
    H, W = image.shape[:2]
    if (rh, rw) != (H, W):
        interp = cv2.INTER_AREA if rh * rw < H * W else cv2.INTER_LINEAR
        image = cv2.resize(image, (rw, rh), interpolation=interp)
    ph, pw = geometry.padded_hw
    out = np.zeros((1, 3, ph, pw), np.float32)
    if normalize == "image":
        # one multiply-add per pixel and channel, written in place
        gain, bias = image_channel_affine(image, mean, std)
        for c, plane in enumerate(cv2.split(image)):
            dst = out[0, c, :rh, :rw]
            np.multiply(plane, np.float32(gain[c]), out=dst)
            dst += np.float32(bias[c])
        return out
    x = image.astype(np.float32) * np.float32(1.0 / 255.0)
    x -= np.asarray(mean, np.float32)
    x /= np.asarray(std, np.float32)
    out[0, :, :rh, :rw] = x.transpose(2, 0, 1)
    return out


class OnnxBackbone:
    """``Backbone``: image -> ``FeatureMap`` from a graph ``[1,3,H,W] -> [1,D,H/p,W/p]``.

    ``identity`` may be a full ``BackboneIdentity`` (used as is) or a name; a
    name gets ``weights_sha256`` = the graph file's checksum (pass
    ``weights_sha256`` to skip hashing) and ``input_size`` = policy and size
    (pixel budget or short side) and normalisation, so banks built at another resolution or
    with another normalisation are refused. Mean, std and the patch size default to the
    graph's ``moduseg.*`` metadata, else ImageNet/14. ``runners`` (a
    ``runtime.runners.RunnerFactory``, from the composition root) runs the graph;
    without it, ONNX Runtime on ``providers``.
    """

    def __init__(self, path: str | Path, identity: BackboneIdentity | str | None = None,
                 short_side: int | None = DEFAULT_SHORT_SIDE, policy: str = "pad",
                 mean=None, std=None, providers: str = "auto", threads: int | None = None,
                 patch: int | None = None, output: str | None = None,
                 weights_sha256: str | None = None, pixels: int | None = DEFAULT_PIXELS,
                 flip: bool = False, normalize: str = "dataset", runners=None,
                 shifts: str | None = None):
        from ..runners import default_factory

        self.path = Path(path)
        if not self.path.is_file():
            raise ModelNotFoundError(
                f"backbone graph {self.path} does not exist; run 'moduseg models pull' or "
                f"'moduseg export backbone' first")
        if policy not in POLICIES:
            raise InputError(f"policy must be one of {POLICIES}, got {policy!r}")
        self.short_side, self.pixels = resolve_sizing(short_side, pixels)
        self.runner = default_factory(runners, providers)(self.path, "backbone",
                                                          threads=threads)
        meta = dict(self.runner.metadata)
        self.metadata = meta
        self.patch = int(patch or meta.get("moduseg.patch_size", 14))
        self.mean = tuple(float(v) for v in (mean or json.loads(
            meta.get("moduseg.mean", json.dumps(IMAGENET_MEAN)))))
        self.std = tuple(float(v) for v in (std or json.loads(
            meta.get("moduseg.std", json.dumps(IMAGENET_STD)))))
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise InputError(f"mean/std must be 3 values (std > 0), got {self.mean}, {self.std}")
        self.policy = policy
        self.normalize = check_normalize(normalize)
        self.flip = bool(flip)
        self.shifts = check_shifts(shifts, self.patch)
        inp = self.runner.inputs[0]
        self.input_name = inp.name
        # a graph exported at a fixed resolution (e.g. for TensorRT) takes only that size
        hw = list(inp.shape[2:4]) if len(inp.shape) == 4 else []
        self.fixed_hw = tuple(int(v) for v in hw) if len(hw) == 2 and all(
            isinstance(v, int) and v > 0 for v in hw) else None
        if self.fixed_hw and (self.fixed_hw[0] % self.patch or self.fixed_hw[1] % self.patch):
            raise InputError(f"{self.path} takes {self.fixed_hw} input, not a multiple of the "
                             f"patch size {self.patch}")
        outs = [o.name for o in self.runner.outputs]
        self.output_name = output or ("features" if "features" in outs else outs[0])
        if self.output_name not in outs:
            raise InputError(f"{self.path} has no output {self.output_name!r} (has {outs})")
        dim = self._feature_dim(meta)
        if isinstance(identity, BackboneIdentity):
            self.identity = identity
        else:
            # flipped / shifted features are combinations: a bank of them says so
            self.identity = BackboneIdentity(
                name=(identity or self.path.stem) + view_suffix(self.flip, self.shifts),
                input_size=self.input_size_tag,
                patch_size=self.patch, feature_dim=dim,
                weights_sha256=weights_sha256 or _sha256(self.path))

    @property
    def input_size_tag(self) -> str:
        return input_size_tag(self.policy, self.short_side, self.fixed_hw, self.pixels,
                              self.normalize)

    def _feature_dim(self, meta) -> int:
        o = next(o for o in self.runner.outputs if o.name == self.output_name)
        if len(o.shape) == 4 and isinstance(o.shape[1], int):
            return int(o.shape[1])
        if "moduseg.feature_dim" in meta:
            return int(meta["moduseg.feature_dim"])
        h, w = self.fixed_hw or (self.patch, self.patch)
        x = np.zeros((1, 3, h, w), np.float32)
        return int(self._run(x).shape[1])

    def _run(self, x: np.ndarray) -> np.ndarray:
        """The graph on one prepared input: its feature output."""
        return self.runner.run({self.input_name: x}, [self.output_name])[self.output_name]

    def close(self) -> None:
        self.runner.close()

    def geometry(self, image_hw) -> GridGeometry:
        return plan_geometry(image_hw, self.patch, self.short_side, self.policy, self.fixed_hw,
                             self.pixels)

    def prepare(self, image: np.ndarray) -> tuple[np.ndarray, GridGeometry]:
        """The checked frame as the graph's input (resized, normalised, padded) and where
        its patches lie; ``__call__`` runs the graph on it (benchmarks time the two apart)."""
        image = check_image(image)
        geo = self.geometry(image.shape[:2])
        return preprocess(image, geo, self.mean, self.std, self.normalize), geo

    @property
    def views(self) -> bool:
        """Whether a frame takes more than one pass of the graph (``flip``, ``shifts``)."""
        return self.flip or self.shifts is not None

    def __call__(self, image: np.ndarray) -> FeatureMap:
        x, geo = self.prepare(image)
        # the mirror and the half-patch shifted passes (views.py); one pass without them
        y = view_features(self._run, x, self.patch, self.flip, self.shifts)
        if self.shifts:
            geo = fine_geometry(geo)
        if y.ndim != 4 or tuple(y.shape[2:]) != geo.grid_hw:
            raise InputError(
                f"{self.path}: output {self.output_name} has shape {y.shape}, expected a "
                f"[1, D, {geo.grid_hw[0]}, {geo.grid_hw[1]}] grid for patch {self.patch}; "
                f"is this a patch-feature graph (moduseg export backbone)?")
        return FeatureMap(np.ascontiguousarray(y[0], dtype=np.float32), geo)

    def __repr__(self) -> str:
        return (f"OnnxBackbone({self.path.name}, {self.identity.name}, "
                f"{self.input_size_tag}, patch={self.patch}, dim={self.identity.feature_dim})")
