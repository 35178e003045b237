"""Run the CUDA kernels on the CPU: the same ``.cu`` source, built by g++.

``emulator_host.cu`` defines the CUDA built-ins (thread/block indices,
``__shared__``, ``__syncthreads`` as a fiber switch, atomics, half
conversion), includes ``smfa.cu`` and ``topk.cu`` unchanged and exposes one C
entry per kernel. ``Emulator`` launches them over the grids of ``plans`` with
host buffers, exactly as ``smfa_gpu``/``gpu_index`` do on a device. Tests use
this to check the kernels' indexing and arithmetic against ``moduseg.smfa``
and exact numpy search without a GPU. Not for production: it is slow.
"""

from __future__ import annotations

import ctypes
import hashlib
import shutil
import subprocess
from pathlib import Path

import numpy as np

from ...errors import BackendUnavailableError
from ...owned import atomic_path
from ...types import GridGeometry
from .nvrtc import KERNEL_DIR
from .plans import check_geometry, check_masks, feature_strides, smfa_plan, topk_plan

SOURCES = ("emulator_host.cu", "smfa.cu", "topk.cu")
CXXFLAGS = ("-O2", "-std=c++17", "-fno-strict-aliasing", "-shared", "-fPIC", "-x", "c++")


def build_emulator(cache_dir: str | Path, cxx: str | None = None,
                   source_dir: str | Path | None = None) -> Path:
    """Compile the emulator shared library once per source hash into ``cache_dir``.

    ``source_dir`` (default: this package) holds the three ``SOURCES``.
    """
    src = Path(source_dir) if source_dir is not None else KERNEL_DIR
    cxx = cxx or shutil.which("g++") or shutil.which("c++")
    if not cxx:
        raise BackendUnavailableError("the CUDA emulator needs a C++ compiler (apt install g++)")
    digest = hashlib.sha256(b"".join((src / s).read_bytes() for s in SOURCES)
                            + " ".join(CXXFLAGS).encode()).hexdigest()[:16]
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    out = cache / f"moduseg_cuda_emu-{digest}.so"
    if out.is_file():
        return out
    with atomic_path(out) as tmp:
        cmd = [cxx, *CXXFLAGS, str(src / "emulator_host.cu"), "-o", str(tmp)]
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if r.returncode:
            raise BackendUnavailableError(
                f"building the CUDA emulator failed:\n{' '.join(cmd)}\n{r.stderr}")
    return out


def _ptr(a: np.ndarray):
    return a.ctypes.data_as(ctypes.c_void_p)


class Emulator:
    """The kernels of ``smfa.cu``/``topk.cu`` run on the host over an emulated grid."""

    def __init__(self, library: str | Path, seed: int = 0):
        self.lib = ctypes.CDLL(str(library))
        self.seed = seed
        vp, i, ll, f, u = ctypes.c_void_p, ctypes.c_int, ctypes.c_longlong, ctypes.c_float, ctypes.c_uint
        dims = [u, u, u, u]
        self.lib.emu_smfa_weights.argtypes = dims + [vp, i, i, i, i, i, i, i, i, vp, vp, vp, vp, vp]
        for n in ("emu_smfa_pool_f32", "emu_smfa_pool_f16"):
            getattr(self.lib, n).argtypes = dims + [vp, vp, vp, ll, ll, i, i, i, f, vp, vp, vp]
        for n in ("emu_topk_partial_f32", "emu_topk_partial_f16"):
            getattr(self.lib, n).argtypes = dims + [vp, i, vp, i, i, i, i, vp, vp]
        self.lib.emu_topk_merge.argtypes = dims + [vp, vp, i, i, i, vp, vp]
        self.lib.emu_barrier_count.restype = ll

    def barriers(self) -> int:
        """``__syncthreads`` calls executed so far (shows the barriers really ran)."""
        return int(self.lib.emu_barrier_count())

    def _dims(self, grid, block):
        self.seed += 1
        return (grid[0], grid[1], block, self.seed)

    def smfa(self, masks, features: np.ndarray, geometry: GridGeometry, eps: float = 1e-6,
             layout: str = "dhw"):
        """Masks ``[P,Hm,Wm]`` + features (fp16/fp32, ``layout``) -> (vectors, weight sums, areas)."""
        m = check_masks(masks)
        P, hm, wm = m.shape
        check_geometry((hm, wm), geometry)
        feats = np.ascontiguousarray(features)
        if feats.dtype not in (np.float16, np.float32):
            feats = feats.astype(np.float32)
        D, sd, sn, grid_hw = feature_strides(feats.shape, layout)
        if tuple(grid_hw) != tuple(geometry.grid_hw):
            raise ValueError(f"features grid {grid_hw} != geometry grid {geometry.grid_hw}")
        (rh, rw), (gh, gw), patch = geometry.resized_hw, geometry.grid_hw, geometry.patch
        N = gh * gw
        plan = smfa_plan(P, D, N)
        weights = np.zeros((N, P), np.float32)
        wsum, norm2 = np.zeros(P, np.float32), np.zeros(P, np.float32)
        area = np.zeros(P, np.uint32)
        counters = np.full(plan.tiles, 12345, np.uint32)     # the weights kernel must zero these
        out = np.full((P, D), np.nan, np.float32)
        if P == 0:
            return out, wsum, area
        self.lib.emu_smfa_weights(*self._dims(plan.weights_grid, plan.weights_block),
                                  _ptr(m), P, hm, wm, rh, rw, gh, gw, patch,
                                  _ptr(weights), _ptr(wsum), _ptr(area), _ptr(norm2), _ptr(counters))
        fn = self.lib.emu_smfa_pool_f16 if feats.dtype == np.float16 else self.lib.emu_smfa_pool_f32
        fn(*self._dims(plan.pool_grid, plan.pool_block), _ptr(weights), _ptr(wsum), _ptr(feats),
           sd, sn, P, D, N, eps, _ptr(out), _ptr(norm2), _ptr(counters))
        self.last_weights = weights.reshape(gh, gw, P).transpose(2, 0, 1)   # kernel stores [N, P]
        return out, wsum, area

    def topk(self, queries: np.ndarray, bank: np.ndarray, k: int, max_segments: int = 64):
        """Exact inner-product top-k of each query row against bank rows (fp16/fp32)."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        b = np.ascontiguousarray(bank)
        if b.dtype not in (np.float16, np.float32):
            b = b.astype(np.float32)
        Q, D = q.shape
        Nb = b.shape[0]
        plan = topk_plan(Q, Nb, k, max_segments)
        part_s = np.full((Q, plan.nseg, k), np.nan, np.float32)
        part_i = np.full((Q, plan.nseg, k), -7, np.int32)
        out_s = np.zeros((Q, k), np.float32)
        out_i = np.full((Q, k), -7, np.int32)
        if Q == 0:
            return out_s, out_i
        fn = self.lib.emu_topk_partial_f16 if b.dtype == np.float16 else self.lib.emu_topk_partial_f32
        fn(*self._dims(plan.partial_grid, plan.partial_block), _ptr(q), Q, _ptr(b), Nb, D, k,
           plan.rows_per_seg, _ptr(part_s), _ptr(part_i))
        self.lib.emu_topk_merge(*self._dims(plan.merge_grid, plan.merge_block), _ptr(part_s),
                                _ptr(part_i), Q, plan.nseg, k, _ptr(out_s), _ptr(out_i))
        return out_s, out_i


class EmulatedDevice:
    """A stand-in for ``device.CudaDevice`` whose launches run in the emulator.

    Same methods (``function``, ``launch``, ``alloc``/``free``,
    ``upload``/``download``, ``synchronize``); "device" pointers are host
    addresses. Lets tests drive ``GpuSmfa`` and ``NvrtcTopkIndex`` (their
    buffer sizes, argument order and launch plans) with no GPU.
    """

    arch = 0
    name = "host emulator"

    def __init__(self, emulator: Emulator):
        self.emu = emulator
        self._keep: dict[int, np.ndarray] = {}
        self.compiled = {m: type("Compiled", (), {"nvrtc_version": (0, 0), "nvrtc_origin": "g++ emulator"})()
                         for m in ("smfa", "topk")}

    def __repr__(self) -> str:
        return "EmulatedDevice(host)"

    def function(self, module: str, name: str):
        return getattr(self.emu.lib, f"emu_{name}")

    def launch(self, fn, grid, block, args) -> None:
        fn(*self.emu._dims(grid, block), *args)

    def alloc(self, nbytes: int):
        from .device import DeviceBuffer

        a = np.full(max(int(nbytes), 4), 0xA5, np.uint8)     # garbage, like cuMemAlloc
        self._keep[a.ctypes.data] = a
        return DeviceBuffer(a.ctypes.data, int(nbytes))

    def free(self, buf) -> None:
        self._keep.pop(buf.ptr, None)
        buf.ptr = 0

    def upload(self, buf, array: np.ndarray) -> None:
        a = np.ascontiguousarray(array)
        assert a.nbytes <= buf.nbytes, "upload overflows the buffer"
        ctypes.memmove(buf.ptr, a.ctypes.data, a.nbytes)

    def download(self, buf, out: np.ndarray) -> np.ndarray:
        ptr = buf.ptr if hasattr(buf, "ptr") else int(buf)
        ctypes.memmove(out.ctypes.data, ptr, out.nbytes)
        return out

    def synchronize(self) -> None:
        pass
