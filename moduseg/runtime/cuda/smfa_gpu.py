"""SMFA on the GPU (``smfa.cu``), and the pooler the runtime calls on any machine.

``make_smfa_pooler(prefer)`` returns a callable
``(masks, features, geometry=None) -> (vectors [P, D] float32, weight_sums [P])``:
the CUDA kernels when a GPU, driver and NVRTC are usable, otherwise the numpy
``moduseg.smfa`` path (after one ``RuntimeWarning`` per process saying why).
``features`` is a ``FeatureMap``, a host array with a geometry, or
``DeviceFeatures``: a device pointer straight from an engine's output binding
([D, h, w] or [h, w, D], fp16 or fp32), so features never leave the GPU.
``masks`` is a host array (bool/uint8) or ``DeviceMasks`` (uint8 on the GPU).

Cost estimate for P = 200 masks of 512 x 512, D = 1152, a 32 x 32 grid
(patch 16), fp16 features (not yet measured on a GPU: see ``benchmark``):

* ``smfa_weights``: reads the masks once, 200 * 512 * 512 B = 52.4 MB
  (a warp is 32 cells of one grid row, so each load instruction covers one
  contiguous 512 B stretch of a mask row, reused from L1 across the cell's
  16 columns); writes 200 * 1024 * 4 B = 0.8 MB of weights. About 3 integer
  ops per pixel (byte test + add; fractional overlaps only on a cell's edge
  rows/columns): 0.16 G ops, far below the memory time. Memory floor:
  0.26 ms on Orin AGX (205 GB/s), 0.38 ms on Xavier AGX (137 GB/s),
  0.17 ms on an L4 (300 GB/s), 0.03-0.06 ms on A100/RTX 3090-class GPUs.
* ``smfa_pool``: a [200 x 1024] x [1024 x 1152] product, 2 * P * N * D =
  0.47 GFLOP. Features (2.4 MB fp16) are re-read by each of the 7 tiles of
  32 masks (16.5 MB, mostly L2 hits), weights by each of the 18 tiles of 64
  dims (14.7 MB from L2), output 0.9 MB written then rescaled in place
  (2.8 MB); DRAM traffic ~4 MB, so it is FMA-bound: 0.09 ms at Orin AGX's
  5.3 TFLOPS fp32 peak, ~0.15-0.25 ms at a realistic 40-60 % (the inner
  loop issues 3 shared loads, two of them float4 broadcasts, per 8 FMAs).
  0.024 ms at an A100's 19.5 TFLOPS peak.
* So ~0.4-0.5 ms of device time on Orin, ~0.1 ms on a server GPU. Uploading
  host masks costs more than both kernels on a discrete GPU (52 MB at
  ~25 GB/s PCIe 4 = 2 ms): keep masks on the device or at the proposer's
  low resolution (256 x 256 is 4x less) where possible.

``benchmark`` measures both launches with CUDA events (needs a GPU).
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass

import numpy as np

from ...errors import BackendUnavailableError, InputError, NoGpuError
from ...types import FeatureMap, GridGeometry
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


@dataclass(frozen=True)
class SmfaPlanBuffers:
    out: int
    wsum: int
    area: int


def cpu_pooler(eps: float = 1e-6):
    """The numpy reference path with the pooler's signature."""
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

    pool.backend = "cpu"
    return pool


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
    gpu.backend = "gpu"
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
