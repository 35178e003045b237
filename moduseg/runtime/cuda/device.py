"""The CUDA driver through ``cuda.bindings.driver``: device, buffers, modules, launches.

Everything a kernel wrapper needs and nothing more. The driver is imported
and initialised lazily; when the driver library, a device or cuda-python is
missing, ``open_device`` raises ``BackendUnavailableError`` saying which.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from functools import cache

import numpy as np

from ...errors import BackendUnavailableError, NoGpuError
from .nvrtc import CompiledKernel, compile_kernel


def _driver():
    try:
        from cuda.bindings import driver
    except ImportError as e:
        raise NoGpuError(
            f"cuda-python is not installed ({e}); pip install cuda-python") from None
    return driver


def check(result, what: str = "CUDA call"):
    """Unpack a ``cuda.bindings`` result tuple, raising on any error code."""
    d = _driver()
    err, *rest = result if isinstance(result, tuple) else (result,)
    if err != d.CUresult.CUDA_SUCCESS:
        try:
            _, name = d.cuGetErrorName(err)
            name = name.decode() if isinstance(name, bytes) else str(name)
        except Exception:  # noqa: BLE001 - the name is only for the message
            name = str(err)
        raise BackendUnavailableError(f"{what} failed: {name}")
    return rest[0] if len(rest) == 1 else (tuple(rest) if rest else None)


@dataclass
class DeviceBuffer:
    """Device memory owned by a ``CudaDevice`` (freed with it or by ``free``)."""

    ptr: int
    nbytes: int


class BufferCache:
    """Named device buffers reused across calls, reallocated only when too small."""

    def __init__(self, dev):
        self.dev = dev
        self.bufs: dict[str, DeviceBuffer] = {}

    def get(self, name: str, nbytes: int):
        b = self.bufs.get(name)
        if b is None or b.nbytes < nbytes:
            if b is not None:
                self.dev.free(b)
            b = self.bufs[name] = self.dev.alloc(max(nbytes, 256))
        return b

    def __getitem__(self, name: str):
        return self.bufs[name]


class CudaDevice:
    """One GPU: its primary context, a stream, and loaded kernel modules."""

    def __init__(self, ordinal: int = 0, cache_dir=None):
        d = _driver()
        try:
            (err,) = d.cuInit(0)
        except Exception as e:  # noqa: BLE001 - pathfinder raises its own types when libcuda is missing
            raise NoGpuError(
                f"no NVIDIA driver: {e.__class__.__name__}: {str(e).rstrip('.')}. Install the NVIDIA driver "
                f"(or JetPack on Jetson); the CPU path is used otherwise") from None
        if err != d.CUresult.CUDA_SUCCESS:
            raise NoGpuError(
                f"cuInit failed ({err}): no usable NVIDIA GPU or driver on this machine")
        count = check(d.cuDeviceGetCount(), "cuDeviceGetCount")
        if count <= ordinal:
            raise (NoGpuError if count == 0 else BackendUnavailableError)(
                f"CUDA device {ordinal} requested but {count} device(s) present")
        self.d = d
        self.dev = check(d.cuDeviceGet(ordinal), "cuDeviceGet")
        attr = d.CUdevice_attribute
        major = check(d.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, self.dev))
        minor = check(d.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, self.dev))
        self.arch = int(major) * 10 + int(minor)
        name = check(d.cuDeviceGetName(256, self.dev), "cuDeviceGetName")
        self.name = name.split(b"\0")[0].decode(errors="replace") if isinstance(name, bytes) else str(name)
        v = int(check(d.cuDriverGetVersion(), "cuDriverGetVersion"))
        self.driver_version = (v // 1000, (v % 1000) // 10)
        self.ctx = check(d.cuDevicePrimaryCtxRetain(self.dev), "cuDevicePrimaryCtxRetain")
        self.ordinal = ordinal
        self.activate()
        self.stream = check(d.cuStreamCreate(d.CUstream_flags.CU_STREAM_NON_BLOCKING.value), "cuStreamCreate")
        self.cache_dir = cache_dir
        self.compiled: dict[str, CompiledKernel] = {}
        self._modules: dict[str, object] = {}
        self._functions: dict[tuple[str, str], object] = {}

    def __repr__(self) -> str:
        return (f"CudaDevice({self.ordinal}: {self.name}, sm_{self.arch}, driver CUDA "
                f"{self.driver_version[0]}.{self.driver_version[1]})")

    def activate(self) -> None:
        check(self.d.cuCtxSetCurrent(self.ctx), "cuCtxSetCurrent")

    # ---- modules -----------------------------------------------------------
    def function(self, module: str, name: str):
        """``CUfunction`` ``name`` from ``runtime/cuda/<module>.cu`` compiled for this device."""
        key = (module, name)
        if key not in self._functions:
            if module not in self._modules:
                ck = compile_kernel(module, self.arch, cache_dir=self.cache_dir,
                                    max_version=self.driver_version)
                self.compiled[module] = ck
                self.activate()
                self._modules[module] = check(self.d.cuModuleLoadData(ck.image),
                                              f"cuModuleLoadData({module}, sm_{self.arch})")
            self._functions[key] = check(
                self.d.cuModuleGetFunction(self._modules[module], name.encode()),
                f"cuModuleGetFunction({name})")
        return self._functions[key]

    def launch(self, fn, grid: tuple[int, int], block: int, args: list) -> None:
        """Launch with ``args`` given as ctypes scalars (pointers as ``c_void_p``)."""
        holders = [a if isinstance(a, ctypes._SimpleCData) else ctypes.c_void_p(int(a)) for a in args]
        params = (ctypes.c_void_p * len(holders))(*[ctypes.addressof(h) for h in holders])
        check(self.d.cuLaunchKernel(fn, int(grid[0]), int(grid[1]), 1, int(block), 1, 1, 0,
                                    self.stream, ctypes.addressof(params), 0), "cuLaunchKernel")

    # ---- memory --------------------------------------------------------------
    def alloc(self, nbytes: int) -> DeviceBuffer:
        ptr = check(self.d.cuMemAlloc(max(int(nbytes), 4)), f"cuMemAlloc({nbytes} bytes)")
        return DeviceBuffer(int(ptr), int(nbytes))

    def free(self, buf: DeviceBuffer) -> None:
        if buf.ptr:
            check(self.d.cuMemFree(buf.ptr), "cuMemFree")
            buf.ptr = 0

    def upload(self, buf: DeviceBuffer, array: np.ndarray) -> None:
        a = np.ascontiguousarray(array)
        if a.nbytes > buf.nbytes:
            raise BackendUnavailableError(f"upload of {a.nbytes} bytes into a {buf.nbytes}-byte buffer")
        if a.nbytes:
            check(self.d.cuMemcpyHtoDAsync(buf.ptr, a.ctypes.data, a.nbytes, self.stream), "cuMemcpyHtoDAsync")
            self.synchronize()   # pageable host memory: keep `a` alive until copied

    def download(self, buf: DeviceBuffer | int, out: np.ndarray) -> np.ndarray:
        ptr = buf.ptr if isinstance(buf, DeviceBuffer) else int(buf)
        if out.nbytes:
            check(self.d.cuMemcpyDtoHAsync(out.ctypes.data, ptr, out.nbytes, self.stream), "cuMemcpyDtoHAsync")
        self.synchronize()
        return out

    def synchronize(self) -> None:
        check(self.d.cuStreamSynchronize(self.stream), "cuStreamSynchronize")

    # ---- timing ---------------------------------------------------------------
    def time_ms(self, fn, repeats: int = 20, warmup: int = 3) -> list[float]:
        """Per-call times of ``fn()`` (which enqueues work on this stream) by CUDA events."""
        d = self.d
        for _ in range(warmup):
            fn()
        self.synchronize()
        start = check(d.cuEventCreate(0), "cuEventCreate")
        end = check(d.cuEventCreate(0), "cuEventCreate")
        times = []
        try:
            for _ in range(repeats):
                check(d.cuEventRecord(start, self.stream), "cuEventRecord")
                fn()
                check(d.cuEventRecord(end, self.stream), "cuEventRecord")
                check(d.cuEventSynchronize(end), "cuEventSynchronize")
                times.append(float(check(d.cuEventElapsedTime(start, end), "cuEventElapsedTime")))
        finally:
            d.cuEventDestroy(start)
            d.cuEventDestroy(end)
        return times


@cache
def open_device(ordinal: int = 0) -> CudaDevice:
    """The process-wide ``CudaDevice`` for ``ordinal`` (raises ``BackendUnavailableError``)."""
    return CudaDevice(ordinal)


def gpu_available(ordinal: int = 0) -> tuple[bool, str]:
    """``(True, description)`` when a device can be opened, else ``(False, reason)``."""
    try:
        return True, repr(open_device(ordinal))
    except BackendUnavailableError as e:
        return False, str(e)
