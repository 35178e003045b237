"""SMFA on the GPU (``smfa.cu``), and the pooler the runtime calls on any machine.

``make_smfa_pooler(prefer)`` returns a callable
``(masks, features, geometry=None) -> (vectors [P, D] float32, weight_sums [P])``:
the CUDA kernels when a GPU, driver and NVRTC are usable, otherwise the numpy
``moduseg.smfa`` path (after one ``RuntimeWarning`` per process saying why).
``features`` is a ``FeatureMap``, a host array with a geometry, or
``DeviceFeatures``: a device pointer straight from an engine's output binding
([D, h, w] or [h, w, D], fp16 or fp32), so features never leave the GPU.
``masks`` is a host array (bool/uint8) or ``DeviceMasks`` (uint8 on the GPU).

The expected device cost of both launches (a memory / FLOP estimate, not a
measurement) is derived in ``runtime/cuda/README.md``.

``benchmark`` measures both launches with CUDA events (needs a GPU).
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass

import numpy as np

from ...errors import BackendUnavailableError, InputError, NoGpuError
from ...types import FeatureMap, GridGeometry
from ..pooling import HostPooler
from .device import BufferCache
from .plans import check_geometry, check_masks, feature_strides, smfa_plan

log = logging.getLogger(__name__)
_FALLBACK_WARNED = False


@dataclass(frozen=True)
class DeviceFeatures:
    """Patch features already on the GPU (e.g. a TensorRT output binding).

    ``ptr`` is a device address valid in the current context; ``shape`` is
    ``[D, h, w]`` for ``layout="dhw"`` or ``[h, w, D]`` for ``layout="hwd"``
    (offset ``ptr`` past a class token first); ``dtype`` is float16/float32.
    """

    ptr: int
    shape: tuple[int, int, int]
    dtype: str
    geometry: GridGeometry
    layout: str = "dhw"

    def __post_init__(self):
        if self.dtype not in ("float16", "float32"):
            raise InputError(f"DeviceFeatures.dtype must be float16 or float32, got {self.dtype!r}")
        _, _, _, hw = feature_strides(tuple(self.shape), self.layout)
        if tuple(hw) != tuple(self.geometry.grid_hw):
            raise InputError(f"DeviceFeatures grid {hw} does not match geometry grid "
                             f"{self.geometry.grid_hw}")


@dataclass(frozen=True)
class DeviceMasks:
    """Proposal masks already on the GPU: ``uint8 [P, Hm, Wm]``, C-contiguous, values 0/1.

    For proposers that threshold on the device; skips the host upload, which
    is the largest cost of the GPU path for full-resolution masks.
    """

    ptr: int
    shape: tuple[int, int, int]

    def __post_init__(self):
        if len(self.shape) != 3 or min(self.shape[1:]) <= 0 or self.shape[0] < 0:
            raise InputError(f"DeviceMasks.shape must be [P, H, W], got {self.shape}")


def _resolve_features(features, geometry):
    """-> (host array or DeviceFeatures, geometry, layout)."""
    if isinstance(features, FeatureMap):
        return features.features, features.geometry, "dhw"
    if isinstance(features, DeviceFeatures):
        return features, features.geometry, features.layout
    if isinstance(features, np.ndarray):
        if geometry is None:
            raise InputError("a bare feature array needs its GridGeometry: pass geometry=")
        return features, geometry, "dhw"
    raise InputError(f"features must be a FeatureMap, a [D, h, w] array or DeviceFeatures, "
                     f"got {type(features).__name__}")


class GpuSmfa:
    """The two SMFA launches on one device, with buffers reused across calls."""

    def __init__(self, device=None, eps: float = 1e-6):
        from .device import open_device

        self.dev = device if device is not None else open_device(0)
        self.eps = float(eps)
        self.f_weights = self.dev.function("smfa", "smfa_weights")
        self.f_pool = {"float32": self.dev.function("smfa", "smfa_pool_f32"),
                       "float16": self.dev.function("smfa", "smfa_pool_f16")}
        self._bufs = BufferCache(self.dev)

    def describe(self) -> str:
        ck = self.dev.compiled["smfa"]
        return (f"{self.dev!r}; smfa.cu compiled by NVRTC {ck.nvrtc_version[0]}."
                f"{ck.nvrtc_version[1]} ({ck.nvrtc_origin})")

    def enqueue(self, masks_ptr: int, mask_shape, feat_ptr: int, dtype: str, layout: str,
                D: int, geometry: GridGeometry) -> SmfaPlanBuffers:
        """Both launches on the device stream; inputs already on the device."""
        P, hm, wm = mask_shape
        (rh, rw), (gh, gw), patch = geometry.resized_hw, geometry.grid_hw, geometry.patch
        N = gh * gw
        _, sd, sn, _ = feature_strides((D, gh, gw) if layout == "dhw" else (gh, gw, D), layout)
        plan = smfa_plan(P, D, N)
        w = self._bufs.get("weights", P * N * 4)
        ws, ar, n2 = self._bufs.get("wsum", P * 4), self._bufs.get("area", P * 4), self._bufs.get("norm2", P * 4)
        cnt = self._bufs.get("counters", plan.tiles * 4)
        out = self._bufs.get("out", P * D * 4)
        i, ll, f = ctypes.c_int, ctypes.c_longlong, ctypes.c_float
        self.dev.launch(self.f_weights, plan.weights_grid, plan.weights_block,
                        [masks_ptr, i(P), i(hm), i(wm), i(rh), i(rw), i(gh), i(gw), i(patch),
                         w.ptr, ws.ptr, ar.ptr, n2.ptr, cnt.ptr])
        self.dev.launch(self.f_pool[dtype], plan.pool_grid, plan.pool_block,
                        [w.ptr, ws.ptr, feat_ptr, ll(sd), ll(sn), i(P), i(D), i(N), f(self.eps),
                         out.ptr, n2.ptr, cnt.ptr])
        return SmfaPlanBuffers(out.ptr, ws.ptr, ar.ptr)

    def run(self, masks, features, geometry: GridGeometry | None = None):
        """-> (vectors ``[P, D]`` float32 L2-normalised, weight sums ``[P]``, pixel counts ``[P]`` uint32)."""
        feats, geometry, layout = _resolve_features(features, geometry)
        if isinstance(masks, DeviceMasks):
            m, shape = None, masks.shape
        else:
            m = check_masks(masks)
            shape = m.shape
        P = shape[0]
        check_geometry(shape[1:], geometry)
        if isinstance(feats, DeviceFeatures):
            D, dtype, feat_ptr = feature_strides(tuple(feats.shape), layout)[0], feats.dtype, feats.ptr
        else:
            a = np.ascontiguousarray(feats if feats.dtype in (np.float16, np.float32)
                                     else feats.astype(np.float32))
            D, dtype = feature_strides(a.shape, layout)[0], str(a.dtype)
            fb = self._bufs.get("features", a.nbytes)
            self.dev.upload(fb, a)
            feat_ptr = fb.ptr
        if P == 0:
            return np.zeros((0, D), np.float32), np.zeros(0, np.float32), np.zeros(0, np.uint32)
        if m is None:
            masks_ptr = masks.ptr
        else:
            mb = self._bufs.get("masks", m.nbytes)
            self.dev.upload(mb, m)
            masks_ptr = mb.ptr
        res = self.enqueue(masks_ptr, shape, feat_ptr, dtype, layout, D, geometry)
        vec = self.dev.download(res.out, np.empty((P, D), np.float32))
        wsum = self.dev.download(res.wsum, np.empty(P, np.float32))
        area = self.dev.download(res.area, np.empty(P, np.uint32))
        return vec, wsum, area

    def __call__(self, masks, features, geometry: GridGeometry | None = None):
        vec, wsum, _ = self.run(masks, features, geometry)
        return vec, wsum

    # ---- the runtime's ``Pooler`` protocol (``moduseg.runtime.pooling``) ----
    backend = "gpu"

    def pool(self, masks, keep, row_span, fmap: FeatureMap, eps: float):
        """SMFA queries of the kept masks; features from the engine's buffer when there."""
        if float(eps) != self.eps:
            self.eps = float(eps)
        feats = fmap.device if fmap.device is not None else fmap
        return self(np.ascontiguousarray(masks[keep]), feats, fmap.geometry)

    def patch_vote(self, masks, keep, row_span, fmap: FeatureMap, cell_labels, n_classes: int):
        """The patch vote on the device: the weights kernel, then the pooling kernel
        over one-hot patch labels ``[C, h, w]`` gives each mask's per-class weight
        share (normalised; the squared norm it divided by restores the share).
        Only the ``[K, C]`` result comes back for the arg-max."""
        m = np.ascontiguousarray(masks[keep])
        K = len(m)
        h, w = fmap.geometry.grid_hw
        labels = np.asarray(cell_labels).reshape(-1)
        onehot = np.zeros((n_classes, h * w), np.float32)
        ok = np.flatnonzero(labels >= 0)
        onehot[labels[ok], ok] = 1.0
        if K == 0:
            return np.zeros(0, np.int32), np.zeros(0, np.float32), np.zeros(0, np.float32)
        vec, wsum, _ = self.run(m, onehot.reshape(n_classes, h, w), fmap.geometry)
        norm = np.sqrt(self.dev.download(self._bufs["norm2"], np.empty(K, np.float32)))
        winner = vec.argmax(1).astype(np.int32)
        best = vec[np.arange(K), winner]
        share = best * np.maximum(norm, 1e-12) * (wsum + self.eps) / np.maximum(wsum, 1e-12)
        winner = np.where(best > 0, winner, -1)
        return winner, share.astype(np.float32), wsum


@dataclass(frozen=True)
class SmfaPlanBuffers:
    out: int
    wsum: int
    area: int


class _HostPooler(HostPooler):
    """The numpy path, callable like ``GpuSmfa`` (``masks, features, geometry``)."""

    def __init__(self, fn):
        self._fn = fn

    def __call__(self, masks, features, geometry: GridGeometry | None = None):
        return self._fn(masks, features, geometry)


def cpu_pooler(eps: float = 1e-6):
    """The numpy reference path with the pooler's signature (and the ``Pooler`` protocol)."""
    from ...smfa import smfa

    def pool(masks, features, geometry: GridGeometry | None = None):
        feats, geometry, _ = _resolve_features(features, geometry)
        if isinstance(masks, DeviceMasks):
            raise InputError("masks are on the GPU but the CPU SMFA path is in use; copy them "
                             "to the host or use prefer='gpu'")
        if isinstance(feats, DeviceFeatures):
            raise InputError("features are on the GPU but the CPU SMFA path is in use; "
                             "copy them to the host (a FeatureMap) or use prefer='gpu'")
        fmap = features if isinstance(features, FeatureMap) else FeatureMap(
            np.asarray(feats, np.float32), geometry)
        return smfa(np.asarray(masks), fmap, "soft", eps)

    return _HostPooler(pool)


def _warn_fallback(reason: str) -> None:
    global _FALLBACK_WARNED
    if not _FALLBACK_WARNED:
        _FALLBACK_WARNED = True
        log.warning("GPU SMFA unavailable, using the CPU path: %s", reason)  # one line


def make_smfa_pooler(prefer: str = "auto", device: int = 0, eps: float = 1e-6):
    """``prefer``: ``auto`` (GPU if usable, else CPU: silently on a machine without a GPU,
    with one warning when a GPU is there but unusable), ``gpu`` (or raise), ``cpu``."""
    if prefer not in ("auto", "gpu", "cpu"):
        raise InputError(f"SMFA backend must be auto, gpu or cpu, got {prefer!r}")
    if prefer == "cpu":
        return cpu_pooler(eps)
    try:
        from .device import open_device

        gpu = GpuSmfa(open_device(device), eps)
    except BackendUnavailableError as e:
        if prefer == "gpu":
            raise
        if isinstance(e, NoGpuError):  # a CPU machine: auto means CPU, nothing to say
            log.debug("no GPU for SMFA, using the CPU path: %s", e)
        else:
            _warn_fallback(str(e))
        return cpu_pooler(eps)
    return gpu


def benchmark(P: int = 200, D: int = 1152, grid_hw=(32, 32), mask_hw=(512, 512), patch: int = 16,
              dtype: str = "float16", repeats: int = 50, seed: int = 0) -> dict:
    """Device time of the two SMFA launches (CUDA events), inputs already on the GPU."""
    gpu = GpuSmfa()
    rng = np.random.default_rng(seed)
    geo = GridGeometry.unpadded(mask_hw, grid_hw, patch)
    masks = (rng.random((P, *mask_hw)) < 0.3).astype(np.uint8)
    feats = rng.standard_normal((D, *grid_hw)).astype(dtype)
    gpu.run(masks, feats, geo)                          # uploads both into the reused buffers
    mptr, fptr = gpu._bufs["masks"].ptr, gpu._bufs["features"].ptr
    times = gpu.dev.time_ms(lambda: gpu.enqueue(mptr, masks.shape, fptr, dtype, "dhw", D, geo),
                            repeats=repeats)
    t = np.asarray(times)
    return {"device": gpu.describe(), "P": P, "D": D, "grid": list(grid_hw),
            "mask_hw": list(mask_hw), "dtype": dtype, "median_ms": float(np.median(t)),
            "min_ms": float(t.min()), "repeats": repeats}
