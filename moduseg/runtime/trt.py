"""A TensorRT engine runner on cuda-python: no torch, no pycuda at run time.

One ``TrtRunner`` owns a deserialized engine, an execution context, a CUDA
stream, device buffers per I/O tensor (grown on demand for dynamic shapes)
and pinned host staging buffers. ``run_device`` copies inputs in
asynchronously, enqueues the engine (optionally replayed as a CUDA graph)
and leaves outputs on the device as ``DeviceTensor`` (pointer, shape,
dtype) for the GPU SMFA path; ``run`` also copies them back to numpy.
Backbones and proposers share it. Needs TensorRT >= 8.5 (name-based I/O API).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import BackendUnavailableError, InputError


class CudaError(BackendUnavailableError):
    """A CUDA runtime call failed."""


def _cudart():
    """cuda-python's runtime module (``cuda.bindings.runtime``; ``cuda.cudart`` before
    12.6), or ``BackendUnavailableError`` saying what to install."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python < 12.6 layout
        except ImportError as e:
            raise BackendUnavailableError(
                f"cuda-python is not installed ({e}); 'pip install cuda-python' (12.x for "
                f"CUDA 12 drivers) to run TensorRT engines") from None
    return cudart


def check_cuda(result, what: str):
    """cuda-python returns ``(err, *values)``; raise on error, return the values."""
    cudart = _cudart()
    err, *rest = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        name = getattr(err, "name", str(err))
        _, desc = cudart.cudaGetErrorString(err)
        raise CudaError(f"{what} failed: {name} ({desc.decode() if isinstance(desc, bytes) else desc})")
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else tuple(rest)


@dataclass(frozen=True)
class DeviceTensor:
    """An output left on the GPU: raw device pointer, shape and numpy dtype."""

    name: str
    ptr: int
    shape: tuple[int, ...]
    dtype: np.dtype
    device: int = 0

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


class _Buffer:
    """Device memory plus a pinned host mirror, grown when a larger shape arrives."""

    def __init__(self):
        self.capacity = 0
        self.dptr = 0
        self.hptr = 0

    def ensure(self, nbytes: int) -> bool:
        if nbytes <= self.capacity:
            return False
        self.free()
        cudart = _cudart()
        self.dptr = int(check_cuda(cudart.cudaMalloc(nbytes), "cudaMalloc"))
        self.hptr = int(check_cuda(cudart.cudaMallocHost(nbytes), "cudaMallocHost"))
        self.capacity = nbytes
        return True

    def host_view(self, shape, dtype) -> np.ndarray:
        n = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        raw = (ctypes.c_byte * max(n, 1)).from_address(self.hptr)
        return np.frombuffer(raw, dtype=dtype, count=n // np.dtype(dtype).itemsize).reshape(shape)

    def free(self) -> None:
        if self.capacity:
            cudart = _cudart()
            cudart.cudaFree(self.dptr)
            cudart.cudaFreeHost(self.hptr)
        self.capacity, self.dptr, self.hptr = 0, 0, 0


def ort_tensorrt_options(cache_dir=None, fp16: bool = True, device: int = 0,
                         workspace_mb: int = 4096) -> dict:
    """Provider options for ONNX Runtime's TensorRT execution provider.

    Without an engine cache the provider rebuilds its engines in every new
    session (minutes for a ViT); LayerNorm stays FP32 in FP16 mode. Pass as
    ``providers=[("TensorrtExecutionProvider", opts), "CUDAExecutionProvider", ...]``.
    """
    from .engine_cache import engine_cache_dir

    cache = Path(cache_dir) if cache_dir else engine_cache_dir() / "ort-trt"
    return {"device_id": int(device), "trt_fp16_enable": bool(fp16),
            "trt_layer_norm_fp32_fallback": True,
            "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache),
            "trt_max_workspace_size": int(workspace_mb) << 20}


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as e:
        raise BackendUnavailableError(
            f"TensorRT is not installed ({e}); install 'tensorrt' (x86_64) or JetPack's "
            f"python3-libnvinfer (Jetson), or use --backend cpu or cuda (ONNX Runtime)") from None
    return trt


class TrtRunner:
    """Run a serialized TensorRT engine; validated against its sidecar first.

    ``cuda_graph=True`` captures ``execute_async_v3`` once per input shape and
    replays it (saves launch overhead on Jetson); copies stay outside the graph.
    """

    def __init__(self, engine_path: str | Path, device: int = 0, validate: bool = True,
                 cuda_graph: bool = False, verbose: bool = False):
        trt = import_tensorrt()
        cudart = _cudart()
        from .engine_cache import current_device, validate as validate_engine

        self.path = Path(engine_path)
        self.device = int(device)
        self.sidecar = validate_engine(self.path, current_device(self.device)) if validate \
            else None
        check_cuda(cudart.cudaSetDevice(self.device), f"cudaSetDevice({self.device})")
        self._logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        if self.sidecar is not None and self.sidecar.key.dla_core is not None:
            self._runtime.DLA_core = int(self.sidecar.key.dla_core)
        self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            from .engine_cache import EngineMismatchError

            raise EngineMismatchError(
                f"TensorRT {trt.__version__} could not deserialize {self.path} (built with "
                f"another TensorRT version or for another GPU?); rebuild it with 'moduseg "
                f"export engine MODEL.onnx'")
        self.context = self.engine.create_execution_context()
        self.stream = check_cuda(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self.stream_handle = int(self.stream)  # TensorRT takes the raw cudaStream_t
        self.inputs, self.outputs, self.dtypes = [], [], {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            mode = self.engine.get_tensor_mode(name)
            (self.inputs if mode == trt.TensorIOMode.INPUT else self.outputs).append(name)
            self.dtypes[name] = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
        self._buffers = {n: _Buffer() for n in self.inputs + self.outputs}
        self._shapes: dict[str, tuple[int, ...]] = {}
        self.cuda_graph = bool(cuda_graph)
        self._graph = None
        self._graph_exec = None
        self._graph_key = None

    # ------------------------------------------------------------ introspection
    def engine_shape(self, name: str) -> tuple[int, ...]:
        """Declared shape (-1 on dynamic axes)."""
        return tuple(int(d) for d in self.engine.get_tensor_shape(name))

    def profile_shapes(self, name: str, profile: int = 0):
        """(min, opt, max) of a dynamic input in optimisation profile ``profile``."""
        return tuple(tuple(int(d) for d in s)
                     for s in self.engine.get_tensor_profile_shape(name, profile))

    # ------------------------------------------------------------ running
    def _set_shapes(self, feeds: dict[str, np.ndarray]) -> bool:
        changed = False
        for name in self.inputs:
            if name not in feeds:
                raise InputError(f"engine {self.path.name} needs input {name!r}; got "
                                 f"{sorted(feeds)}")
            shape = tuple(feeds[name].shape)
            if self._shapes.get(name) != shape:
                if not self.context.set_input_shape(name, shape):
                    raise InputError(
                        f"input {name} shape {shape} is outside the engine's profile "
                        f"{self._profile_text(name)}; rebuild with a wider --max-shape")
                self._shapes[name] = shape
                changed = True
        if changed:
            for name in self.outputs:
                self._shapes[name] = tuple(int(d) for d in self.context.get_tensor_shape(name))
        for name in self.inputs + self.outputs:
            nbytes = int(np.prod(self._shapes[name], dtype=np.int64)) * self.dtypes[name].itemsize
            if self._buffers[name].ensure(max(nbytes, 1)):
                changed = True
            self.context.set_tensor_address(name, self._buffers[name].dptr)
        return changed

    def _profile_text(self, name: str) -> str:
        try:
            mn, opt, mx = self.profile_shapes(name)
            return f"min {mn} opt {opt} max {mx}"
        except Exception:  # static input: no profile
            return f"fixed {self.engine_shape(name)}"

    def _enqueue(self, changed: bool) -> None:
        cudart = _cudart()
        if not self.cuda_graph:
            if not self.context.execute_async_v3(self.stream_handle):
                raise CudaError(f"TensorRT execute_async_v3 failed for {self.path.name}")
            return
        key = tuple(self._shapes[n] for n in self.inputs)
        if changed or self._graph_exec is None or key != self._graph_key:
            self._destroy_graph()
            # one plain run first: TensorRT may allocate lazily on the first enqueue
            if not self.context.execute_async_v3(self.stream_handle):
                raise CudaError(f"TensorRT execute_async_v3 failed for {self.path.name}")
            check_cuda(cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
            check_cuda(cudart.cudaStreamBeginCapture(
                self.stream, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal),
                "cudaStreamBeginCapture")
            self.context.execute_async_v3(self.stream_handle)
            self._graph = check_cuda(cudart.cudaStreamEndCapture(self.stream),
                                     "cudaStreamEndCapture")
            self._graph_exec = check_cuda(cudart.cudaGraphInstantiate(self._graph, 0),
                                          "cudaGraphInstantiate")
            self._graph_key = key
            return  # the warm-up run already produced this call's outputs
        check_cuda(cudart.cudaGraphLaunch(self._graph_exec, self.stream), "cudaGraphLaunch")

    def run_device(self, feeds: dict[str, np.ndarray] | np.ndarray) -> dict[str, DeviceTensor]:
        """Inputs (host numpy) -> outputs on the device; the stream is synchronised."""
        cudart = _cudart()
        if isinstance(feeds, np.ndarray):
            if len(self.inputs) != 1:
                raise InputError(f"engine has inputs {self.inputs}; pass a dict")
            feeds = {self.inputs[0]: feeds}
        changed = self._set_shapes(feeds)
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        for name in self.inputs:
            buf, shape, dt = self._buffers[name], self._shapes[name], self.dtypes[name]
            staging = buf.host_view(shape, dt)
            staging[...] = feeds[name]  # casts (e.g. float32 -> float16 inputs)
            check_cuda(cudart.cudaMemcpyAsync(buf.dptr, buf.hptr, staging.nbytes, h2d,
                                              self.stream), f"copy {name} to the GPU")
        self._enqueue(changed)
        check_cuda(cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        return {n: DeviceTensor(n, self._buffers[n].dptr, self._shapes[n], self.dtypes[n],
                                self.device) for n in self.outputs}

    def to_host(self, t: DeviceTensor) -> np.ndarray:
        cudart = _cudart()
        buf = self._buffers[t.name]
        view = buf.host_view(t.shape, t.dtype)
        check_cuda(cudart.cudaMemcpyAsync(buf.hptr, buf.dptr, view.nbytes,
                                          cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost,
                                          self.stream), f"copy {t.name} to the host")
        check_cuda(cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        return view.copy()

    def run(self, feeds: dict[str, np.ndarray] | np.ndarray) -> dict[str, np.ndarray]:
        return {n: self.to_host(t) for n, t in self.run_device(feeds).items()}

    # ------------------------------------------------------------ cleanup
    def _destroy_graph(self) -> None:
        if self._graph_exec is not None or self._graph is not None:
            cudart = _cudart()
            if self._graph_exec is not None:
                cudart.cudaGraphExecDestroy(self._graph_exec)
            if self._graph is not None:
                cudart.cudaGraphDestroy(self._graph)
        self._graph = self._graph_exec = self._graph_key = None

    def close(self) -> None:
        if getattr(self, "_buffers", None) is None:
            return
        self._destroy_graph()
        for b in self._buffers.values():
            b.free()
        self._buffers = None
        _cudart().cudaStreamDestroy(self.stream)
        self.context = self.engine = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: CUDA may already be gone
            pass
