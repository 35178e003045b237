"""``runtime.runners``: one ``Runner`` protocol for ONNX Runtime, TensorRT engines and
Triton models; backbones and proposers take a runner factory; the composition root
picks the runner class from the backend's ``BACKENDS`` entry."""

import sys
import types

import numpy as np
import pytest

from moduseg.build import Backend, build_proposer, resolve_backend
from moduseg.config import ModuSegConfig
from moduseg.errors import BackendUnavailableError, InputError, ModuSegError
from moduseg.registry import BACKENDS, BackendEntry, UnknownNameError
from moduseg.runtime import runners as rr
from moduseg.runtime.backbones.onnx_backbone import OnnxBackbone
from moduseg.runtime.proposers.entityseg import METADATA_KEY, EntitySegMeta, EntitySegProposer
from moduseg.runtime.proposers.sam_model import SamEncoder
from moduseg.runtime.runners import (OrtRunner, Runner, TensorSpec, TritonRunner, TritonRunners,
                                     TrtEngineRunner)


@pytest.fixture
def tiny_onnx(tmp_path):
    """y = x * 2 + b, z = x + 1 over a [1, 3, H, W] input, with one metadata entry."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "h", "w"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, "h", "w"])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 3, "h", "w"])
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["x2"]),
         helper.make_node("Add", ["x2", "one"], ["y"]),
         helper.make_node("Add", ["x", "one"], ["z"])],
        "tiny", [x], [y, z], initializer=[two, one])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {"moduseg.patch_size": "1"})
    path = tmp_path / "tiny.onnx"
    onnx.save(model, str(path))
    return path


# ---- ONNX Runtime -----------------------------------------------------------------------

def test_ort_runner_describes_and_runs_a_graph(tiny_onnx):
    r = OrtRunner(tiny_onnx, providers="cpu", threads=1)
    assert isinstance(r, Runner)
    assert [s.name for s in r.inputs] == ["x"] and [s.name for s in r.outputs] == ["y", "z"]
    assert r.inputs[0].shape[:2] == (1, 3) and not r.inputs[0].fixed
    assert r.inputs[0].dtype == np.float32 and r.metadata == {"moduseg.patch_size": "1"}
    assert r.device == "onnxruntime CPUExecutionProvider"
    x = np.arange(12, dtype=np.float32).reshape(1, 3, 2, 2)
    out = r.run({"x": x})
    assert list(out) == ["y", "z"]
    np.testing.assert_array_equal(out["y"], x * 2 + 1)
    np.testing.assert_array_equal(out["z"], x + 1)
    assert list(r.run({"x": x}, ["z"])) == ["z"]
    assert "OrtRunner(tiny.onnx" in repr(r)
    r.close()


def test_open_picks_the_runner_by_file_kind(tiny_onnx, tmp_path):
    # an ONNX graph on the TensorRT-engine backend runs in ONNX Runtime (SAM's graphs)
    assert isinstance(TrtEngineRunner.open(tiny_onnx, "sam_decoder", providers="cpu"),
                      OrtRunner)
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not an engine")
    try:
        import tensorrt  # noqa: F401
        pytest.skip("tensorrt is installed; this checks the message when it is not")
    except ImportError:
        pass
    # an engine file on any backend is a TensorRT engine: without TensorRT, one clear line
    with pytest.raises(BackendUnavailableError, match="TensorRT is not installed") as e:
        OrtRunner.open(engine, "entityseg", providers="cpu")
    assert "\n" not in str(e.value)


# ---- TensorRT (wiring with a stand-in for trt.TrtRunner: no tensorrt, driver or GPU) ----

class FakeTrt:
    """``trt.TrtRunner``'s interface: names, engine shapes, dtypes, sidecar, device run."""

    def __init__(self, path, device=0, validate=True, cuda_graph=False):
        self.path, self.device, self.cuda_graph = path, device, cuda_graph
        self.inputs, self.outputs = ["image"], ["features", "cls"]
        self.dtypes = {"image": np.dtype(np.float16), "features": np.dtype(np.float32),
                       "cls": np.dtype(np.float32)}
        self.sidecar = types.SimpleNamespace(metadata={"patch_size": "14"})
        self.closed = False

    def engine_shape(self, name):
        return {"image": (1, 3, -1, -1), "features": (1, 8, -1, -1), "cls": (1, 2)}[name]

    def run(self, feeds):
        x = feeds["image"]
        return {"features": np.full((1, 8, 2, 2), x.sum(), np.float32),
                "cls": np.ones((1, 2), np.float32)}

    def run_device(self, feeds):
        return {"features": ("on the device", feeds["image"].shape)}

    def to_host(self, t):
        return np.zeros(3)

    def close(self):
        self.closed = True


def test_trt_engine_runner_wraps_the_engine_runner(tmp_path, monkeypatch):
    import moduseg.runtime.trt as trt_mod

    monkeypatch.setattr(trt_mod, "TrtRunner", FakeTrt)
    engine = tmp_path / "b.engine"
    r = OrtRunner.open(engine, "backbone", device=1)
    assert isinstance(r, TrtEngineRunner) and isinstance(r, Runner)
    assert r.inputs == (TensorSpec("image", (1, 3, -1, -1), np.dtype(np.float16)),)
    assert [s.name for s in r.outputs] == ["features", "cls"]
    assert r.metadata == {"patch_size": "14"} and r.device == "tensorrt cuda:1"
    x = np.ones((1, 3, 4, 4), np.float32)
    assert list(r.run({"image": x}, ["features"])) == ["features"]
    assert sorted(r.run({"image": x})) == ["cls", "features"]
    assert r.run_device({"image": x})["features"] == ("on the device", (1, 3, 4, 4))
    fake = r.engine
    r.close()
    assert fake.closed and r.engine is None


# ---- a runner injected into a backbone and a proposer -------------------------------------

class FakeRunner:
    """A ``Runner`` that records its feeds and answers with fixed arrays."""

    device = "fake"

    def __init__(self, inputs, outputs, metadata=None, answer=None):
        self.inputs = tuple(TensorSpec(n, s) for n, s in inputs)
        self.outputs = tuple(TensorSpec(n, s) for n, s in outputs)
        self.metadata = dict(metadata or {})
        self.answer = answer
        self.feeds = []
        self.closed = False

    def run(self, feeds, outputs=None):
        self.feeds.append(dict(feeds))
        out = self.answer(feeds)
        return {n: out[n] for n in (outputs or out)}

    def close(self):
        self.closed = True


class Factory:
    """A ``RunnerFactory`` that hands out ``make()`` and records what it was asked."""

    def __init__(self, make, remote=False):
        self.make, self.remote, self.calls = make, remote, []

    def __call__(self, path, role, *, threads=None):
        self.calls.append((path.name, role, threads))
        return self.make()


def _backbone_runner():
    def answer(feeds):
        x = feeds["pixels"]
        h, w = x.shape[2] // 14, x.shape[3] // 14
        return {"tokens": np.full((1, 5, h, w), float(x.shape[3]), np.float32)}
    return FakeRunner([("pixels", (1, 3, None, None))], [("tokens", (1, 5, None, None))],
                      {"moduseg.patch_size": "14"}, answer)


def test_a_fake_runner_runs_the_backbone(tmp_path):
    graph = tmp_path / "bb.onnx"
    graph.write_bytes(b"weights")                 # named for the identity's checksum only
    runners = Factory(_backbone_runner)
    bb = OnnxBackbone(graph, "toy", pixels=None, short_side=None, runners=runners,
                      threads=3)
    assert runners.calls == [("bb.onnx", "backbone", 3)]
    assert bb.input_name == "pixels" and bb.output_name == "tokens"
    assert bb.identity.feature_dim == 5 and bb.patch == 14
    fmap = bb(np.zeros((28, 42, 3), np.uint8))
    assert fmap.features.shape == (5, 2, 3) and fmap.geometry.grid_hw == (2, 3)
    (feed,) = bb.runner.feeds
    assert feed["pixels"].shape == (1, 3, 28, 42) and feed["pixels"].dtype == np.float32
    np.testing.assert_array_equal(fmap.features, 42.0)
    bb.close()
    assert bb.runner.closed


def _entityseg_runner():
    meta = EntitySegMeta((64, 64), 64, 64, (0.0, 0.0, 0.0), 2, "toy").to_json()

    def answer(feeds):
        assert feeds["images"].shape == (1, 3, 64, 64)
        cls = np.array([[[8.0, -8.0], [-8.0, 8.0]]], np.float32)   # query 0: an entity
        masks = np.full((1, 2, 16, 16), -8.0, np.float32)
        masks[0, 0, :8, :8] = 8.0                                  # top-left quarter
        return {"pred_logits": cls, "pred_masks": masks}
    return FakeRunner([("images", (1, 3, 64, 64))],
                      [("pred_logits", (1, 2, 2)), ("pred_masks", (1, 2, 16, 16))],
                      {METADATA_KEY: meta}, answer)


def test_a_fake_runner_runs_a_proposer(tmp_path):
    model = tmp_path / "entity.onnx"
    model.write_bytes(b"graph")
    runners = Factory(_entityseg_runner)
    prop = EntitySegProposer(model, runners=runners, min_score=0.0)
    assert runners.calls == [("entity.onnx", "entityseg", None)]
    props = prop(np.zeros((64, 64, 3), np.uint8))
    assert len(props) == 1 and props.masks[0, :28, :28].all() and not props.masks[0, 36:].any()


def test_a_remote_factory_serves_every_encoder_size_with_one_runner(tmp_path):
    enc = tmp_path / "enc.onnx"
    enc.write_bytes(b"graph")

    def make():
        return FakeRunner([("x", (1, 3, None, None))], [("emb", (1, 4, None, None))], {},
                          lambda f: {"emb": np.zeros((1, 4, f["x"].shape[2] // 16,
                                                      f["x"].shape[3] // 16), np.float32)})
    runners = Factory(make, remote=True)
    sam = SamEncoder(enc, quantize=False, padding_pool=0, runners=runners)
    im, cells, _ = sam.encode(np.zeros((272, 640, 3), np.uint8))
    assert im.embedding.shape == (1, 4, 28, 64)
    sam.encode(np.zeros((400, 300, 3), np.uint8))
    # no content-sized rewrite is written or opened: the served encoder takes any size
    assert runners.calls == [("enc.onnx", "sam_encoder", None)]
    assert not list(tmp_path.glob("*crop*"))


# ---- the registry and the composition root ------------------------------------------------

def test_the_backend_entry_names_the_runner_class():
    assert BACKENDS["cpu"].runner_class() is OrtRunner
    assert BACKENDS["cuda"].runner_class() is OrtRunner
    assert BACKENDS["tensorrt-native"].runner_class() is TrtEngineRunner


def test_the_composition_root_opens_graphs_with_the_registered_runner(tmp_path):
    model = tmp_path / "entity.onnx"
    model.write_bytes(b"graph")
    opened = []

    class ToyRunner:
        @classmethod
        def open(cls, path, role="", *, providers="auto", threads=None, device=0):
            opened.append((path.name, role, providers))
            return _entityseg_runner()

    with BACKENDS.registered("toy", BackendEntry("toy", providers="toy-ep",
                                                 runner=ToyRunner)):
        be = resolve_backend("toy")
        cfg = ModuSegConfig().with_overrides({"proposer.name": "entityseg",
                                              "proposer.model": str(model)})
        prop = build_proposer(cfg, be)
    assert opened == [("entity.onnx", "entityseg", "toy-ep")]
    assert isinstance(prop.runner, FakeRunner)


def test_a_backend_can_carry_its_own_runner_factory(tiny_onnx):
    runners = Factory(_backbone_runner)
    be = Backend("cpu", "cpu", "cpu", runners=runners)
    assert resolve_backend(be) is be and be.runner_factory() is runners
    assert be == resolve_backend("cpu")           # the factory is not part of the identity
    assert isinstance(resolve_backend("cpu").runner_factory()(tiny_onnx, "backbone"), OrtRunner)


def test_an_unknown_backend_is_one_clear_line():
    with pytest.raises(UnknownNameError) as e:
        resolve_backend("tensorrt-nativ")
    msg = str(e.value)
    assert "\n" not in msg and "unknown backend 'tensorrt-nativ'" in msg
    assert "did you mean tensorrt-native?" in msg and isinstance(e.value, InputError)


# ---- Triton -----------------------------------------------------------------------------

def _fake_pb(responses):
    """A stand-in for ``triton_python_backend_utils`` (it exists only inside Triton)."""
    pb = types.ModuleType("triton_python_backend_utils")

    class Tensor:
        def __init__(self, name, array):
            self.name, self.array = name, array

        def as_numpy(self):
            return self.array

    class Response:
        def __init__(self, tensors, error=None):
            self.tensors, self._error = tensors, error

        def has_error(self):
            return self._error is not None

        def error(self):
            return types.SimpleNamespace(message=lambda: self._error)

    class InferenceRequest:
        def __init__(self, model_name, requested_output_names, inputs):
            self.model, self.names, self.inputs = model_name, requested_output_names, inputs

        def exec(self):
            responses.append(self)
            if self.model == "broken":
                return Response({}, "no such model")
            feeds = {t.name: t.array for t in self.inputs}
            return Response({n: Tensor(n, feeds["x"] + i) for i, n in enumerate(self.names)})

    pb.Tensor, pb.InferenceRequest = Tensor, InferenceRequest
    pb.get_output_tensor_by_name = lambda resp, n: resp.tensors[n]
    return pb


def test_triton_runner_over_bls(monkeypatch):
    sent = []
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", _fake_pb(sent))
    r = TritonRunner("backbone", ["x"], ["y", "z"])
    assert isinstance(r, Runner) and r.device == "triton backbone (BLS)"
    out = r.run({"x": np.ones(2, np.float32)}, ["z"])
    assert list(out) == ["z"] and sent[-1].model == "backbone" and sent[-1].names == ["z"]
    assert sorted(r.run({"x": np.ones(2, np.float32)})) == ["y", "z"]
    with pytest.raises(ModuSegError, match="model broken: no such model"):
        TritonRunner("broken", ["x"], ["y"]).run({"x": np.ones(1)})


def test_triton_runner_over_tritonclient_imports_it_only_when_run(monkeypatch):
    calls = []
    http = types.ModuleType("tritonclient.http")

    class InferInput:
        def __init__(self, name, shape, dtype):
            self.name, self.shape, self.dtype = name, shape, dtype

        def set_data_from_numpy(self, a):
            self.data = a

    class Client:
        def __init__(self, url):
            calls.append(("connect", url))

        def infer(self, model, inputs, outputs):
            calls.append(("infer", model, [(i.name, i.dtype) for i in inputs],
                          [o.name for o in outputs]))
            return types.SimpleNamespace(as_numpy=lambda n: inputs[0].data * 3)

        def close(self):
            calls.append(("close",))

    http.InferInput, http.InferenceServerClient = InferInput, Client
    http.InferRequestedOutput = lambda n: types.SimpleNamespace(name=n)
    pkg = types.ModuleType("tritonclient")
    pkg.http = http
    monkeypatch.setitem(sys.modules, "tritonclient", pkg)
    monkeypatch.setitem(sys.modules, "tritonclient.http", http)
    r = TritonRunner("sam_decoder", ["x"], ["masks"], url="127.0.0.1:8000")
    assert calls == []                                   # nothing imported or opened yet
    out = r.run({"x": np.array([1, 2], np.int64)})
    np.testing.assert_array_equal(out["masks"], [3, 6])
    assert calls == [("connect", "127.0.0.1:8000"),
                     ("infer", "sam_decoder", [("x", "INT64")], ["masks"])]
    r.close()
    assert calls[-1] == ("close",)
    with pytest.raises(InputError, match="cannot be sent to Triton"):
        r.run({"x": np.array(["a"])})


def test_triton_runners_read_names_and_metadata_from_the_graph(tiny_onnx):
    runners = TritonRunners({"sam_encoder": "sam_encoder", "backbone": "backbone"},
                            dynamic_hw=("sam_encoder",))
    assert rr.is_remote(runners) and not rr.is_remote(rr.runner_factory())
    bb = runners(tiny_onnx, "backbone")
    assert bb.model == "backbone" and [s.name for s in bb.inputs] == ["x"]
    assert [s.name for s in bb.outputs] == ["y", "z"] and bb.metadata["moduseg.patch_size"] == "1"
    assert bb.inputs[0].shape == (1, 3, "h", "w") and bb.inputs[0].dtype == np.float32
    enc = runners(tiny_onnx, "sam_encoder")
    assert enc.inputs[0].shape == (1, 3, None, None)
    with pytest.raises(InputError, match="no served model for the 'sam_decoder' graph"):
        runners(tiny_onnx, "sam_decoder")
