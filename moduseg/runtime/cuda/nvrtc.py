"""Run-time compilation of the CUDA kernels with NVRTC, cached on disk.

Several NVRTC libraries can be installed side by side, and they differ in
which GPU architectures they accept: NVRTC 13 (``cuda.bindings.nvrtc`` with
the ``nvidia-cuda-nvrtc`` wheel) dropped Volta/Xavier (sm_72), which NVRTC 12
(``nvidia-cuda-nvrtc-cu12`` wheel, or JetPack's libnvrtc) still compiles. So
compilation goes through a list of compilers: ``cuda.bindings.nvrtc`` first,
then every other ``libnvrtc.so.*`` found in the installed NVIDIA wheels or a
system CUDA, driven through its stable C API with ctypes. The first one that
supports the requested architecture (and is not newer than the driver, when a
limit is given) compiles; the result names it. Nothing here needs a GPU or
a driver.

Compiled images are cached as ``<cache>/<kernel>-sm<NN>-nvrtc<M.m>-<sha>.cubin``
where the hash covers the source text and the compile options.
"""

from __future__ import annotations

import ctypes
import glob
import hashlib
import logging
import os
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ...errors import BackendUnavailableError, InputError, OutputError
from ...owned import atomic_path

log = logging.getLogger(__name__)
KERNEL_DIR = Path(__file__).resolve().parent
TARGET_ARCHS = (72, 75, 80, 86, 87, 89, 90)   # Xavier, T4/Turing, A100, RTX30, Orin, RTX40/L4, H100
BASE_OPTIONS = ("-default-device", "--std=c++14", "-lineinfo")


@dataclass(frozen=True)
class CompiledKernel:
    """A compiled module image and how it was made."""

    name: str
    arch: int
    image: bytes           # CUBIN (ELF) for exactly `arch`
    nvrtc_version: tuple[int, int]
    nvrtc_origin: str      # which library compiled it
    cache_path: Path | None
    from_cache: bool


class _Compiler:
    """One NVRTC library: version, supported archs, compile to CUBIN."""

    origin: str
    version: tuple[int, int]
    archs: tuple[int, ...]

    def compile(self, source: bytes, name: str, options: list[bytes]) -> tuple[int, bytes, str]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"NVRTC {self.version[0]}.{self.version[1]} ({self.origin})"


class _BindingsCompiler(_Compiler):
    """NVRTC through ``cuda.bindings.nvrtc``."""

    def __init__(self):
        from cuda.bindings import nvrtc

        self.nv = nvrtc
        err, major, minor = nvrtc.nvrtcVersion()
        self._ok(err, "nvrtcVersion")
        err, archs = nvrtc.nvrtcGetSupportedArchs()
        self._ok(err, "nvrtcGetSupportedArchs")
        self.version, self.archs = (int(major), int(minor)), tuple(int(a) for a in archs)
        self.origin = "cuda.bindings.nvrtc"

    def _ok(self, err, what):
        if err != self.nv.nvrtcResult.NVRTC_SUCCESS:
            raise BackendUnavailableError(f"{what} failed: {err}")

    def compile(self, source, name, options):
        nv = self.nv
        err, prog = nv.nvrtcCreateProgram(source, name.encode(), 0, [], [])
        self._ok(err, "nvrtcCreateProgram")
        try:
            (cerr,) = nv.nvrtcCompileProgram(prog, len(options), options)
            _, n = nv.nvrtcGetProgramLogSize(prog)
            log = b" " * n
            nv.nvrtcGetProgramLog(prog, log)
            if cerr != nv.nvrtcResult.NVRTC_SUCCESS:
                return int(cerr), b"", log.decode(errors="replace")
            _, n = nv.nvrtcGetCUBINSize(prog)
            cubin = b" " * n
            (err,) = nv.nvrtcGetCUBIN(prog, cubin)
            self._ok(err, "nvrtcGetCUBIN")
            return 0, cubin, log.decode(errors="replace")
        finally:
            nv.nvrtcDestroyProgram(prog)


class _CtypesCompiler(_Compiler):
    """NVRTC through its C API in a given ``libnvrtc.so`` (stable across versions)."""

    def __init__(self, path: str):
        lib = ctypes.CDLL(path)
        self.lib, self.origin = lib, path
        a, b = ctypes.c_int(), ctypes.c_int()
        if lib.nvrtcVersion(ctypes.byref(a), ctypes.byref(b)) != 0:
            raise BackendUnavailableError(f"nvrtcVersion failed in {path}")
        self.version = (a.value, b.value)
        n = ctypes.c_int()
        if hasattr(lib, "nvrtcGetNumSupportedArchs") and \
                lib.nvrtcGetNumSupportedArchs(ctypes.byref(n)) == 0:
            arr = (ctypes.c_int * n.value)()
            lib.nvrtcGetSupportedArchs(arr)
            self.archs = tuple(int(x) for x in arr)
        else:                                   # NVRTC < 11.2: no query; assume Volta..Ampere
            self.archs = (70, 72, 75, 80, 86, 87)
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p

    def compile(self, source, name, options):
        lib = self.lib
        prog = ctypes.c_void_p()
        err = lib.nvrtcCreateProgram(ctypes.byref(prog), source, name.encode(), 0, None, None)
        if err:
            raise BackendUnavailableError(
                f"nvrtcCreateProgram failed in {self.origin}: {lib.nvrtcGetErrorString(err)}")
        try:
            opts = (ctypes.c_char_p * len(options))(*options)
            cerr = lib.nvrtcCompileProgram(prog, len(options), opts)
            n = ctypes.c_size_t()
            lib.nvrtcGetProgramLogSize(prog, ctypes.byref(n))
            log = ctypes.create_string_buffer(n.value)
            lib.nvrtcGetProgramLog(prog, log)
            text = log.value.decode(errors="replace")
            if cerr:
                return int(cerr), b"", text
            lib.nvrtcGetCUBINSize(prog, ctypes.byref(n))
            buf = ctypes.create_string_buffer(n.value)
            if lib.nvrtcGetCUBIN(prog, buf):
                raise BackendUnavailableError(f"nvrtcGetCUBIN failed in {self.origin}")
            return 0, buf.raw, text
        finally:
            lib.nvrtcDestroyProgram(ctypes.byref(prog))


def _library_candidates() -> list[str]:
    """``libnvrtc.so.<major>`` files from NVIDIA wheels and system CUDA installs."""
    roots = [Path(p) for p in sys.path if p and os.path.isdir(p)]
    pats = []
    for r in roots:
        pats += [str(r / "nvidia" / "cuda_nvrtc" / "lib" / "libnvrtc.so.*"),
                 str(r / "nvidia" / "cu*" / "lib" / "libnvrtc.so.*")]
    pats += ["/usr/local/cuda/lib64/libnvrtc.so.*", "/usr/local/cuda-*/lib64/libnvrtc.so.*",
             "/usr/lib/aarch64-linux-gnu/libnvrtc.so.*", "/usr/lib/x86_64-linux-gnu/libnvrtc.so.*"]
    found, real = [], set()
    for pat in pats:
        for p in sorted(glob.glob(pat)):
            # libnvrtc.so.12, or CUDA 11's libnvrtc.so.11.2 (not builtins, not libnvrtc.alt.so)
            if re.fullmatch(r"libnvrtc\.so\.\d+(\.\d+)?", os.path.basename(p)) \
                    and os.path.realpath(p) not in real:
                real.add(os.path.realpath(p))
                found.append(p)
    return found


@lru_cache(maxsize=1)
def available_compilers() -> tuple[_Compiler, ...]:
    """Every usable NVRTC here, ``cuda.bindings.nvrtc`` first, then newest version first."""
    out: list[_Compiler] = []
    try:
        out.append(_BindingsCompiler())
    except Exception as e:  # noqa: BLE001 - cuda-python missing or its NVRTC unloadable
        log.debug("cuda.bindings.nvrtc unusable: %s", e)
    seen = {c.version for c in out}
    others = []
    for path in _library_candidates():
        try:
            c = _CtypesCompiler(path)
        except (OSError, BackendUnavailableError):
            continue
        if c.version not in seen:
            seen.add(c.version)
            others.append(c)
    out += sorted(others, key=lambda c: c.version, reverse=True)
    return tuple(out)


def describe_compilers() -> str:
    cs = available_compilers()
    if not cs:
        return "no NVRTC found (pip install cuda-python nvidia-cuda-nvrtc-cu12)"
    return "; ".join(f"{c!r} archs {list(c.archs)}" for c in cs)


def choose_compiler(arch: int, max_version: tuple[int, int] | None = None) -> _Compiler:
    """The first NVRTC that can compile ``sm_<arch>`` (and is not newer than ``max_version``)."""
    cs = available_compilers()
    for c in cs:
        if arch in c.archs and (max_version is None or c.version[0] <= max_version[0]):
            return c
    limit = f" with major version <= {max_version[0]} (the driver's CUDA version)" \
        if max_version else ""
    if arch < 75 and not any(c.version[0] == 12 for c in cs):
        hint = "install nvidia-cuda-nvrtc-cu12 (NVRTC 12 still targets sm_72)"
    elif arch < 50:
        hint = "this GPU is older than any NVRTC here supports (CUDA 11 dropped sm_3x)"
    else:
        hint = "install an nvidia-cuda-nvrtc wheel whose version lists this architecture"
    raise BackendUnavailableError(
        f"no installed NVRTC{limit} can compile for sm_{arch}: found "
        f"{describe_compilers()}; {hint}")


def kernel_cache_dir() -> Path:
    from ...home import cache_dir

    return cache_dir("cuda")


def kernel_source(name: str) -> bytes:
    path = KERNEL_DIR / f"{name}.cu"
    if not path.is_file():
        raise InputError(f"unknown CUDA kernel {name!r}: {path} does not exist")
    return path.read_bytes()


def compile_kernel(name: str, arch: int, *, cache_dir: Path | str | None = None,
                   max_version: tuple[int, int] | None = None,
                   extra_options: tuple[str, ...] = ()) -> CompiledKernel:
    """``runtime/cuda/<name>.cu`` -> CUBIN for ``sm_<arch>``, from the disk cache when present."""
    arch = int(arch)
    source = kernel_source(name)
    compiler = choose_compiler(arch, max_version)
    options = [o.encode() for o in (*BASE_OPTIONS, *extra_options)]
    options.append(f"--gpu-architecture=sm_{arch}".encode())
    digest = hashlib.sha256(source + b"\0" + b" ".join(options)).hexdigest()[:16]
    major, minor = compiler.version
    cache = Path(cache_dir) if cache_dir is not None else kernel_cache_dir()
    path = cache / f"{name}-sm{arch}-nvrtc{major}.{minor}-{digest}.cubin"
    if path.is_file():
        return CompiledKernel(name, arch, path.read_bytes(), compiler.version,
                              compiler.origin, path, True)
    err, image, log = compiler.compile(source, f"{name}.cu", options)
    if err:
        raise BackendUnavailableError(
            f"{compiler!r} failed to compile {name}.cu for sm_{arch} (error {err}):\n{log}")
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(image)
    except (OSError, OutputError):                              # read-only home: compile every time
        path = None
    return CompiledKernel(name, arch, image, compiler.version, compiler.origin, path, False)
