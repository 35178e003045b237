"""Runners: what a compiled graph is to the pipeline, whoever runs it.

A ``Runner`` has named inputs and outputs (``TensorSpec``: name, shape, dtype),
the graph's metadata, a one-line ``device`` description, ``run(feeds) ->
outputs`` and ``close``. Three kinds:

* ``OrtRunner``: an ONNX graph in ONNX Runtime (``onnx_session.make_session``:
  provider choice and CPU threading);
* ``TrtEngineRunner``: a serialized TensorRT engine (``trt.TrtRunner``, cuda-python),
  which can also leave its outputs on the device (``run_device``);
* ``TritonRunner``: a model served by Triton, called over BLS inside Triton's
  Python backend or with ``tritonclient`` from anywhere else.

Backbones and proposers take a ``RunnerFactory``: ``factory(path, role,
threads=None) -> Runner``, ``role`` naming the graph (``backbone``,
``sam_encoder``, ``sam_decoder``, ``entityseg``, ``clip_text``, ``clip_image``).
The composition root (``moduseg.build``) makes the factory from the backend's
``registry.BACKENDS`` entry, whose ``runner`` is one of the classes here; each
class's ``open(path, role, providers=, threads=, device=)`` is that factory.
A serialized engine file opens as ``TrtEngineRunner`` and an ONNX file as
``OrtRunner`` whichever class was asked, so a TensorRT EntitySeg engine runs on
the ``cpu`` backend's pipeline and SAM's ONNX graphs on ``tensorrt-native``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from ..errors import InputError, ModuSegError

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")

# ONNX Runtime's type strings -> numpy
_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
               "tensor(double)": np.float64, "tensor(int64)": np.int64,
               "tensor(int32)": np.int32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
               "tensor(bool)": np.bool_}
# ONNX TensorProto element types -> numpy (for graphs read without a session)
_ONNX_DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 6: np.int32, 7: np.int64, 9: np.bool_,
                10: np.float16, 11: np.float64}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: ``shape`` holds ints for fixed axes, ``None`` or a name for
    dynamic ones."""

    name: str
    shape: tuple = ()
    dtype: np.dtype | None = None

    @property
    def fixed(self) -> bool:
        return all(isinstance(d, int) and d >= 0 for d in self.shape)


@runtime_checkable
class Runner(Protocol):
    """A compiled graph as the pipeline sees it."""

    inputs: Sequence[TensorSpec]
    outputs: Sequence[TensorSpec]
    metadata: Mapping[str, str]
    device: str

    def run(self, feeds: Mapping[str, np.ndarray],
            outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """``feeds`` by input name -> the named ``outputs`` (all when None), by name."""

    def close(self) -> None:
        """Release the graph (sessions, device memory, connections)."""


class RunnerFactory(Protocol):
    """``factory(path, role, threads=None) -> Runner``; ``remote`` is True when the graph
    runs elsewhere (the local file is read for names and metadata only)."""

    def __call__(self, path: str | Path, role: str, *,
                 threads: int | None = None) -> Runner: ...


def input_names(runner) -> list[str]:
    return [s.name for s in runner.inputs]


def output_names(runner) -> list[str]:
    return [s.name for s in runner.outputs]


def is_engine(path) -> bool:
    return Path(path).suffix.lower() in ENGINE_SUFFIXES


def is_remote(factory) -> bool:
    """Whether ``factory``'s runners call a server (``TritonRunners``)."""
    return bool(getattr(factory, "remote", False))


class _Base:
    path: Path | None = None

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        name = self.path.name if self.path is not None else "-"
        return (f"{type(self).__name__}({name}, {self.device}, inputs="
                f"{input_names(self)}, outputs={output_names(self)})")


# ---- ONNX Runtime ----------------------------------------------------------------------

class OrtRunner(_Base):
    """An ONNX graph in an ONNX Runtime session (``onnx_session.make_session``)."""

    def __init__(self, path: str | Path, providers: str = "auto", threads: int | None = None):
        from .onnx_session import make_session

        self.path = Path(path)
        self.session = make_session(self.path, providers=providers, threads=threads)
        self.inputs = tuple(_ort_spec(a) for a in self.session.get_inputs())
        self.outputs = tuple(_ort_spec(a) for a in self.session.get_outputs())
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.providers = list(self.session.get_providers())
        self.device = f"onnxruntime {self.providers[0]}"

    @classmethod
    def open(cls, path, role: str = "", *, providers: str = "auto",
             threads: int | None = None, device: int = 0) -> Runner:
        if is_engine(path):
            return TrtEngineRunner(path, device=device)
        return cls(path, providers=providers, threads=threads)

    def run(self, feeds, outputs=None) -> dict[str, np.ndarray]:
        names = list(outputs) if outputs else [s.name for s in self.outputs]
        return dict(zip(names, self.session.run(names, dict(feeds))))

    def close(self) -> None:
        self.session = None


def _ort_spec(arg) -> TensorSpec:
    return TensorSpec(arg.name, tuple(arg.shape), np.dtype(_ORT_DTYPES.get(arg.type, np.float32)))


# ---- TensorRT ---------------------------------------------------------------------------

class TrtEngineRunner(_Base):
    """A TensorRT engine (``trt.TrtRunner``: validated against its sidecar, CUDA stream,
    device buffers). ``run_device`` / ``to_host`` keep outputs on the GPU for the SMFA
    kernels. Importing this module needs neither TensorRT nor a GPU; opening one does."""

    def __init__(self, path: str | Path, device: int = 0, validate: bool = True,
                 cuda_graph: bool = False):
        from . import trt

        self.path = Path(path)
        self.engine = trt.TrtRunner(self.path, device=device, validate=validate,
                                    cuda_graph=cuda_graph)
        e, dtypes = self.engine, getattr(self.engine, "dtypes", {})
        self.inputs = tuple(TensorSpec(n, e.engine_shape(n), dtypes.get(n)) for n in e.inputs)
        self.outputs = tuple(TensorSpec(n, e.engine_shape(n), dtypes.get(n)) for n in e.outputs)
        self.sidecar = e.sidecar
        self.metadata = dict(e.sidecar.metadata) if e.sidecar is not None else {}
        self.device = f"tensorrt cuda:{int(device)}"

    @classmethod
    def open(cls, path, role: str = "", *, providers: str = "auto",
             threads: int | None = None, device: int = 0) -> Runner:
        if not is_engine(path):
            # an ONNX graph on this backend (SAM's): ONNX Runtime, best provider
            return OrtRunner(path, providers=providers, threads=threads)
        return cls(path, device=device)

    def run(self, feeds, outputs=None) -> dict[str, np.ndarray]:
        out = self.engine.run(dict(feeds))
        return {n: out[n] for n in outputs} if outputs else out

    def run_device(self, feeds):
        """Inputs (host) -> ``trt.DeviceTensor`` outputs left on the GPU."""
        return self.engine.run_device(dict(feeds))

    def to_host(self, tensor) -> np.ndarray:
        return self.engine.to_host(tensor)

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None


# ---- Triton -----------------------------------------------------------------------------

class TritonRunner(_Base):
    """A model served by Triton. Inside Triton's Python backend (``url`` None) each
    ``run`` is a BLS request; otherwise ``tritonclient`` (``http`` or ``grpc``)
    calls the server at ``url``. Neither is imported before the first ``run``.

    ``inputs`` / ``outputs`` / ``metadata`` describe the served graph; ``from_graph``
    reads them from the local ONNX file the model was written from.
    """

    def __init__(self, model: str, inputs, outputs, metadata: Mapping[str, str] | None = None,
                 *, url: str | None = None, protocol: str = "http",
                 path: str | Path | None = None):
        self.model = model
        self.inputs = tuple(s if isinstance(s, TensorSpec) else TensorSpec(s) for s in inputs)
        self.outputs = tuple(s if isinstance(s, TensorSpec) else TensorSpec(s) for s in outputs)
        self.metadata = dict(metadata or {})
        self.url, self.protocol = url, protocol
        self.path = Path(path) if path is not None else None
        self.device = f"triton {model}" + (f" at {url}" if url else " (BLS)")
        self._client = None

    @classmethod
    def from_graph(cls, model: str, path: str | Path, dynamic_hw: bool = False,
                   **kw) -> "TritonRunner":
        """Names, shapes and metadata from the ONNX file ``path`` (``dynamic_hw``: the
        served model takes any height and width, as the CPU repository's encoder does)."""
        ins, outs, meta = graph_io(path)
        if dynamic_hw:
            ins = [TensorSpec(s.name, s.shape[:2] + (None,) * (len(s.shape) - 2), s.dtype)
                   for s in ins]
        return cls(model, ins, outs, meta, path=path, **kw)

    def run(self, feeds, outputs=None) -> dict[str, np.ndarray]:
        names = list(outputs) if outputs else [s.name for s in self.outputs]
        if self.url is None:
            return self._run_bls(feeds, names)
        return self._run_client(feeds, names)

    def _run_bls(self, feeds, names):
        import triton_python_backend_utils as pb  # only inside Triton's Python stub

        req = pb.InferenceRequest(
            model_name=self.model, requested_output_names=names,
            inputs=[pb.Tensor(k, np.ascontiguousarray(v)) for k, v in feeds.items()])
        resp = req.exec()
        if resp.has_error():
            raise ModuSegError(f"model {self.model}: {resp.error().message()}")
        return {n: pb.get_output_tensor_by_name(resp, n).as_numpy() for n in names}

    def _run_client(self, feeds, names):
        mod = tritonclient_module(self.protocol)
        if self._client is None:
            self._client = mod.InferenceServerClient(url=self.url)
        inputs = []
        for k, v in feeds.items():
            v = np.ascontiguousarray(v)
            t = mod.InferInput(k, list(v.shape), _triton_type(v.dtype))
            t.set_data_from_numpy(v)
            inputs.append(t)
        try:
            res = self._client.infer(self.model, inputs,
                                     outputs=[mod.InferRequestedOutput(n) for n in names])
        except Exception as e:  # tritonclient's InferenceServerException and transport errors
            raise ModuSegError(f"model {self.model} at {self.url}: {e}") from None
        return {n: res.as_numpy(n) for n in names}

    def close(self) -> None:
        if self._client is not None:
            close = getattr(self._client, "close", None)
            if close is not None:
                close()
            self._client = None


def tritonclient_module(protocol: str):
    """``tritonclient.http`` or ``.grpc``, imported on use (an install hint if absent)."""
    from ..errors import BackendUnavailableError

    if protocol not in ("http", "grpc"):
        raise InputError(f"Triton protocol must be 'http' or 'grpc', got {protocol!r}")
    try:
        if protocol == "grpc":
            import tritonclient.grpc as mod
        else:
            import tritonclient.http as mod
    except ImportError:
        raise BackendUnavailableError(
            "tritonclient is not installed; pip install 'moduseg[serve]'") from None
    return mod


_TRITON_TYPES = {"float32": "FP32", "float16": "FP16", "float64": "FP64", "int64": "INT64",
                 "int32": "INT32", "int8": "INT8", "uint8": "UINT8", "bool": "BOOL"}


def _triton_type(dtype) -> str:
    name = np.dtype(dtype).name
    if name not in _TRITON_TYPES:
        raise InputError(f"arrays of {name} cannot be sent to Triton; use one of "
                         f"{', '.join(_TRITON_TYPES)}")
    return _TRITON_TYPES[name]


def graph_io(path: str | Path) -> tuple[list[TensorSpec], list[TensorSpec], dict[str, str]]:
    """(inputs, outputs, metadata) of an ONNX file, read without a session (no weights)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}

    def spec(v):
        t = v.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                     for d in t.shape.dim)
        return TensorSpec(v.name, dims, np.dtype(_ONNX_DTYPES.get(t.elem_type, np.float32)))

    return ([spec(v) for v in model.graph.input if v.name not in inits],
            [spec(v) for v in model.graph.output],
            {p.key: p.value for p in model.metadata_props})


class TritonRunners:
    """A ``RunnerFactory`` whose runners call served models: ``models`` maps a role
    (``backbone``, ``sam_encoder``, ...) to the Triton model serving it; roles in
    ``dynamic_hw`` take any height and width. ``url`` None: BLS (inside Triton)."""

    remote = True

    def __init__(self, models: Mapping[str, str], *, url: str | None = None,
                 protocol: str = "http", dynamic_hw: Sequence[str] = ()):
        self.models, self.url, self.protocol = dict(models), url, protocol
        self.dynamic_hw = frozenset(dynamic_hw)

    def __call__(self, path, role: str, *, threads: int | None = None) -> TritonRunner:
        if role not in self.models:
            raise InputError(f"no served model for the {role!r} graph; served: "
                             f"{', '.join(sorted(self.models))}")
        return TritonRunner.from_graph(self.models[role], path, role in self.dynamic_hw,
                                       url=self.url, protocol=self.protocol)


# ---- factories --------------------------------------------------------------------------

def runner_factory(runner_class=OrtRunner, providers: str = "auto",
                   device: int = 0) -> RunnerFactory:
    """``runner_class.open`` with the backend's providers and device bound."""
    return functools.partial(runner_class.open, providers=providers, device=device)


def default_factory(runners: RunnerFactory | None, providers: str = "auto") -> RunnerFactory:
    """``runners`` as given, else ONNX Runtime on ``providers`` (components built directly,
    outside the composition root)."""
    return runners if runners is not None else runner_factory(OrtRunner, providers)

