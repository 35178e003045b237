"""Device timing with CUDA events (cuda-python), and whether a GPU is here at all.

On the CPU the benchmarks use ``moduseg.timing.StageTimer`` (a monotonic
clock). On a GPU, ``CudaEventTimer`` records a pair of events on the stream
around each stage and reads ``cudaEventElapsedTime`` once at the end, so the
device work of a stage is charged to it without a synchronise per stage.
Everything imports lazily: no driver, no error until a timer is asked for.
"""

from __future__ import annotations

from contextlib import contextmanager

from ..errors import BackendUnavailableError


def _check(result, what: str):
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise BackendUnavailableError(f"CUDA {what} failed: {err}")
    return rest[0] if len(rest) == 1 else rest


def gpu_status() -> dict:
    """``{"available": bool, "count": int, "reason": str}`` without raising."""
    try:
        from ..runtime.trt import _cudart     # the one place cuda-python is found
        cudart = _cudart()
        err, n = cudart.cudaGetDeviceCount()
        if int(err) != 0:
            return {"available": False, "count": 0,
                    "reason": f"needs an NVIDIA GPU and driver: cudaGetDeviceCount -> {err}"}
        return {"available": n > 0, "count": int(n),
                "reason": "" if n else "needs an NVIDIA GPU: no CUDA device found"}
    except BackendUnavailableError as e:
        return {"available": False, "count": 0, "reason": str(e)}
    except Exception as e:  # a broken driver install
        return {"available": False, "count": 0, "reason": f"{type(e).__name__}: {e}"}


class CudaEventTimer:
    """``StageTimer``-compatible: ``with timer("stage"):`` ... ``timer.as_dict()``.

    Events are recorded on ``stream`` (0 = the legacy default stream; pass the
    stream your kernels and ONNX Runtime/TensorRT use). Host-side time between
    two events is included when the device idles, so a stage's figure is its
    wall time on the device timeline.
    """

    def __init__(self, stream=0):
        status = gpu_status()
        if not status["available"]:
            raise BackendUnavailableError(status["reason"])
        from ..runtime.trt import _cudart
        self.cudart = _cudart()
        self.stream = stream
        self._pairs: list[tuple[str, object, object]] = []

    def _event(self):
        return _check(self.cudart.cudaEventCreate(), "cudaEventCreate")

    @contextmanager
    def __call__(self, stage: str):
        start, end = self._event(), self._event()
        _check(self.cudart.cudaEventRecord(start, self.stream), "cudaEventRecord")
        try:
            yield
        finally:
            _check(self.cudart.cudaEventRecord(end, self.stream), "cudaEventRecord")
            self._pairs.append((stage, start, end))

    def as_dict(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for stage, start, end in self._pairs:
            _check(self.cudart.cudaEventSynchronize(end), "cudaEventSynchronize")
            ms = _check(self.cudart.cudaEventElapsedTime(start, end), "cudaEventElapsedTime")
            out[stage] = out.get(stage, 0.0) + float(ms)
        return out

    def close(self) -> None:
        for _, start, end in self._pairs:
            self.cudart.cudaEventDestroy(start)
            self.cudart.cudaEventDestroy(end)
        self._pairs.clear()


def make_timer(device: str = "cpu"):
    """A CUDA-event timer for ``device="cuda"`` (raises without a GPU), else ``StageTimer``."""
    if device == "cuda":
        return CudaEventTimer()
    from ..timing import StageTimer
    return StageTimer()
