"""Peak host RSS and GPU memory while a block runs, and sizes on disk."""

from __future__ import annotations

import os
import resource
import threading
from pathlib import Path


def rss_mb() -> float:
    import psutil
    return psutil.Process().memory_info().rss / 2 ** 20


def peak_rss_mb() -> float:
    """Lifetime peak RSS of this process (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class Nvml:
    """GPU memory through NVML (nvidia-ml-py); ``available`` is False without a driver."""

    def __init__(self, device: int = 0):
        self.available, self.reason, self._h = False, "", None
        try:
            import pynvml
            pynvml.nvmlInit()
            self._h = pynvml.nvmlDeviceGetHandleByIndex(device)
            self._nvml = pynvml
            self.available = True
        except ImportError:
            self.reason = "nvidia-ml-py is not installed (pip install nvidia-ml-py)"
        except Exception as e:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
            self.reason = f"no NVIDIA driver/GPU: {type(e).__name__}: {e}"

    def used_mb(self) -> float | None:
        """Device memory used by this process if NVML can tell, else by the device."""
        if not self.available:
            return None
        n = self._nvml
        try:
            pid = os.getpid()
            for p in n.nvmlDeviceGetComputeRunningProcesses(self._h):
                if p.pid == pid and p.usedGpuMemory is not None:
                    return p.usedGpuMemory / 2 ** 20
        except Exception:
            pass
        return n.nvmlDeviceGetMemoryInfo(self._h).used / 2 ** 20


class MemorySampler:
    """Samples RSS (and GPU memory) every ``interval`` s in a thread; a context manager.

    ``peak_rss_mb``/``peak_gpu_mb`` are maxima seen during the block,
    ``start_rss_mb`` the RSS when it began.
    """

    def __init__(self, interval: float = 0.02, gpu: bool = True):
        self.interval = interval
        self.nvml = Nvml() if gpu else None
        self.start_rss_mb = self.peak_rss_mb = 0.0
        self.peak_gpu_mb: float | None = None
        self._stop = threading.Event()
        self._t: threading.Thread | None = None

    def _sample(self):
        self.peak_rss_mb = max(self.peak_rss_mb, rss_mb())
        if self.nvml is not None and self.nvml.available:
            g = self.nvml.used_mb()
            if g is not None:
                self.peak_gpu_mb = max(self.peak_gpu_mb or 0.0, g)

    def _run(self):
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self):
        self.start_rss_mb = self.peak_rss_mb = rss_mb()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._t is not None:
            self._t.join()
        self._sample()
        return False

    def as_dict(self) -> dict:
        return {"start_rss_mb": round(self.start_rss_mb, 1),
                "peak_rss_mb": round(self.peak_rss_mb, 1),
                "process_peak_rss_mb": round(peak_rss_mb(), 1),
                "peak_gpu_mb": None if self.peak_gpu_mb is None else round(self.peak_gpu_mb, 1),
                "gpu_note": None if (self.nvml is None or self.nvml.available)
                else self.nvml.reason}


def file_mb(path) -> float | None:
    p = Path(path)
    return round(p.stat().st_size / 2 ** 20, 3) if p.is_file() else None


def model_files(home=None) -> dict:
    """Size on disk of every installed model file (from the model home's manifest)."""
    try:
        from ..home import model_home
        from ..models.pull import read_manifest
        h = model_home(home)
        man = read_manifest(h)
    except Exception as e:
        return {"note": f"no model manifest: {e}"}
    out = {}
    for key, entry in man.get("models", {}).items():
        for role, f in entry.get("files", {}).items():
            out[f"{key}:{role}"] = file_mb(h / f["path"])
    for pattern in ("**/*.engine", "**/*.plan", "**/*.trt"):      # built TensorRT engines
        for p in sorted(h.glob(pattern)):
            out[f"engine:{p.relative_to(h)}"] = file_mb(p)
    return out
