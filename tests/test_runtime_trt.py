"""``TrtRunner`` logic (I/O discovery, dynamic shapes, buffer growth, async copies, CUDA
graph capture/replay) against in-process fakes of tensorrt and the CUDA runtime whose
'device memory' is host memory. Real GPU runs are in test_export_engine.py (skipped here)."""

import ctypes
import sys
import types

import numpy as np
import pytest

from moduseg.errors import InputError
from moduseg.runtime.engine_cache import DeviceInfo, EngineKey, Sidecar, save_engine


from trt_fakes import Enum
from trt_fakes import FakeCudart as _BaseCudart


class FakeCudart(_BaseCudart):
    """The runtime fake plus freed-pointer bookkeeping and CUDA graph capture."""

    def __init__(self):
        super().__init__()
        self.freed, self.capturing, self.launches = [], None, 0

    def cudaFree(self, p):
        self.freed.append(p)
        return (0,)

    cudaFreeHost = cudaFree

    def cudaStreamBeginCapture(self, s, mode):
        self.capturing = []
        return (0,)

    def cudaStreamEndCapture(self, s):
        graph, self.capturing = self.capturing, None
        return 0, graph

    def cudaGraphInstantiate(self, graph, flags):
        return 0, list(graph)

    def cudaGraphLaunch(self, exe, s):
        self.launches += 1
        for fn in exe:
            fn()
        return (0,)

    def cudaGraphExecDestroy(self, e):
        return (0,)

    def cudaGraphDestroy(self, g):
        return (0,)


def make_fake_trt(cudart):
    """An 'engine' image [1,3,H,W] -> features [1,4,H/2,W/2] (2x2 mean of channel c % 3)."""

    class Context:
        def __init__(self):
            self.shapes, self.addr, self.runs = {}, {}, 0

        def set_input_shape(self, name, shape):
            if len(shape) != 4 or shape[2] % 2 or shape[3] % 2 or max(shape[2:]) > 64:
                return False
            self.shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            _, _, h, w = self.shapes["image"]
            return (1, 4, h // 2, w // 2)

        def set_tensor_address(self, name, ptr):
            self.addr[name] = ptr

        def _compute(self):
            self.runs += 1
            shape = self.shapes["image"]
            n = int(np.prod(shape))
            x = np.frombuffer((ctypes.c_float * n).from_address(self.addr["image"]),
                              np.float32).reshape(shape)
            oshape = self.get_tensor_shape("features")
            y = np.frombuffer((ctypes.c_float * int(np.prod(oshape))).from_address(
                self.addr["features"]), np.float32).reshape(oshape)
            pooled = x.reshape(1, 3, shape[2] // 2, 2, shape[3] // 2, 2).mean((3, 5))
            y[...] = pooled[:, [0, 1, 2, 0]]

        def execute_async_v3(self, stream):
            assert isinstance(stream, int)
            if cudart.capturing is not None:
                cudart.capturing.append(self._compute)
            else:
                self._compute()
            return True

    class Engine:
        num_io_tensors = 2

        def __init__(self):
            self.context = Context()

        def get_tensor_name(self, i):
            return ["image", "features"][i]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.INPUT if name == "image" else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return np.float32

        def get_tensor_shape(self, name):
            return (1, 3, -1, -1) if name == "image" else (1, 4, -1, -1)

        def get_tensor_profile_shape(self, name, profile):
            return [(1, 3, 2, 2), (1, 3, 16, 16), (1, 3, 64, 64)]

        def create_execution_context(self):
            return self.context

    class Runtime:
        def __init__(self, logger):
            self.DLA_core = None

        def deserialize_cuda_engine(self, data):
            return Engine() if data == b"fake-engine" else None

    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.3.0"
    trt.Logger = type("Logger", (), {"WARNING": 2, "VERBOSE": 4,
                                      "__init__": lambda self, level=2: None})
    trt.Runtime = Runtime
    trt.TensorIOMode = Enum(INPUT="in", OUTPUT="out")
    trt.nptype = lambda dt: dt
    return trt


@pytest.fixture
def runner_env(tmp_path, monkeypatch):
    import moduseg.runtime.engine_cache as ec
    import moduseg.runtime.trt as rt

    cudart = FakeCudart()
    trt = make_fake_trt(cudart)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(rt, "_cudart", lambda: cudart)
    monkeypatch.setattr(ec, "cuda_device_properties", lambda index=0: ("Fake GPU", "8.7"))
    key = EngineKey.for_device("ab" * 32, DeviceInfo("Fake GPU", "8.7", "10.3.0"), "fp16")
    path = tmp_path / key.filename("m")
    save_engine(b"fake-engine", path, Sidecar(key, "m.onnx"))
    return rt, path, cudart


def expected(x):
    h, w = x.shape[2:]
    p = x.reshape(1, 3, h // 2, 2, w // 2, 2).mean((3, 5))
    return p[:, [0, 1, 2, 0]]


def test_run_dynamic_shapes_and_device_outputs(runner_env):
    rt, path, cudart = runner_env
    r = rt.TrtRunner(path)
    assert r.inputs == ["image"] and r.outputs == ["features"]
    assert r.engine_shape("image") == (1, 3, -1, -1)
    x = np.random.default_rng(0).random((1, 3, 8, 12), dtype=np.float32)
    out = r.run(x)["features"]
    np.testing.assert_allclose(out, expected(x), rtol=1e-6)
    dev = r.run_device({"image": x})["features"]
    assert dev.shape == (1, 4, 4, 6) and dev.dtype == np.float32 and dev.ptr
    assert dev.nbytes == 4 * 4 * 6 * 4
    np.testing.assert_allclose(r.to_host(dev), expected(x), rtol=1e-6)
    # a larger input grows the buffers; a smaller one reuses them
    big = np.random.default_rng(1).random((1, 3, 32, 40), dtype=np.float32)
    np.testing.assert_allclose(r.run(big)["features"], expected(big), rtol=1e-6)
    small = big[:, :, :4, :4].copy()
    np.testing.assert_allclose(r.run(small)["features"], expected(small), rtol=1e-6)
    with pytest.raises(InputError, match="outside the engine's profile"):
        r.run(np.zeros((1, 3, 80, 80), np.float32))
    with pytest.raises(InputError, match="needs input 'image'"):
        r.run({"other": x})
    r.close()
    assert len(cudart.freed) >= 2


def test_cuda_graph_capture_and_replay(runner_env):
    rt, path, cudart = runner_env
    r = rt.TrtRunner(path, cuda_graph=True)
    rng = np.random.default_rng(2)
    xs = [rng.random((1, 3, 8, 8), dtype=np.float32) for _ in range(3)]
    for x in xs:  # first call captures, the next two replay with new input data
        np.testing.assert_allclose(r.run(x)["features"], expected(x), rtol=1e-6)
    assert cudart.launches == 2
    y = rng.random((1, 3, 16, 8), dtype=np.float32)  # new shape: recapture
    np.testing.assert_allclose(r.run(y)["features"], expected(y), rtol=1e-6)
    assert cudart.launches == 2
    np.testing.assert_allclose(r.run(y)["features"], expected(y), rtol=1e-6)
    assert cudart.launches == 3


def test_refuses_engine_for_other_tensorrt(runner_env, tmp_path):
    rt, path, _ = runner_env
    from moduseg.runtime.engine_cache import EngineMismatchError

    key = EngineKey.for_device("cd" * 32, DeviceInfo("Fake GPU", "8.7", "8.6.1"), "fp16")
    other = tmp_path / key.filename("old")
    save_engine(b"fake-engine", other, Sidecar(key, "old.onnx"))
    with pytest.raises(EngineMismatchError, match="TensorRT 8.6.1"):
        rt.TrtRunner(other)
    # bytes TensorRT cannot deserialize (no sidecar check) -> clear error, no crash
    key = EngineKey.for_device("ef" * 32, DeviceInfo("Fake GPU", "8.7", "10.3.0"), "fp16")
    bad = tmp_path / key.filename("bad")
    save_engine(b"garbage", bad, Sidecar(key, "bad.onnx"))
    with pytest.raises(EngineMismatchError, match="could not deserialize"):
        rt.TrtRunner(bad)


def test_ort_tensorrt_provider_options(tmp_path):
    import moduseg.runtime.trt as rt

    o = rt.ort_tensorrt_options(tmp_path, fp16=True, device=1)
    assert o["trt_engine_cache_enable"] and o["trt_engine_cache_path"] == str(tmp_path)
    assert o["trt_fp16_enable"] and o["trt_layer_norm_fp32_fallback"] and o["device_id"] == 1
