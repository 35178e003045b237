"""A patch-feature backbone run natively by TensorRT (cuda-python, no torch).

Same contract as ``OnnxBackbone`` (and its preprocessing function, so grids
line up identically): uint8 RGB image -> ``FeatureMap`` with exact
``GridGeometry``. Engines built from a fixed-size graph (e.g. RADIO at
512x512) place the image into that input (``pad``: aspect kept, top-left,
zero padding; ``stretch``: resized to it); engines with dynamic H/W use
``plan_geometry`` like the ONNX backend and must fit the build profile.
``device_features`` leaves the features on the GPU for the GPU SMFA path.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from ...errors import BackendUnavailableError, InputError
from ...types import BackboneIdentity, FeatureMap, GridGeometry
from ...io import check_image
from .onnx_backbone import (DEFAULT_PIXELS, DEFAULT_SHORT_SIDE, POLICIES,
                            check_normalize, input_size_tag, plan_geometry, preprocess,
                            resolve_sizing)
from .views import check_shifts, fine_geometry, view_features, view_suffix


def plan_fixed_geometry(image_hw, input_hw, patch: int, policy: str = "pad") -> GridGeometry:
    """Where an image goes in a fixed ``input_hw`` network input (pure)."""
    ih, iw = int(input_hw[0]), int(input_hw[1])
    if ih % patch or iw % patch:
        raise InputError(f"engine input {ih}x{iw} is not a multiple of the patch {patch}")
    return plan_geometry(image_hw, patch, policy=policy, fixed_hw=(ih, iw))


class TensorRTBackbone:
    """``Backbone`` on a TensorRT engine built by ``moduseg export engine``.

    ``engine``: the ``.engine`` file (its sidecar JSON must sit beside it).
    Mean/std/patch come from the ONNX metadata recorded in the sidecar
    (graphs from ``moduseg export backbone`` take [0,1] input: mean 0, std 1).
    ``identity`` defaults to the *ONNX* file's checksum, so a bank built with
    the ONNX Runtime backend on the same graph is accepted here. ``runners``
    (``runtime.runners.RunnerFactory``) opens the engine; by default a
    ``TrtEngineRunner`` with ``device``, ``validate`` and ``cuda_graph``.
    """

    def __init__(self, engine: str | Path, identity: BackboneIdentity | str | None = None,
                 short_side: int | None = DEFAULT_SHORT_SIDE, policy: str = "pad",
                 device: int = 0, cuda_graph: bool = False, output: str | None = None,
                 mean=None, std=None, validate: bool = True,
                 pixels: int | None = DEFAULT_PIXELS, normalize: str = "dataset",
                 runners=None, flip: bool = False, shifts: str | None = None):
        from ..runners import TrtEngineRunner, input_names, output_names

        if policy not in POLICIES:
            raise InputError(f"policy must be one of {POLICIES}, got {policy!r}")
        self.short_side, self.pixels = resolve_sizing(short_side, pixels)
        if runners is None:
            self.runner = TrtEngineRunner(engine, device=device, validate=validate,
                                          cuda_graph=cuda_graph)
        else:
            self.runner = runners(engine, "backbone")
        self.path = Path(engine)
        side = getattr(self.runner, "sidecar", None)
        meta = dict(self.runner.metadata)
        self.metadata = meta
        if len(self.runner.inputs) != 1:
            raise InputError(f"{self.path.name} has inputs {input_names(self.runner)}; a "
                             f"backbone engine has one image input")
        self.input_name = self.runner.inputs[0].name
        outs = output_names(self.runner)
        self.output_name = output or ("features" if "features" in outs else outs[0])
        if self.output_name not in outs:
            raise InputError(f"{self.path.name} has no output {self.output_name!r} ({outs})")
        self.patch = int(meta.get("patch_size", 14))
        self.flip = bool(flip)
        self.shifts = check_shifts(shifts, self.patch)
        self.mean = tuple(mean or json.loads(meta.get("mean", "[0.485, 0.456, 0.406]")))
        self.std = tuple(std or json.loads(meta.get("std", "[0.229, 0.224, 0.225]")))
        shape = self.runner.inputs[0].shape
        self.fixed_hw = None if min(shape[2:]) < 0 else (int(shape[2]), int(shape[3]))
        self.policy = policy
        self.normalize = check_normalize(normalize)
        out = next(o for o in self.runner.outputs if o.name == self.output_name)
        dim = int(meta.get("feature_dim") or out.shape[1])
        if isinstance(identity, BackboneIdentity):
            self.identity = identity
        else:
            sha = side.key.onnx_sha256 if side is not None else ""
            self.identity = BackboneIdentity(
                name=(identity or (Path(side.onnx_path).stem if side else self.path.stem))
                + view_suffix(self.flip, self.shifts),
                input_size=self.input_size_tag, patch_size=self.patch, feature_dim=dim,
                weights_sha256=sha)

    @classmethod
    def from_options(cls, home=None, engine: str | Path | None = None, precision: str = "fp16",
                     layers=None, cache_dir: str | Path | None = None, device: int = 0,
                     runners=None, **opts) -> "TensorRTBackbone":
        """The default backbone (or ``layers`` variant) from the engine cache.

        ``engine`` names an engine file directly; otherwise the newest cached
        engine built from the installed ONNX graph for this GPU, TensorRT and
        ``precision`` is used. Its identity is the ONNX backend's, so banks
        built on CPU work unchanged.
        """
        from ..engine_cache import cached_engines, current_device, engine_cache_dir
        from ...models.defaults import (BACKBONE, default_backbone_identity, installed_file,
                                        layer_variant)

        opts.pop("providers", None)
        opts.pop("threads", None)
        opts.pop("weights_sha256", None)
        if engine is None:
            if layers:
                onnx_path, name = layer_variant(layers, home)
                identity = opts.pop("identity", name)
            else:
                onnx_path = installed_file(BACKBONE.key, "features", home)
                identity = opts.pop("identity", None) or dataclasses.replace(
                    default_backbone_identity(home), input_size=None)
            dev = current_device(device)
            found = cached_engines(cache_dir or engine_cache_dir(home), onnx_path, dev,
                                   precision)
            if not found:
                raise BackendUnavailableError(
                    f"no {precision} TensorRT engine of {onnx_path} for {dev.name} (TensorRT "
                    f"{dev.trt_version}) in the engine cache; build one with 'moduseg export "
                    f"engine {onnx_path} --precision {precision} --min-shape 1x3x224x224 "
                    f"--opt-shape 1x3x364x490 --max-shape 1x3x1008x1008'")
            engine = found[0]
        else:
            identity = opts.pop("identity", None)
        bb = cls(engine, identity=None if isinstance(identity, BackboneIdentity) else identity,
                 device=device, runners=runners, **opts)
        if isinstance(identity, BackboneIdentity):
            # keep the ONNX backend's identity but this backend's input-size tag must agree
            # (the installed model's identity takes this backend's sizing options)
            if identity.input_size is None:
                identity = dataclasses.replace(identity, input_size=bb.input_size_tag)
            # the views' features are combinations: the name says so, as the ONNX one's does
            identity = dataclasses.replace(
                identity, name=identity.name + view_suffix(bb.flip, bb.shifts))
            if identity.input_size != bb.input_size_tag:
                raise InputError(
                    f"the engine's input size {bb.input_size_tag} differs from the default "
                    f"backbone's {identity.input_size}; pass matching backbone options")
            bb.identity = identity
        return bb

    @classmethod
    def try_from_options(cls, home=None, **opts) -> "TensorRTBackbone | None":
        """``from_options`` or None when TensorRT, a GPU or a cached engine is missing
        (for ``--backend auto``)."""
        from ...errors import ModelNotFoundError

        try:
            return cls.from_options(home=home, **opts)
        except (BackendUnavailableError, ModelNotFoundError):
            return None

    @property
    def input_size_tag(self) -> str:
        return input_size_tag(self.policy, self.short_side, self.fixed_hw, self.pixels,
                              self.normalize)

    def geometry(self, image_hw) -> GridGeometry:
        if self.fixed_hw:
            return plan_fixed_geometry(image_hw, self.fixed_hw, self.patch, self.policy)
        return plan_geometry(image_hw, self.patch, self.short_side, self.policy,
                             pixels=self.pixels)

    def prepare(self, image: np.ndarray) -> tuple[np.ndarray, GridGeometry]:
        """``OnnxBackbone.prepare``: the graph's input and the grid geometry."""
        image = check_image(image)
        geo = self.geometry(image.shape[:2])
        return preprocess(image, geo, self.mean, self.std, self.normalize), geo

    @property
    def views(self) -> bool:
        """Whether a frame takes more than one pass of the engine (``flip``, ``shifts``)."""
        return self.flip or self.shifts is not None

    def _run_host(self, x: np.ndarray) -> np.ndarray:
        """One pass of the engine on a prepared input, copied to the host."""
        return self.runner.to_host(self.runner.run_device({self.input_name: x})[self.output_name])

    def device_features(self, image: np.ndarray):
        """(``DeviceTensor`` [1, D, h, w] on the GPU, ``GridGeometry``): no host copy.
        One pass only: the views (``flip``, ``shifts``) are combined on the host."""
        if self.views:
            raise InputError("backbone.flip / backbone.shifts features are combined on the "
                             "host: call the backbone, not device_features")
        x, geo = self.prepare(image)
        out = self.runner.run_device({self.input_name: x})[self.output_name]
        if tuple(out.shape[2:]) != geo.grid_hw:
            raise InputError(f"{self.path.name}: output {out.shape} does not match the grid "
                             f"{geo.grid_hw}")
        return out, geo

    def gpu_features(self, image: np.ndarray):
        """``DeviceFeatures`` for the GPU SMFA pooler (``moduseg.runtime.cuda.smfa_gpu``).

        The pointer refers to this backbone's output buffer: valid until the next
        call on this backbone (the pooler must run before the next frame's features).
        """
        from ..cuda.smfa_gpu import DeviceFeatures

        dev, geo = self.device_features(image)
        _, d, h, w = dev.shape
        return DeviceFeatures(ptr=int(dev.ptr), shape=(int(d), int(h), int(w)),
                              dtype=np.dtype(dev.dtype).name, geometry=geo, layout="dhw")

    def __call__(self, image: np.ndarray) -> FeatureMap:
        """Host features, plus ``device``: the same features in the engine's output
        buffer, which a GPU pooler reads in place (valid until the next call)."""
        from ..cuda.smfa_gpu import DeviceFeatures

        if self.views:
            # the same engine on each view, combined on the host (views.py); a GPU pooler
            # uploads these features (FeatureMap.device is None)
            x, geo = self.prepare(image)
            y = view_features(self._run_host, x, self.patch, self.flip, self.shifts)
            geo = fine_geometry(geo) if self.shifts else geo
            if tuple(y.shape[2:]) != geo.grid_hw:
                raise InputError(f"{self.path.name}: output {y.shape} does not match the "
                                 f"grid {geo.grid_hw}")
            return FeatureMap(np.ascontiguousarray(y[0], dtype=np.float32), geo)
        dev, geo = self.device_features(image)
        y = self.runner.to_host(dev)
        _, d, h, w = dev.shape
        on_gpu = DeviceFeatures(ptr=int(dev.ptr), shape=(int(d), int(h), int(w)),
                                dtype=np.dtype(dev.dtype).name, geometry=geo, layout="dhw")
        return FeatureMap(np.ascontiguousarray(y[0], dtype=np.float32), geo, device=on_gpu)

    def close(self) -> None:
        self.runner.close()

    def __repr__(self) -> str:
        return (f"TensorRTBackbone({self.path.name}, {self.identity.name}, "
                f"{self.input_size_tag}, patch={self.patch}, dim={self.identity.feature_dim})")
