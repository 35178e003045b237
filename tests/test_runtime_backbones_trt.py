"""TensorRT backbone: geometry, preprocessing and identity with a CPU stand-in for the
engine runner; the real runner needs a GPU and is skipped here with a reason."""

from pathlib import Path

import numpy as np
import pytest

from moduseg.errors import BackendUnavailableError, InputError
from moduseg.runtime.backbones import trt_backend
from moduseg.runtime.backbones.trt_backend import TensorRTBackbone, plan_fixed_geometry
from moduseg.types import Backbone, GridGeometry

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def test_fixed_geometry_pad_and_stretch():
    g = plan_fixed_geometry((360, 480), (448, 448), 16, "pad")
    assert g == GridGeometry((360, 480), (336, 448), (28, 28), 16)
    g = plan_fixed_geometry((480, 360), (512, 512), 16, "pad")
    assert g.resized_hw == (512, 384) and g.grid_hw == (32, 32)
    g = plan_fixed_geometry((360, 480), (448, 448), 16, "stretch")
    assert g.resized_hw == (448, 448) and g.grid_hw == (28, 28)
    with pytest.raises(InputError, match="not a multiple"):
        plan_fixed_geometry((10, 10), (100, 100), 16)
    with pytest.raises(InputError, match="policy"):
        plan_fixed_geometry((10, 10), (32, 32), 16, "crop")


def test_without_tensorrt_or_gpu(tmp_path):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("tensorrt is installed; this checks the message when it is not")
    except ImportError:
        pass
    with pytest.raises(BackendUnavailableError, match="TensorRT is not installed"):
        TensorRTBackbone(tmp_path / "x.engine")
    assert TensorRTBackbone.try_from_options(home=tmp_path) is None


class FakeDevice:
    def __init__(self, name, shape, dtype):
        self.name, self.shape, self.dtype, self.ptr = name, shape, dtype, 0


class OrtRunner:
    """The ``TrtRunner`` interface on ONNX Runtime, to test the backend's logic on CPU."""

    def __init__(self, engine_path, device=0, validate=True, cuda_graph=False):
        from moduseg.runtime.engine_cache import read_sidecar
        from moduseg.runtime.onnx_session import make_session

        self.sidecar = read_sidecar(engine_path)
        self.sess = make_session(self.sidecar.onnx_path, providers="cpu")
        self.inputs = [i.name for i in self.sess.get_inputs()]
        self.outputs = [o.name for o in self.sess.get_outputs()]
        self.last = None

    def engine_shape(self, name):
        io = {i.name: i for i in self.sess.get_inputs() + self.sess.get_outputs()}
        return tuple(d if isinstance(d, int) else -1 for d in io[name].shape)

    def run_device(self, feeds):
        outs = self.sess.run(self.outputs, feeds)
        self.last = dict(zip(self.outputs, outs))
        return {n: FakeDevice(n, o.shape, o.dtype) for n, o in self.last.items()}

    def to_host(self, t):
        return self.last[t.name]

    def close(self):
        pass


@pytest.fixture
def fake_engine(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    from moduseg.export.backbone import export_torch_source
    from moduseg.runtime.engine_cache import (DeviceInfo, EngineKey, Sidecar, save_engine,
                                            graph_sha256)
    from moduseg.export.backbone import read_metadata
    from moduseg.export.sources import timm_source
    import moduseg.runtime.trt as trt_mod

    torch.manual_seed(0)
    vit = timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=(56, 84),
                            depth=1, embed_dim=32, num_heads=2, num_classes=0)
    src = timm_source("tiny", model=vit, resolution=(56, 84))
    onnx_path = export_torch_source(src, (56, 84), tmp_path / "tiny.onnx", check=False).path
    key = EngineKey.for_device(graph_sha256(onnx_path), DeviceInfo("Fake", "8.7", "10.3"),
                               "fp16")
    engine = tmp_path / key.filename("tiny")
    save_engine(b"x", engine, Sidecar(key, str(onnx_path), metadata=read_metadata(onnx_path)))
    monkeypatch.setattr(trt_mod, "TrtRunner", OrtRunner)
    return engine, onnx_path, src


@pytest.mark.slow
def test_backbone_contract_with_stand_in_runner(fake_engine):
    engine, onnx_path, src = fake_engine
    bb = TensorRTBackbone(engine, policy="pad")
    assert isinstance(bb, Backbone)
    assert bb.fixed_hw == (56, 84) and bb.patch == 14
    assert bb.mean == (0.0, 0.0, 0.0) and bb.std == (1.0, 1.0, 1.0)  # folded normalisation
    assert bb.identity.feature_dim == 32 and bb.identity.input_size == "pad:fixed56x84"
    from moduseg.runtime.engine_cache import graph_sha256
    assert bb.identity.weights_sha256 == graph_sha256(onnx_path)  # the ONNX backend's sha
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (90, 100, 3), dtype=np.uint8)
    fm = bb(image)
    assert fm.geometry == GridGeometry((90, 100), (56, 62), (4, 6), 14)
    assert fm.features.shape == (32, 4, 6) and fm.features.dtype == np.float32
    # same numbers as the torch model on the same padded [0,1] input
    import cv2
    import torch
    x = np.zeros((1, 3, 56, 84), np.float32)
    x[0, :, :56, :62] = cv2.resize(image, (62, 56), interpolation=cv2.INTER_AREA
                                   ).transpose(2, 0, 1) / 255.0
    ref = src.module(torch.from_numpy(x)).detach().numpy()[0]
    np.testing.assert_allclose(fm.features, ref, atol=2e-4)
    with pytest.raises(InputError, match="uint8"):
        bb(image.astype(np.float32))


def test_camvid_frame_stretch(fake_engine):
    frames = sorted((DATA / "camvid" / "val").glob("*.png"))
    if not frames:
        pytest.skip(f"CamVid not found under {DATA}")
    import cv2
    engine, _, _ = fake_engine
    bb = TensorRTBackbone(engine, policy="stretch")
    img = cv2.imread(str(frames[0]))[:, :, ::-1].copy()
    fm = bb(img)
    assert fm.geometry.grid_hw == (4, 6) and fm.geometry.resized_hw == (56, 84)
    fm.check_finite()


def test_runner_on_gpu():
    trt = pytest.importorskip("tensorrt", reason="needs TensorRT and an NVIDIA GPU and driver")
    from moduseg.runtime.engine_cache import current_device
    try:
        current_device()
    except BackendUnavailableError as e:
        pytest.skip(f"needs an NVIDIA GPU and driver: {e}")
    assert trt.__version__  # the engine round trip runs in tests/test_export_engine.py::test_build_on_gpu


def test_module_imports_without_gpu_stack():
    assert trt_backend.TensorRTBackbone is TensorRTBackbone


def test_views_run_the_same_engine_more_times_and_match_the_onnx_backend(fake_engine):
    """backbone.flip / backbone.shifts on TensorRT: the engine on each view, combined on
    the host exactly as the ONNX Runtime backend combines them (same graph), so a bank
    built on the CPU matches; the single-pass device path refuses combined views."""
    from moduseg.runtime.backbones.onnx_backbone import OnnxBackbone

    engine, onnx_path, _ = fake_engine
    image = np.random.default_rng(1).integers(0, 256, (90, 100, 3), dtype=np.uint8)
    for flip, shifts in ((True, None), (False, "square-interleave"), (True, "diagonal-mean")):
        bb = TensorRTBackbone(engine, policy="pad", flip=flip, shifts=shifts)
        ref = OnnxBackbone(onnx_path, bb.identity.name, mean=bb.mean, std=bb.std,
                           flip=flip, shifts=shifts)
        fm, want = bb(image), ref(image)
        assert fm.geometry == want.geometry and fm.device is None
        assert fm.geometry.grid_hw == ((8, 12) if shifts else (4, 6))
        np.testing.assert_allclose(fm.features, want.features, atol=2e-4)
        assert bb.identity.name.endswith(("+hflip" if flip else "")
                                         + (f"+shift-{shifts}" if shifts else ""))
        with pytest.raises(InputError, match="combined on the host"):
            bb.device_features(image)
    plain = TensorRTBackbone(engine, policy="pad")
    assert not plain.views and plain(image).geometry.grid_hw == (4, 6)
