"""In-process stand-ins for ``tensorrt`` and ``cuda.bindings.runtime`` (no GPU).

'Device memory' is host memory; the fake engine runs the ONNX graph it was
'built' from with ONNX Runtime, so the build -> cache -> run -> accuracy
check glue is exercised end to end on CPU. Only the API surface moduseg uses.
"""

import ctypes
import types

import numpy as np


class Enum:
    def __init__(self, **kw):
        self.__dict__.update(kw)


class Named(int):
    """An int-valued enum member with a .name, like pybind11 enums."""

    def __new__(cls, value, name):
        obj = int.__new__(cls, value)
        obj.name = name
        return obj


class FakeCudart:
    cudaError_t = Enum(cudaSuccess=0)
    cudaMemcpyKind = Enum(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)
    cudaStreamCaptureMode = Enum(cudaStreamCaptureModeGlobal=0,
                                 cudaStreamCaptureModeThreadLocal=1)

    def __init__(self):
        self.blocks = {}

    def _alloc(self, n):
        buf = ctypes.create_string_buffer(n)
        self.blocks[ctypes.addressof(buf)] = buf
        return 0, ctypes.addressof(buf)

    cudaMalloc = _alloc
    cudaMallocHost = _alloc

    def cudaFree(self, p):
        return (0,)

    cudaFreeHost = cudaFree

    def cudaMemcpyAsync(self, dst, src, n, kind, stream):
        ctypes.memmove(dst, src, n)
        return (0,)

    def cudaMemcpy(self, dst, src, n, kind):
        ctypes.memmove(dst, src, n)
        return (0,)

    def cudaStreamCreate(self):
        return 0, 7

    def _ok(self, *a):
        return (0,)

    cudaStreamSynchronize = cudaStreamDestroy = cudaSetDevice = _ok

    def cudaGetErrorString(self, e):
        return 0, b"fake"


def make_fake_trt(version="10.3.0", fp16=True, dla_cores=0):
    import onnx

    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.float32, trt.float16 = np.float32, np.float16
    trt.nptype = lambda dt: dt
    trt.MemoryPoolType = Enum(WORKSPACE="workspace")
    trt.BuilderFlag = Enum(FP16="FP16", INT8="INT8", OBEY_PRECISION_CONSTRAINTS="OBEY",
                           GPU_FALLBACK="GPU_FALLBACK")
    trt.NetworkDefinitionCreationFlag = Enum(EXPLICIT_BATCH=0, STRONGLY_TYPED=5)
    trt.DeviceType = Enum(GPU="GPU", DLA="DLA")
    trt.TensorIOMode = Enum(INPUT="in", OUTPUT="out")
    sev = Enum(INTERNAL_ERROR=Named(0, "INTERNAL_ERROR"), ERROR=Named(1, "ERROR"),
               WARNING=Named(2, "WARNING"), INFO=Named(3, "INFO"), VERBOSE=Named(4, "VERBOSE"))
    trt.ILogger = type("ILogger", (), {"Severity": sev, "__init__": lambda self: None})
    trt.Logger = type("Logger", (), {"WARNING": 2, "VERBOSE": 4,
                                     "__init__": lambda self, level=2: None})
    trt.IInt8EntropyCalibrator2 = type("IInt8EntropyCalibrator2", (),
                                       {"__init__": lambda self: None})
    trt.built = []  # (network, config) of each build, for assertions

    class Tensor:
        def __init__(self, name, shape, dtype=np.float32):
            self.name, self.shape, self.dtype = name, tuple(shape), dtype

    class Layer:
        def __init__(self, node):
            self.name = node.name
            self.type = Named(0, {"LayerNormalization": "NORMALIZATION", "Softmax": "SOFTMAX",
                                  "Shape": "SHAPE"}.get(node.op_type, "OTHER"))
            is_float = node.op_type not in ("Shape", "Gather", "Concat", "Unsqueeze")
            self.outputs = [Tensor(o, (), np.float32 if is_float else np.int64)
                            for o in node.output]
            self.num_outputs = len(self.outputs)
            self.precision, self.output_types = None, {}

        def get_output(self, k):
            return self.outputs[k]

        def set_output_type(self, k, dt):
            self.output_types[k] = dt

    class Network:
        def __init__(self, flags):
            self.flags, self.path, self.layers, self.inputs, self.outputs = flags, None, [], [], []

        num_layers = property(lambda self: len(self.layers))
        num_inputs = property(lambda self: len(self.inputs))
        num_outputs = property(lambda self: len(self.outputs))

        def get_layer(self, i):
            return self.layers[i]

        def get_input(self, i):
            return self.inputs[i]

        def get_output(self, i):
            return self.outputs[i]

    class OnnxParser:
        def __init__(self, network, logger):
            self.network, self.num_errors = network, 0

        def parse_from_file(self, path):
            m = onnx.load(path)
            self.network.path = path
            self.network.onnx = m
            self.network.layers = [Layer(n) for n in m.graph.node]
            dims = lambda vi: [d.dim_value or -1 for d in vi.type.tensor_type.shape.dim]  # noqa
            inits = {t.name for t in m.graph.initializer}
            self.network.inputs = [Tensor(i.name, dims(i)) for i in m.graph.input
                                   if i.name not in inits]
            self.network.outputs = [Tensor(o.name, dims(o)) for o in m.graph.output]
            return True

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, mn, opt, mx):
            self.shapes[name] = (tuple(mn), tuple(opt), tuple(mx))

    class TimingCache:
        def __init__(self, data):
            self.data = bytes(data) or b"timing"

        def serialize(self):
            return self.data + b"+"

    class Config:
        def __init__(self):
            self.flags, self.profiles, self.pools = set(), [], {}
            self.int8_calibrator = self.timing_cache = None
            self.default_device_type, self.DLA_core = "GPU", -1

        def set_memory_pool_limit(self, pool, size):
            self.pools[pool] = size

        def set_flag(self, f):
            self.flags.add(f)

        def add_optimization_profile(self, p):
            self.profiles.append(p)

        def set_calibration_profile(self, p):
            self.calibration_profile = p

        def create_timing_cache(self, data):
            return TimingCache(data)

        def set_timing_cache(self, cache, ignore_mismatch=False):
            self.timing_cache = cache

        def get_timing_cache(self):
            return self.timing_cache

    class Builder:
        platform_has_fast_fp16 = fp16
        num_DLA_cores = dla_cores

        def __init__(self, logger):
            self.logger = logger

        def create_network(self, flags=0):
            return Network(flags)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            trt.built.append((network, config))
            cal = config.int8_calibrator
            if cal is not None:  # drain the calibrator like TensorRT does
                while cal.get_batch(["x"]) is not None:
                    pass
                cal.write_calibration_cache(b"calib")
            return b"fake-engine:" + network.path.encode()

    class Context:
        def __init__(self, engine):
            self.engine, self.shapes, self.addr = engine, {}, {}

        def set_input_shape(self, name, shape):
            self.shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            if name in self.shapes:
                return self.shapes[name]
            x = np.zeros(self.shapes[self.engine.inputs[0]], np.float32)
            out = self.engine.sess.run([name], {self.engine.inputs[0]: x})[0]
            return out.shape

        def set_tensor_address(self, name, ptr):
            self.addr[name] = ptr

        def execute_async_v3(self, stream):
            feeds = {}
            for n in self.engine.inputs:
                shape = self.shapes[n]
                raw = (ctypes.c_float * int(np.prod(shape))).from_address(self.addr[n])
                feeds[n] = np.frombuffer(raw, np.float32).reshape(shape).copy()
            outs = self.engine.sess.run(self.engine.outputs, feeds)
            for n, y in zip(self.engine.outputs, outs):
                y = np.ascontiguousarray(y, np.float32)
                ctypes.memmove(self.addr[n], y.ctypes.data, y.nbytes)
            return True

    class Engine:
        def __init__(self, path):
            import onnxruntime as ort

            self.sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            self.inputs = [i.name for i in self.sess.get_inputs()]
            self.outputs = [o.name for o in self.sess.get_outputs()]
            self.io = {i.name: i for i in self.sess.get_inputs() + self.sess.get_outputs()}
            self.num_io_tensors = len(self.inputs) + len(self.outputs)

        def get_tensor_name(self, i):
            return (self.inputs + self.outputs)[i]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.INPUT if name in self.inputs else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return np.float32

        def get_tensor_shape(self, name):
            return tuple(d if isinstance(d, int) else -1 for d in self.io[name].shape)

        def create_execution_context(self):
            return Context(self)

    class Runtime:
        def __init__(self, logger):
            self.DLA_core = None

        def deserialize_cuda_engine(self, data):
            if not data.startswith(b"fake-engine:"):
                return None
            return Engine(data[len(b"fake-engine:"):].decode())

    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, OnnxParser, Runtime
    return trt


def install(monkeypatch, version="10.3.0", device=("Fake GPU", "8.7"), **kw):
    """Patch tensorrt, the CUDA runtime and the device query; returns the fake trt."""
    import sys

    import moduseg.runtime.engine_cache as ec
    import moduseg.runtime.trt as rt

    trt = make_fake_trt(version, **kw)
    cudart = FakeCudart()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(rt, "_cudart", lambda: cudart)
    monkeypatch.setattr(ec, "cuda_device_properties", lambda index=0: device)
    return trt
