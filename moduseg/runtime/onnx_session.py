"""ONNX Runtime sessions: provider choice and CPU tuning in one place."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import BackendUnavailableError, ModelNotFoundError

PROVIDER_ALIASES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
SPIN_DEFAULT = False

AUTO_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def choose_providers(requested: str = "auto") -> list[str]:
    """``auto`` -> the best available of TensorRT, CUDA, CPU; else exactly what was asked."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if requested == "auto":
        chosen = [p for p in AUTO_ORDER if p in available]
        return chosen or ["CPUExecutionProvider"]
    names = []
    for r in requested.split(","):
        name = PROVIDER_ALIASES.get(r.strip().lower(), r.strip())
        if name not in available:
            raise BackendUnavailableError(
                f"ONNX Runtime provider {r!r} is not available here (available: "
                f"{available}); install onnxruntime-gpu for CUDA/TensorRT or use 'cpu'")
        names.append(name)
    if "CPUExecutionProvider" not in names:
        names.append("CPUExecutionProvider")
    return names


def make_session(path: str | Path, providers: str = "auto", threads: int | None = None,
                 spin: bool | None = None):
    """A session with full graph optimisation and sensible CPU threading.

    ``threads`` defaults to the number of usable cores; inter-op parallelism
    stays at 1 because our graphs are sequential and extra pools only contend.
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(
            f"ONNX model {path} does not exist; run 'moduseg models pull' or pass the "
            f"right path")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or len(os.sched_getaffinity(0))
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Idle worker threads spin by default; when two sessions share the cores (the
    # backbone and the proposer run side by side) spinning steals the other's time.
    spin = SPIN_DEFAULT if spin is None else spin
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    providers = choose_providers(providers)
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as e:  # ORT raises its own Fail/InvalidProtobuf/... types
        if type(e).__module__.startswith("onnxruntime"):
            raise ModelNotFoundError(
                f"ONNX model {path} cannot be loaded ({type(e).__name__}); it is truncated, "
                f"corrupt or not an ONNX model: run 'moduseg models pull --force' or pass "
                f"the right file") from None
        raise
