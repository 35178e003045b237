"""``moduseg export engine MODEL.onnx``: a cached TensorRT engine, built with the Python API.

FP32 / FP16 / INT8 (entropy calibration on a folder of images), optimisation
profiles for dynamic inputs, a workspace limit, a reusable timing cache,
layers kept in FP32 (LayerNorm/Softmax/... by op type or name pattern; ViTs
lose accuracy in FP16 otherwise) and DLA on Jetson with GPU fallback. The
engine lands in the cache under a name carrying the ONNX checksum, TensorRT
version, device, compute capability and precision, with a sidecar JSON.
After the build it is compared with ONNX Runtime (CPU) on the same inputs
(per-patch cosine). tensorrt and cuda-python are imported only here, lazily.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import click
import numpy as np

from ..errors import BackendUnavailableError, InputError, ModelNotFoundError, ModuSegError
from ..io import IMAGE_SUFFIXES, write_bytes
from ..runtime.engine_cache import (PRECISIONS, EngineKey, Sidecar, current_device,
                                    engine_cache_dir, graph_sha256, save_engine)

DEFAULT_FP32_OPS = ("LayerNormalization", "Softmax")
# ONNX op type -> the TensorRT layer type name the ONNX parser creates for it
OP_TO_LAYER_TYPE = {
    "LayerNormalization": "NORMALIZATION", "Softmax": "SOFTMAX", "ReduceMean": "REDUCE",
    "Pow": "ELEMENTWISE", "Sqrt": "UNARY", "Exp": "UNARY", "Erf": "UNARY",
    "MatMul": "MATRIX_MULTIPLY", "Gemm": "MATRIX_MULTIPLY", "Conv": "CONVOLUTION",
}
MIN_COSINE = {"fp32": 0.999, "fp16": 0.99, "best": 0.99, "int8": 0.95}


@dataclass
class BuildOptions:
    precision: str = "fp16"
    workspace_mb: int = 4096
    shapes: dict = field(default_factory=dict)  # input -> (min, opt, max) shape tuples
    timing_cache: str | None = None
    fp32_layers: tuple = DEFAULT_FP32_OPS
    dla_core: int | None = None
    gpu_fallback: bool = True
    calib_dir: str | None = None
    calib_images: int = 64
    calib_cache: str | None = None
    optimization_level: int | None = None
    device: int = 0
    strongly_typed: bool = False  # always on with TensorRT >= 11

    def validate(self) -> "BuildOptions":
        if self.precision not in PRECISIONS:
            raise InputError(f"--precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.precision == "int8" and not (self.calib_dir or self.calib_cache):
            raise InputError("INT8 needs calibration data: --calib-dir FOLDER of images (or "
                             "--calib-cache from an earlier calibration)")
        if self.workspace_mb <= 0:
            raise InputError("--workspace must be a positive number of MiB")
        return self


# ---------------------------------------------------------------- pure helpers

def parse_shape(text: str) -> tuple[int, ...]:
    """``1x3x224x224`` (or with commas) -> (1, 3, 224, 224)."""
    try:
        dims = tuple(int(v) for v in re.split(r"[x,]", str(text).lower()) if v)
    except ValueError:
        dims = ()
    if not dims or min(dims) <= 0:
        raise InputError(f"shape {text!r} must look like 1x3x224x224 (positive integers)")
    return dims


def parse_named_shapes(values) -> dict[str, tuple[int, ...]]:
    """``["image:1x3x224x224"]`` or ``["1x3x224x224"]`` (for the only input; key '')."""
    out = {}
    for v in values or ():
        name, sep, shape = str(v).rpartition(":")
        out[name if sep else ""] = parse_shape(shape)
    return out


def graph_inputs(model) -> list[tuple[str, list]]:
    """(name, dims) of real inputs; a dim is an int, or None when dynamic."""
    inits = {t.name for t in model.graph.initializer}
    out = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                for d in vi.type.tensor_type.shape.dim]
        out.append((vi.name, dims))
    return out


def resolve_profiles(model, mins=None, opts=None, maxs=None, metadata=None
                     ) -> dict[str, tuple[tuple[int, ...], ...]]:
    """(min, opt, max) per dynamic input; static inputs get none.

    Unspecified dynamic axes: batch 1; H, W from the graph's recorded export
    resolution (``moduseg.resolution``), else an error naming the option.
    """
    mins, opts, maxs = (parse_named_shapes(x) if not isinstance(x, dict) else dict(x or {})
                        for x in (mins, opts, maxs))
    metadata = metadata or {}
    inputs = graph_inputs(model)
    for given in (mins, opts, maxs):
        if "" in given:
            if len(inputs) != 1:
                raise InputError(f"the graph has inputs {[n for n, _ in inputs]}; name the "
                                 f"input in the shape, e.g. image:1x3x224x224")
            given[inputs[0][0]] = given.pop("")
    res = metadata.get("resolution")
    res_hw = tuple(int(v) for v in res.split("x")) if res else None
    profiles = {}
    for name, dims in inputs:
        dynamic = [i for i, d in enumerate(dims) if d is None]
        if not dynamic and name not in opts:
            continue
        default = []
        for i, d in enumerate(dims):
            if name in opts:
                break
            if d is not None:
                default.append(d)
            elif i == 0:
                default.append(1)
            elif len(dims) == 4 and i in (2, 3) and res_hw:
                default.append(res_hw[i - 2])
            else:
                raise InputError(
                    f"input {name} {['?' if d is None else d for d in dims]} has a dynamic "
                    f"axis {i} with no known size; pass --opt-shape (and --min-shape, "
                    f"--max-shape) e.g. {name}:1x3x364x490")
        opt = opts.get(name, tuple(default))
        mn, mx = mins.get(name, opt), maxs.get(name, opt)
        for label, s in (("min", mn), ("opt", opt), ("max", mx)):
            if len(s) != len(dims) or any(d is not None and d != v for d, v in zip(dims, s)):
                raise InputError(f"--{label}-shape {s} does not fit input {name} "
                                 f"{['?' if d is None else d for d in dims]}")
        if not all(a <= b <= c for a, b, c in zip(mn, opt, mx)):
            raise InputError(f"input {name}: need min <= opt <= max per axis, got {mn}, {opt}, "
                             f"{mx}")
        profiles[name] = (tuple(mn), tuple(opt), tuple(mx))
    return profiles


def profile_signature(profiles: dict) -> str:
    parts = []
    for name in sorted(profiles):
        mn, opt, mx = profiles[name]
        f = lambda s: "x".join(map(str, s))  # noqa: E731
        parts.append(f"{name}={f(opt)}" if mn == opt == mx else
                     f"{name}=min{f(mn)}-opt{f(opt)}-max{f(mx)}")
    return ";".join(parts)


def select_fp32_layers(layers, node_ops: dict[str, str], requested) -> list[str]:
    """Names of TensorRT layers to pin to FP32.

    ``layers``: (layer name, layer type name, is_float) per network layer.
    ``requested``: ONNX op types (matched through the ONNX node each layer
    came from: the parser names layers after nodes) or regular expressions on
    layer names. Non-float layers (shape arithmetic) are never pinned.
    """
    ops = {r for r in requested if r in OP_TO_LAYER_TYPE or r in set(node_ops.values())}
    patterns = [re.compile(r) for r in requested if r not in ops]
    # node names whose op type was requested, longest first (layer names extend them)
    nodes = sorted((n for n, op in node_ops.items() if op in ops and n), key=len, reverse=True)
    chosen = []
    for name, ltype, is_float in layers:
        if not is_float:
            continue
        hit = any(p.search(name) for p in patterns)
        if not hit and ops:
            hit = any(name == n or name.startswith(n + "_") or name.startswith(n + "/")
                      or name.startswith(n + " ") for n in nodes)
            if not hit and not node_ops:  # no names to go by: fall back to layer types
                hit = ltype in {OP_TO_LAYER_TYPE[o] for o in ops if o in OP_TO_LAYER_TYPE}
        if hit:
            chosen.append(name)
    return chosen


def calibration_batches(folder: str | Path, shape: tuple[int, ...], mean=(0, 0, 0),
                        std=(1, 1, 1), limit: int = 64) -> list[np.ndarray]:
    """Images of ``folder`` as float32 batches ``shape`` ([B, 3, H, W]), normalised as
    the graph expects (graphs from 'moduseg export backbone': [0,1], mean 0, std 1)."""
    from .parity import load_image_input

    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not files:
        raise InputError(f"--calib-dir {folder} has no images ({', '.join(IMAGE_SUFFIXES)})")
    b, _, h, w = shape
    m = np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
    s = np.asarray(std, np.float32).reshape(1, 3, 1, 1)
    x = np.concatenate([(load_image_input(f, (h, w)) - m) / s for f in files])
    n = (len(x) // b) * b
    if n == 0:
        raise InputError(f"--calib-dir {folder} has {len(x)} images, fewer than one batch "
                         f"of {b}")
    return [np.ascontiguousarray(x[i:i + b]) for i in range(0, n, b)]


def prepare_graph(onnx_path: Path, workdir: Path) -> tuple[Path, int]:
    """The graph TensorRT should parse: below opset 17 with decomposed LayerNorms
    (e.g. the installed DINOv2 ``features.onnx``, opset 14), an opset-17 copy with
    native LayerNormalization (FP16-safe, and pinnable by --fp32-layers); else as is."""
    import onnx

    from .backbone import upgrade_opset
    from ..graphs.layernorm import fuse_layernorm

    model = onnx.load(str(onnx_path), load_external_data=False)
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                default=0)
    if opset >= 17 or not any(n.op_type == "Pow" for n in model.graph.node) \
            or any(t.data_location == 1 for t in model.graph.initializer):
        return Path(onnx_path), 0
    model = upgrade_opset(onnx.load(str(onnx_path)), 17)
    fused = fuse_layernorm(model)
    if not fused:
        return Path(onnx_path), 0
    out = workdir / "prepared.onnx"
    onnx.save(model, str(out))
    return out, fused


def to_mixed_fp16(onnx_path: str | Path, out_path: str | Path,
                  keep_fp32_ops=DEFAULT_FP32_OPS) -> Path:
    """An FP16 copy of the graph with ``keep_fp32_ops`` (and graph I/O) left in FP32.

    For strongly typed builds (TensorRT >= 11 has no FP16 builder flag; the
    graph's own types decide). Uses onnxconverter-common's converter.
    """
    import onnx

    try:
        from onnxconverter_common import float16
    except ImportError as e:
        raise BackendUnavailableError(
            f"strongly typed FP16 builds convert the graph with onnxconverter-common ({e}); "
            f"'pip install onnxconverter-common'") from None
    model = onnx.load(str(onnx_path))
    del model.graph.value_info[:]  # stale float32 annotations confuse the converter
    ops = [o for o in keep_fp32_ops if o[:1].isupper() and o.isidentifier()]
    _unshare_initializers(model.graph, set(ops))
    import warnings

    with warnings.catch_warnings():  # one warning per tiny weight clamped to +-1e-7
        warnings.simplefilter("ignore", UserWarning)
        mixed = float16.convert_float_to_float16(model, keep_io_types=True, op_block_list=ops,
                                                 disable_shape_infer=False)
    onnx.save(mixed, str(out_path))
    return Path(out_path)


def _unshare_initializers(graph, fp32_ops: set) -> None:
    """Give FP32-kept nodes their own copy of weights they share with FP16 nodes.

    onnxslim merges identical initializers (e.g. zero biases), and the FP16
    converter would otherwise leave one tensor feeding both precisions.
    """
    users: dict[str, set] = {}
    for n in graph.node:
        for i in n.input:
            users.setdefault(i, set()).add(n.op_type in fp32_ops)
    inits = {t.name: t for t in graph.initializer}
    shared = {name for name, kinds in users.items() if name in inits and kinds == {True, False}}
    for name in shared:
        copy = graph.initializer.add()
        copy.CopyFrom(inits[name])
        copy.name = name + "_fp32"
    for n in graph.node:
        if n.op_type in fp32_ops:
            for k, i in enumerate(n.input):
                if i in shared:
                    n.input[k] = i + "_fp32"


def graph_norm(meta: dict) -> tuple[tuple, tuple]:
    import json

    mean = tuple(json.loads(meta["mean"])) if "mean" in meta else (0.0, 0.0, 0.0)
    std = tuple(json.loads(meta["std"])) if "std" in meta else (1.0, 1.0, 1.0)
    return mean, std


# ---------------------------------------------------------------- TensorRT side

def _trt():
    try:
        import tensorrt as trt
    except ImportError as e:
        raise BackendUnavailableError(
            f"building an engine needs TensorRT ({e}): 'pip install tensorrt' on x86_64 with "
            f"an NVIDIA driver, or JetPack's python3-libnvinfer on Jetson. Check the graph "
            f"without a GPU with 'moduseg export check MODEL.onnx --trt-version 10.x'") from None
    return trt


def make_calibrator(trt, batches: list[np.ndarray], cache_path: str | None):
    """An ``IInt8EntropyCalibrator2`` feeding preprocessed batches from device memory."""
    from ..runtime.trt import _cudart, check_cuda

    cudart = _cudart()

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.batches = batches
            self.index = 0
            self.nbytes = batches[0].nbytes if batches else 0
            self.dptr = int(check_cuda(cudart.cudaMalloc(max(self.nbytes, 1)), "cudaMalloc"))

        def get_batch_size(self):
            return int(self.batches[0].shape[0]) if self.batches else 1

        def get_batch(self, names):
            if self.index >= len(self.batches):
                return None
            x = np.ascontiguousarray(self.batches[self.index], dtype=np.float32)
            check_cuda(cudart.cudaMemcpy(self.dptr, x.ctypes.data, x.nbytes,
                                         cudart.cudaMemcpyKind.cudaMemcpyHostToDevice),
                       "calibration copy")
            self.index += 1
            return [self.dptr]

        def read_calibration_cache(self):
            if cache_path and Path(cache_path).is_file():
                return Path(cache_path).read_bytes()
            return None

        def write_calibration_cache(self, cache):
            if cache_path:
                write_bytes(Path(cache_path), bytes(cache))

        def __del__(self):
            try:
                cudart.cudaFree(self.dptr)
            except Exception:  # interpreter shutdown
                pass

    return EntropyCalibrator()


class _Log:
    """Collect TensorRT's errors so a failed build can say why."""

    def __init__(self, trt, verbose: bool):
        outer = self

        class Logger(trt.ILogger):
            def __init__(self):
                trt.ILogger.__init__(self)

            def log(self, severity, msg):
                level = int(severity)
                if level <= int(trt.ILogger.Severity.ERROR):
                    outer.errors.append(str(msg))
                if verbose or level <= int(trt.ILogger.Severity.WARNING):
                    click.echo(f"[TensorRT {severity.name}] {msg}", err=True)

        self.errors: list[str] = []
        self.logger = Logger()


def build_engine_bytes(onnx_path: Path, opts: BuildOptions, profiles: dict, node_ops: dict,
                       calib_batches=None, verbose: bool = False) -> tuple[bytes, dict]:
    """Parse, configure and build; returns the serialized engine and build facts."""
    trt = _trt()
    log = _Log(trt, verbose)
    builder = trt.Builder(log.logger)
    major = int(trt.__version__.split(".")[0])
    # TensorRT 11 removed weak typing (FP16/INT8 builder flags, per-layer precision):
    # the graph's own types decide, so FP16 means an FP16 graph.
    strong = major >= 11 or opts.strongly_typed
    if strong and opts.precision in ("int8", "best"):
        raise InputError(f"TensorRT {trt.__version__} (strongly typed) has no INT8 calibration; "
                         f"quantize the graph with Q/DQ nodes instead, or use --precision fp16")
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if strong and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, log.logger)
    import tempfile

    tmpdir = tempfile.TemporaryDirectory(prefix="moduseg-trt-")
    onnx_path, fused = prepare_graph(onnx_path, Path(tmpdir.name))
    if fused:  # layer names follow the nodes of the graph actually parsed
        import onnx

        node_ops = {n.name: n.op_type for n in
                    onnx.load(str(onnx_path), load_external_data=False).graph.node}
    if strong and opts.precision == "fp16":
        onnx_path = to_mixed_fp16(onnx_path, Path(tmpdir.name) / "mixed_fp16.onnx",
                                  opts.fp32_layers or ())
    ok = parser.parse_from_file(str(onnx_path))
    tmpdir.cleanup()
    if not ok:
        errs = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ModuSegError(f"TensorRT's ONNX parser rejected {onnx_path}: " + "; ".join(errs)
                           + f". Run 'moduseg export check {onnx_path} --trt-version "
                             f"{trt.__version__}' for a per-op report")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(opts.workspace_mb) << 20)
    if opts.optimization_level is not None:
        config.builder_optimization_level = int(opts.optimization_level)
    facts = {"tensorrt": trt.__version__, "precision": opts.precision,
             "strongly_typed": strong, "fused_layernorms": fused}

    if opts.precision in ("fp16", "int8", "best") and not strong:
        if not getattr(builder, "platform_has_fast_fp16", True):
            click.echo("warning: this GPU has no fast FP16; the engine may be slow", err=True)
        config.set_flag(trt.BuilderFlag.FP16)
    if opts.precision in ("int8", "best") and not strong:
        config.set_flag(trt.BuilderFlag.INT8)

    profile = None
    if profiles:
        profile = builder.create_optimization_profile()
        for name, (mn, opt, mx) in profiles.items():
            profile.set_shape(name, mn, opt, mx)
        config.add_optimization_profile(profile)
    if opts.precision == "int8":
        if not calib_batches and not opts.calib_cache:
            raise InputError("INT8 needs --calib-dir images or a --calib-cache")
        config.int8_calibrator = make_calibrator(trt, calib_batches or [], opts.calib_cache)
        if profile is not None:
            config.set_calibration_profile(profile)

    # layers pinned to FP32 (ViT LayerNorm/Softmax in FP16 lose accuracy)
    pinned = []
    if opts.fp32_layers and opts.precision != "fp32" and not strong:
        float_types = (trt.float32, trt.float16)
        layers = []
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            is_float = layer.num_outputs > 0 and all(
                layer.get_output(k).dtype in float_types for k in range(layer.num_outputs))
            layers.append((layer.name, layer.type.name, is_float))
        pinned = select_fp32_layers(layers, node_ops, opts.fp32_layers)
        wanted = set(pinned)
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            if layer.name in wanted:
                layer.precision = trt.float32
                for k in range(layer.num_outputs):
                    layer.set_output_type(k, trt.float32)
        if pinned:
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        facts["fp32_layers"] = len(pinned)

    if opts.dla_core is not None:
        if builder.num_DLA_cores <= opts.dla_core:
            raise BackendUnavailableError(
                f"--dla-core {opts.dla_core}: this device has {builder.num_DLA_cores} DLA "
                f"cores (DLA exists on Jetson AGX/NX Xavier and Orin only)")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(opts.dla_core)
        if opts.gpu_fallback:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)

    cache_obj = None
    if opts.timing_cache:
        tc = Path(opts.timing_cache)
        cache_obj = config.create_timing_cache(tc.read_bytes() if tc.is_file() else b"")
        config.set_timing_cache(cache_obj, ignore_mismatch=False)
        facts["timing_cache_loaded"] = tc.is_file()

    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    facts["build_seconds"] = round(time.perf_counter() - t0, 1)
    if serialized is None:
        raise ModuSegError("TensorRT failed to build the engine: "
                           + ("; ".join(log.errors[-5:]) or "no error message")
                           + ". Try a larger --workspace, --precision fp32, or fewer "
                             "--fp32-layers")
    if cache_obj is not None:
        write_bytes(Path(opts.timing_cache), bytes(config.get_timing_cache().serialize()))
    facts["inputs"] = {network.get_input(i).name: list(network.get_input(i).shape)
                       for i in range(network.num_inputs)}
    facts["outputs"] = {network.get_output(i).name: list(network.get_output(i).shape)
                        for i in range(network.num_outputs)}
    return bytes(serialized), facts


def accuracy_check(engine_path: Path, onnx_path: Path, profiles: dict, meta: dict,
                   images=(), threshold: float = 0.99, device: int = 0):
    """TensorRT vs ONNX Runtime (CPU) on the same random and real inputs."""
    from ..runtime.trt import TrtRunner
    from .parity import compare, onnx_runner, parity_inputs

    runner = TrtRunner(engine_path, device=device)
    name = runner.inputs[0]
    shape = profiles[name][1] if name in profiles else runner.engine_shape(name)
    if len(runner.inputs) != 1 or len(shape) != 4 or shape[1] != 3:
        runner.close()
        click.echo(f"accuracy check skipped: inputs {runner.inputs} are not one [B,3,H,W] "
                   f"image (check multi-input graphs such as SAM's decoder separately)")
        return None
    mean, std = graph_norm(meta)
    m = np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
    s = np.asarray(std, np.float32).reshape(1, 3, 1, 1)
    inputs = [(n, (x - m) / s) for n, x in parity_inputs(tuple(shape[2:]), images,
                                                          batch=shape[0])]
    out = runner.outputs[0] if "features" not in runner.outputs else "features"
    ort = onnx_runner(onnx_path, providers="cpu")
    try:
        return compare(ort, lambda x: runner.run({name: x})[out], inputs,
                       "onnxruntime-cpu", f"tensorrt-{engine_path.suffix}", threshold)
    finally:
        runner.close()


def build_cached_engine(onnx_path: str | Path, opts: BuildOptions, cache_dir=None,
                        output: str | Path | None = None, mins=None, opt_shapes=None,
                        maxs=None, images=(), min_cosine: float | None = None,
                        force: bool = False, check: bool = True, verbose: bool = False
                        ) -> tuple[Path, Sidecar, bool]:
    """Build (or reuse) the engine for this graph and device; (path, sidecar, reused)."""
    import onnx

    from .backbone import read_metadata
    from ..runtime.engine_cache import read_sidecar

    opts.validate()
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise ModelNotFoundError(f"{onnx_path} does not exist; export it first with "
                                 f"'moduseg export backbone'")
    model = onnx.load(str(onnx_path), load_external_data=False)
    meta = read_metadata(model)
    profiles = resolve_profiles(model, mins, opt_shapes, maxs, meta)
    node_ops = {n.name: n.op_type for n in model.graph.node}
    device = current_device(opts.device)
    key = EngineKey.for_device(graph_sha256(onnx_path), device, opts.precision,
                               profile_signature(profiles), opts.dla_core)
    path = Path(output) if output else Path(cache_dir or engine_cache_dir()) / key.filename(
        onnx_path.stem)
    if path.is_file() and not force:
        try:
            side = read_sidecar(path)
            if side.key == key:
                return path, side, True
        except ModuSegError:
            pass
    batches = None
    if opts.precision == "int8" and opts.calib_dir:
        name = graph_inputs(model)[0][0]
        shape = profiles[name][1] if name in profiles else tuple(graph_inputs(model)[0][1])
        mean, std = graph_norm(meta)
        batches = calibration_batches(opts.calib_dir, shape, mean, std, opts.calib_images)
    engine_bytes, facts = build_engine_bytes(onnx_path, opts, profiles, node_ops, batches,
                                             verbose)
    side = Sidecar(key=key, onnx_path=str(onnx_path.resolve()),
                   inputs={n: {"min": list(p[0]), "opt": list(p[1]), "max": list(p[2])}
                           for n, p in profiles.items()} or facts["inputs"],
                   outputs=facts["outputs"], build={**asdict(opts), **facts},
                   metadata={k: v for k, v in meta.items() if k != "parity"})
    save_engine(engine_bytes, path, side)
    if check:
        thr = min_cosine if min_cosine is not None else MIN_COSINE[opts.precision]
        report = accuracy_check(path, onnx_path, profiles, meta, images, thr, opts.device)
    if check and report is not None:
        side.accuracy = report.to_dict()
        save_engine(engine_bytes, path, side)
        for line in report.lines():
            click.echo(line)
        if not report.ok:
            path.unlink(missing_ok=True)
            Path(str(path) + ".json").unlink(missing_ok=True)
            report.raise_if_failed(
                f"the {opts.precision} engine was deleted. Keep sensitive layers in FP32 "
                f"(--fp32-layers LayerNormalization,Softmax,ReduceMean,Pow), or use "
                f"--precision fp32, or lower --min-cosine knowingly")
    return path, side, False


# ---------------------------------------------------------------- command

@click.command("engine")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp16", show_default=True)
@click.option("--min-shape", "mins", multiple=True, help="[name:]1x3xHxW, dynamic inputs.")
@click.option("--opt-shape", "opts_", multiple=True, help="[name:]1x3xHxW (the tuned size).")
@click.option("--max-shape", "maxs", multiple=True, help="[name:]1x3xHxW.")
@click.option("--workspace", "workspace_mb", default=4096, show_default=True,
              help="Builder workspace limit in MiB.")
@click.option("--timing-cache", type=click.Path(dir_okay=False), default=None,
              help="Timing cache file to load and update (speeds up rebuilds).")
@click.option("--fp32-layers", default=",".join(DEFAULT_FP32_OPS), show_default=True,
              help="ONNX op types or layer-name regexes kept in FP32 ('' for none).")
@click.option("--dla-core", type=int, default=None, help="Jetson: build for this DLA core.")
@click.option("--no-gpu-fallback", is_flag=True, help="DLA: fail instead of falling back.")
@click.option("--calib-dir", type=click.Path(file_okay=False), default=None,
              help="INT8: folder of calibration images.")
@click.option("--calib-images", default=64, show_default=True)
@click.option("--calib-cache", type=click.Path(dir_okay=False), default=None,
              help="INT8: calibration cache to reuse/write.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Engine cache (default: <model home>/engines).")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="Write the engine here instead of the cache.")
@click.option("--image", "images", multiple=True, type=click.Path(dir_okay=False),
              help="Real image(s) for the accuracy check.")
@click.option("--min-cosine", type=float, default=None,
              help="Minimum per-patch cosine vs ONNX Runtime (default by precision).")
@click.option("--optimization-level", type=int, default=None, help="Builder level 0-5.")
@click.option("--device", default=0, show_default=True, help="CUDA device index.")
@click.option("--strongly-typed", is_flag=True,
              help="TensorRT 10: build a strongly typed network (FP16 = FP16 graph with "
                   "--fp32-layers kept FP32); always on with TensorRT >= 11.")
@click.option("--force", is_flag=True, help="Rebuild even when a cached engine matches.")
@click.option("--no-check", is_flag=True, help="Skip the accuracy check.")
@click.option("--verbose", is_flag=True)
def export_engine(model, precision, mins, opts_, maxs, workspace_mb, timing_cache, fp32_layers,
                  dla_core, no_gpu_fallback, calib_dir, calib_images, calib_cache, cache_dir,
                  output, images, min_cosine, optimization_level, device, strongly_typed, force,
                  no_check, verbose):
    """Build a TensorRT engine from MODEL (ONNX) into the engine cache, then check it
    against ONNX Runtime."""
    opts = BuildOptions(
        precision=precision, workspace_mb=workspace_mb, timing_cache=timing_cache,
        fp32_layers=tuple(s.strip() for s in fp32_layers.split(",") if s.strip()),
        dla_core=dla_core, gpu_fallback=not no_gpu_fallback, calib_dir=calib_dir,
        calib_images=calib_images, calib_cache=calib_cache,
        optimization_level=optimization_level, device=device, strongly_typed=strongly_typed)
    path, side, reused = build_cached_engine(
        model, opts, cache_dir, output, list(mins), list(opts_), list(maxs), images,
        min_cosine, force, check=not no_check, verbose=verbose)
    k = side.key
    click.echo(f"{'reused' if reused else 'built'} {path}")
    click.echo(f"  TensorRT {k.trt_version}, {k.device_name} (sm{k.compute_capability}), "
               f"{k.precision}{f', DLA {k.dla_core}' if k.dla_core is not None else ''}, "
               f"profile {k.profile or 'static'}")
    if side.accuracy:
        click.echo(f"  cosine vs ONNX Runtime: min {side.accuracy['min']:.5f} "
                   f"mean {side.accuracy['mean']:.5f}")
