"""``--device``: the spelling users bring from other tools (``cpu``, ``cuda``, ``gpu``,
``cuda:0``, ``0``), mapped to the ``--backend`` that does it.

ModuSeg picks engines by ``--backend`` (cpu, cuda, tensorrt, tensorrt-native, auto);
a device is one half of that choice, so ``--device`` maps to the backend that runs on
that device, and says in one line what to do where there is no such backend.
"""

from __future__ import annotations

import re

from .errors import InputError
from .registry import BACKENDS
_CUDA = re.compile(r"^(?:cuda|gpu)(?::(\d+))?$|^(\d+)$")


def backend_for_device(device: str) -> str:
    """``cpu`` -> cpu; ``cuda``, ``gpu``, ``cuda:0``, ``gpu:0``, ``0`` -> cuda; ``auto`` ->
    auto; another GPU index, or a device ModuSeg has no backend for, -> ``InputError``
    naming what to type instead."""
    shown = str(device).strip()      # the message stays one line whatever was typed
    spec = shown.lower()
    if spec in ("cpu", "auto"):
        return spec
    if spec in BACKENDS:            # --device tensorrt: a backend given here still works
        return spec
    m = _CUDA.match(spec)
    if m:
        index = int(m.group(1) or m.group(2) or 0)
        if index == 0:
            return "cuda"
        raise InputError(
            f"--device {shown}: ModuSeg runs on the first visible GPU; to use GPU {index} "
            f"run with CUDA_VISIBLE_DEVICES={index} and --device cuda")
    if spec in ("mps", "metal", "rocm", "hip", "xpu", "tpu", "npu", "opencl", "vulkan"):
        raise InputError(f"--device {shown}: there is no {spec} backend; use --device cpu "
                         f"(or cuda / --backend tensorrt on an NVIDIA GPU)")
    raise InputError(f"--device {device!r} is not a device; use cpu, cuda (gpu, cuda:0) or "
                     f"auto (--backend also takes tensorrt and tensorrt-native)")


def resolve_backend_option(backend: str | None, device: str | None,
                           default: str = "auto") -> str:
    """The backend a command runs on, from ``--backend`` and ``--device`` (either may be
    unset; when both are given they must agree)."""
    if device is None:
        return backend or default
    mapped = backend_for_device(device)
    if backend is not None and backend != mapped:
        raise InputError(f"--device {device} means --backend {mapped}, but --backend {backend} "
                         f"was also given; give one of them")
    return mapped
