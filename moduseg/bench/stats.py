"""Summaries of timing samples and a record of the machine they came from."""

from __future__ import annotations

import os
import platform
from importlib import metadata

import numpy as np


def summarize(samples_ms) -> dict:
    """Median, p90, p99, mean, min and count of a list of milliseconds."""
    x = np.asarray(list(samples_ms), dtype=np.float64)
    if x.size == 0:
        return {"n": 0, "median": None, "p90": None, "p99": None, "mean": None, "min": None}
    return {"n": int(x.size), "median": round(float(np.median(x)), 4),
            "p90": round(float(np.percentile(x, 90)), 4),
            "p99": round(float(np.percentile(x, 99)), 4),
            "mean": round(float(x.mean()), 4), "min": round(float(x.min()), 4)}


def summarize_stages(per_frame: list[dict[str, float]], order=None) -> dict:
    """``[{stage: ms}]`` per frame -> ``{stage: summary}`` plus ``total``.

    ``total`` is the frame's own wall time when the pipeline recorded one (the
    proposer runs beside the backbone, so stages overlap), else the sum of stages.
    """
    stages = [s for s in (order or []) if s != "total"]
    for d in per_frame:
        stages += [k for k in d if k not in stages and k != "total"]
    out = {s: summarize(d[s] for d in per_frame if s in d) for s in stages
           if any(s in d for d in per_frame)}
    out["total"] = summarize(d["total"] if "total" in d else sum(d.values())
                             for d in per_frame)
    return out


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict:
    import cv2
    out = {"python": platform.python_version(), "numpy": np.__version__,
           "opencv": cv2.__version__}
    for key, dists in {"moduseg": ["moduseg"], "faiss": ["faiss-cpu", "faiss-gpu", "faiss"],
                       "onnxruntime": ["onnxruntime", "onnxruntime-gpu"],
                       "torch": ["torch"], "cuda-python": ["cuda-python"],
                       "nvidia-ml-py": ["nvidia-ml-py"], "tensorrt": ["tensorrt"]}.items():
        out[key] = next((v for v in map(_version, dists) if v), None)
    return out


def thread_info() -> dict:
    info = {"cpu_count": os.cpu_count()}
    try:
        import faiss
        info["faiss_omp_threads"] = int(faiss.omp_get_max_threads())
    except ImportError:
        pass
    try:
        import cv2
        info["opencv_threads"] = int(cv2.getNumThreads())
    except Exception:  # pragma: no cover - cv2 is a hard dependency
        pass
    try:
        from threadpoolctl import threadpool_info
        info["blas"] = sorted({f"{d['internal_api']}:{d['num_threads']}"
                               for d in threadpool_info()})
    except ImportError:
        pass
    return info


def machine_info() -> dict:
    import psutil
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = None
    from .gpu import gpu_status
    return {"cpu_model": cpu_model(), "cores_logical": psutil.cpu_count(),
            "cores_physical": psutil.cpu_count(logical=False),
            "ram_gib": round(psutil.virtual_memory().total / 2 ** 30, 2),
            "platform": platform.platform(), "load_average_1_5_15": load,
            "gpu": gpu_status(), "threads": thread_info(), "versions": versions()}


def set_threads(n: int | None) -> None:
    """Pin BLAS, OpenMP (faiss), OpenCV and ONNX Runtime defaults to ``n`` threads.

    On a shared CPU, fewer threads than cores often wins: spinning OpenMP/BLAS
    workers that lose their core stall every barrier.
    """
    if not n:
        return
    import cv2
    cv2.setNumThreads(int(n))
    try:
        import faiss
        faiss.omp_set_num_threads(int(n))
    except ImportError:
        pass
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(int(n))
    except ImportError:
        pass
