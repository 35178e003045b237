"""Bank search on the GPU: faiss-gpu when installed, else an NVRTC top-K kernel.

Kinds and the ``auto`` rule are the CPU path's (``runtime/index.py``:
``choose_kind``, ``ivf_params``), mapped to GPU indexes:

* ``flat``      -> ``GpuIndexFlatIP`` (float32 storage)
* ``flat_fp16`` -> ``GpuIndexFlatIP`` with float16 storage
* ``ivf``       -> ``GpuIndexIVFScalarQuantizer`` (fp16 codes,
  ``nlist = min(sqrt(n), 1024)``, ``nprobe = min(32, nlist)``)

Without faiss-gpu (Jetson wheels have none) the bank is uploaded once and
searched exactly by ``cuda/topk.cu`` (inner products + per-query top-K,
K <= 32): fp32 storage for ``flat``, fp16 for ``flat_fp16`` and ``ivf``
(an exact scan replaces IVF there: better recall, linear cost). Every index
answers ``search(queries, k) -> (sims [Q, k'], ids [Q, k'])`` with
``k' = min(k, n)``, like ``runtime.index.SearchIndex``. ``make_index``
returns a GPU index when one is usable and the CPU index otherwise, saying so
once per process.
"""

from __future__ import annotations

import ctypes
import logging

import numpy as np

from ..errors import BackendUnavailableError, InputError, NoGpuError
from .cuda.device import BufferCache
from .index import build_index, choose_kind, ivf_params

log = logging.getLogger(__name__)
_FALLBACK_WARNED = False
BACKENDS = ("auto", "faiss", "nvrtc")


def _check_vectors(vectors) -> np.ndarray:
    x = np.asarray(vectors)
    if x.ndim != 2 or len(x) == 0:
        raise InputError(f"cannot index an empty bank (vectors shape {x.shape})")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise InputError("bank vectors contain NaN or infinite values; rebuild the bank")
    return x


def _check_queries(queries, dim: int, k: int) -> np.ndarray:
    if k <= 0:
        raise InputError(f"top-K must be positive, got {k}")
    q = np.asarray(queries)
    if q.ndim != 2 or q.shape[1] != dim:
        raise InputError(f"queries must be [Q, {dim}] to match the bank, got {q.shape}; the "
                         f"backbone's feature dim differs from the bank's")
    return np.ascontiguousarray(q, dtype=np.float32)


def faiss_gpu_available() -> tuple[bool, str]:
    try:
        import faiss
    except ImportError:
        return False, "faiss is not installed"
    if not hasattr(faiss, "StandardGpuResources"):
        return False, "the installed faiss has no GPU support (faiss-cpu)"
    try:
        n = faiss.get_num_gpus()
    except Exception as e:  # noqa: BLE001 - any failure means "no GPU faiss"
        return False, f"faiss.get_num_gpus failed: {e}"
    return (n > 0, f"faiss-gpu sees {n} GPU(s)")


class FaissGpuIndex:
    """A faiss GPU index of one of the CPU path's kinds."""

    backend = "faiss-gpu"

    def __init__(self, vectors, kind: str = "auto", nprobe: int = 32, device: int = 0,
                 seed: int = 0):
        import faiss

        ok, why = faiss_gpu_available()
        if not ok:
            raise BackendUnavailableError(f"faiss-gpu unusable: {why}; pip install faiss-gpu "
                                          f"(x86 CUDA) or use the NVRTC top-K backend")
        x = _check_vectors(vectors)
        n, d = x.shape
        self.kind, self.size, self.dim = choose_kind(n, kind), n, d
        self.res = faiss.StandardGpuResources()
        if self.kind in ("flat", "flat_fp16"):
            cfg = faiss.GpuIndexFlatConfig()
            cfg.device = device
            cfg.useFloat16 = self.kind == "flat_fp16"
            self.index = faiss.GpuIndexFlatIP(self.res, d, cfg)
        elif self.kind == "ivf":
            nlist, probe = ivf_params(n, nprobe)
            cfg = faiss.GpuIndexIVFScalarQuantizerConfig()
            cfg.device = device
            self.index = faiss.GpuIndexIVFScalarQuantizer(
                self.res, d, nlist, faiss.ScalarQuantizer.QT_fp16,
                faiss.METRIC_INNER_PRODUCT, True, cfg)
            rng = np.random.default_rng(seed)
            train = x if n <= 256 * nlist else x[rng.choice(n, 256 * nlist, replace=False)]
            self.index.train(train)
            if hasattr(self.index, "setNumProbes"):      # faiss < 1.7.3
                self.index.setNumProbes(probe)
            else:
                self.index.nprobe = probe
        else:
            raise InputError(f"unknown index kind {kind!r}; choose auto, flat, flat_fp16 or ivf")
        self.index.add(x)

    def search(self, queries, k: int):
        q = _check_queries(queries, self.dim, k)
        k = min(k, self.size)
        if len(q) == 0:
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
        sims, ids = self.index.search(q, k)
        return sims, ids.astype(np.int64, copy=False)


class NvrtcTopkIndex:
    """Exact inner-product search by ``cuda/topk.cu``; the bank stays on the device."""

    backend = "nvrtc-topk"

    def __init__(self, vectors, kind: str = "auto", device=None, max_segments: int = 64):
        from .cuda.device import open_device

        x = _check_vectors(vectors)
        n, d = x.shape
        self.kind, self.size, self.dim = choose_kind(n, kind), n, d
        if self.kind not in ("flat", "flat_fp16", "ivf"):
            raise InputError(f"unknown index kind {kind!r}; choose auto, flat, flat_fp16 or ivf")
        if self.kind == "ivf":
            log.info("no faiss-gpu: the %d-vector bank is searched exactly (fp16) instead of IVF", n)
        self.dev = device if device is not None else open_device(0)
        self.dtype = "float32" if self.kind == "flat" else "float16"
        self.f_partial = self.dev.function("topk", "topk_partial_f32" if self.dtype == "float32"
                                           else "topk_partial_f16")
        self.f_merge = self.dev.function("topk", "topk_merge")
        stored = x.astype(self.dtype)
        self.bank = self.dev.alloc(stored.nbytes)
        self.dev.upload(self.bank, stored)
        self.max_segments = max_segments
        self._bufs = BufferCache(self.dev)

    def enqueue(self, q_ptr: int, Q: int, k: int):
        """Search ``Q`` fp32 queries already on the device (e.g. GPU SMFA output)."""
        from .cuda.plans import topk_plan

        plan = topk_plan(Q, self.size, k, self.max_segments)
        ps, pi = self._bufs.get("part_s", Q * plan.nseg * k * 4), self._bufs.get("part_i", Q * plan.nseg * k * 4)
        os_, oi = self._bufs.get("out_s", Q * k * 4), self._bufs.get("out_i", Q * k * 4)
        c = ctypes.c_int
        self.dev.launch(self.f_partial, plan.partial_grid, plan.partial_block,
                        [q_ptr, c(Q), self.bank.ptr, c(self.size), c(self.dim), c(k),
                         c(plan.rows_per_seg), ps.ptr, pi.ptr])
        self.dev.launch(self.f_merge, plan.merge_grid, plan.merge_block,
                        [ps.ptr, pi.ptr, c(Q), c(plan.nseg), c(k), os_.ptr, oi.ptr])
        return os_, oi

    def search(self, queries, k: int):
        q = _check_queries(queries, self.dim, k)
        k = min(k, self.size)
        if len(q) == 0:
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
        qb = self._bufs.get("queries", q.nbytes)
        self.dev.upload(qb, q)
        os_, oi = self.enqueue(qb.ptr, len(q), k)
        sims = self.dev.download(os_, np.empty((len(q), k), np.float32))
        ids = self.dev.download(oi, np.empty((len(q), k), np.int32))
        return sims, ids.astype(np.int64)


def build_gpu_index(vectors, kind: str = "auto", nprobe: int = 32, device: int = 0,
                    backend: str = "auto"):
    """faiss-gpu if usable (``backend`` auto/faiss), else the NVRTC kernel (auto/nvrtc)."""
    if backend not in BACKENDS:
        raise InputError(f"GPU index backend must be one of {BACKENDS}, got {backend!r}")
    reasons, no_gpu = [], False
    if backend in ("auto", "faiss"):
        try:
            return FaissGpuIndex(vectors, kind, nprobe, device)
        except BackendUnavailableError as e:
            if backend == "faiss":
                raise
            reasons.append(str(e))
    try:
        from .cuda.device import open_device

        return NvrtcTopkIndex(vectors, kind, open_device(device))
    except BackendUnavailableError as e:
        reasons.append(f"NVRTC top-K: {e}")
        no_gpu = isinstance(e, NoGpuError)
    raise (NoGpuError if no_gpu else BackendUnavailableError)(
        "no GPU search backend is usable: " + "; ".join(reasons))


def make_index(vectors, kind: str = "auto", nprobe: int = 32, prefer: str = "auto",
               device: int = 0):
    """``prefer``: ``auto`` (GPU if usable, else CPU faiss with one warning), ``gpu``, ``cpu``."""
    if prefer not in ("auto", "gpu", "cpu"):
        raise InputError(f"index backend must be auto, gpu or cpu, got {prefer!r}")
    if prefer == "cpu":
        return build_index(vectors, kind, nprobe)
    try:
        return build_gpu_index(vectors, kind, nprobe, device)
    except BackendUnavailableError as e:
        if prefer == "gpu":
            raise
        global _FALLBACK_WARNED
        if isinstance(e, NoGpuError):  # a CPU machine: auto means CPU, nothing to say
            log.debug("no GPU for search, using the CPU faiss index: %s", e)
        elif not _FALLBACK_WARNED:
            _FALLBACK_WARNED = True
            log.warning("GPU search unavailable, using the CPU faiss index: %s", e)
        return build_index(vectors, kind, nprobe)
