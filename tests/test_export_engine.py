"""Engine-build logic that needs no GPU: shapes, profiles, FP32 pinning, calibration data.

The build itself needs TensorRT and a GPU and is skipped here with a reason.
"""

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

from moduseg.errors import InputError  # noqa: E402
from moduseg.export.engine import (BuildOptions, calibration_batches, parse_named_shapes,  # noqa: E402
                                   parse_shape, profile_signature, resolve_profiles,
                                   select_fp32_layers)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def model(dims, name="image", res=None):
    x = helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info("features", TensorProto.FLOAT, None)
    m = helper.make_model(helper.make_graph([helper.make_node("Relu", [name], ["features"])],
                                            "g", [x], [y]))
    return m


def test_parse_shapes():
    assert parse_shape("1x3x224x224") == (1, 3, 224, 224)
    assert parse_shape("1,3,14,28") == (1, 3, 14, 28)
    with pytest.raises(InputError):
        parse_shape("1x3xHxW")
    assert parse_named_shapes(["image:2x3x56x56", "4x3x14x14"]) == {
        "image": (2, 3, 56, 56), "": (4, 3, 14, 14)}


def test_profiles_static_dynamic_and_defaults():
    assert resolve_profiles(model([1, 3, 224, 224])) == {}
    # dynamic batch only: defaults to batch 1 everywhere
    p = resolve_profiles(model(["N", 3, 224, 224]))
    assert p == {"image": ((1, 3, 224, 224),) * 3}
    # dynamic H/W: sizes from the export metadata, overridable per bound
    m = model(["N", 3, "h", "w"])
    p = resolve_profiles(m, metadata={"resolution": "364x490"})
    assert p["image"][1] == (1, 3, 364, 490)
    p = resolve_profiles(m, ["1x3x224x224"], ["image:1x3x364x490"], ["4x3x1008x1008"])
    assert p["image"] == ((1, 3, 224, 224), (1, 3, 364, 490), (4, 3, 1008, 1008))
    assert profile_signature(p) == "image=min1x3x224x224-opt1x3x364x490-max4x3x1008x1008"
    assert profile_signature({"image": ((1, 3, 2, 2),) * 3}) == "image=1x3x2x2"
    with pytest.raises(InputError, match="--opt-shape"):
        resolve_profiles(m)
    with pytest.raises(InputError, match="min <= opt <= max"):
        resolve_profiles(m, ["1x3x400x400"], ["1x3x364x490"], ["1x3x1008x1008"])
    with pytest.raises(InputError, match="does not fit"):
        resolve_profiles(m, None, ["1x4x364x490"], None)


def test_select_fp32_layers_by_op_type_and_pattern():
    node_ops = {"/blk0/ln1/LayerNormalization": "LayerNormalization",
                "/blk0/attn/Softmax": "Softmax", "/blk0/mlp/MatMul": "MatMul",
                "/pos/Shape": "Shape"}
    layers = [("/blk0/ln1/LayerNormalization", "NORMALIZATION", True),
              ("/blk0/attn/Softmax", "SOFTMAX", True),
              ("/blk0/mlp/MatMul", "MATRIX_MULTIPLY", True),
              ("/pos/Shape", "SHAPE", False),
              ("/blk0/attn/Softmax_1_copy", "SHUFFLE", True)]
    got = select_fp32_layers(layers, node_ops, ("LayerNormalization", "Softmax"))
    assert got == ["/blk0/ln1/LayerNormalization", "/blk0/attn/Softmax",
                   "/blk0/attn/Softmax_1_copy"]
    assert select_fp32_layers(layers, node_ops, (r"mlp/.*MatMul$",)) == ["/blk0/mlp/MatMul"]
    assert select_fp32_layers(layers, node_ops, (r"Shape",)) == []  # never non-float layers
    # without node names (parser named layers differently): by TensorRT layer type
    assert select_fp32_layers(layers, {}, ("Softmax",)) == ["/blk0/attn/Softmax"]


def test_build_options_validation():
    with pytest.raises(InputError, match="--calib-dir"):
        BuildOptions(precision="int8").validate()
    with pytest.raises(InputError, match="--precision"):
        BuildOptions(precision="fp8").validate()
    assert BuildOptions(precision="int8", calib_dir="x").validate().precision == "int8"


def test_calibration_batches(tmp_path):
    import cv2

    for i in range(5):
        img = np.full((30, 40, 3), 40 * i, np.uint8)
        cv2.imwrite(str(tmp_path / f"{i}.png"), img)
    b = calibration_batches(tmp_path, (2, 3, 28, 42), mean=(0.5, 0.5, 0.5),
                            std=(0.25, 0.25, 0.25))
    assert len(b) == 2 and b[0].shape == (2, 3, 28, 42) and b[0].dtype == np.float32
    np.testing.assert_allclose(b[0][1], (40 / 255 - 0.5) / 0.25, rtol=1e-5)
    with pytest.raises(InputError, match="no images"):
        calibration_batches(tmp_path / "nothing", (1, 3, 14, 14))
    with pytest.raises(InputError, match="fewer than one batch"):
        calibration_batches(tmp_path, (8, 3, 14, 14))


def test_engine_command_without_tensorrt_fails_clearly(tmp_path):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("tensorrt is installed; this checks the message when it is not")
    except ImportError:
        pass
    from moduseg.cli import cli

    path = tmp_path / "m.onnx"
    onnx.save(model([1, 3, 28, 28]), path)
    r = CliRunner().invoke(cli, ["export", "engine", str(path)])
    assert r.exit_code == 2 and "TensorRT is not installed" in r.output


def test_build_on_gpu(tmp_path):
    pytest.importorskip("tensorrt", reason="needs TensorRT and an NVIDIA GPU and driver")
    from moduseg.errors import BackendUnavailableError
    from moduseg.export.engine import build_cached_engine
    from moduseg.runtime.engine_cache import current_device

    try:
        current_device()
    except BackendUnavailableError as e:
        pytest.skip(f"needs an NVIDIA GPU and driver: {e}")
    onnx_path = _tiny_vit_onnx(tmp_path / "t.onnx")
    path, side, reused = build_cached_engine(onnx_path, BuildOptions(precision="fp16"),
                                             tmp_path / "cache")
    assert path.is_file() and not reused and side.accuracy["ok"]
    assert build_cached_engine(onnx_path, BuildOptions(precision="fp16"),
                               tmp_path / "cache")[2]


def _tiny_vit_onnx(path, check: bool = True):
    """A 2-block DINOv2-shaped ViT at 56 x 56, random weights, exported to ``path``."""
    torch = pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    from moduseg.export.backbone import export_torch_source
    from moduseg.export.sources import timm_source

    torch.manual_seed(0)
    vit = timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=56, depth=2,
                            embed_dim=48, num_heads=2, num_classes=0)
    src = timm_source("tiny", model=vit, resolution=(56, 56))
    return export_torch_source(src, (56, 56), path, check=check).path


@pytest.mark.slow
def test_mixed_fp16_graph_for_strongly_typed_builds(tmp_path):
    """TensorRT >= 11 builds FP16 from an FP16 graph; check that graph on CPU."""
    pytest.importorskip("onnxconverter_common", reason="needs onnxconverter-common")
    from moduseg.export.engine import to_mixed_fp16
    from moduseg.export.parity import compare, onnx_runner, parity_inputs

    fp32 = _tiny_vit_onnx(tmp_path / "t.onnx", check=False)
    fp16 = to_mixed_fp16(fp32, tmp_path / "t16.onnx", ("LayerNormalization", "Softmax"))
    m = onnx.load(str(fp16))
    assert m.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT  # I/O kept FP32
    halves = [t for t in m.graph.initializer if t.data_type == TensorProto.FLOAT16]
    assert halves, "weights should be FP16"
    rep = compare(onnx_runner(fp32), onnx_runner(fp16), parity_inputs((56, 56)),
                  threshold=0.999)
    assert rep.ok, rep.lines()


# ------------------------------------------------ build -> cache -> run, on fakes (CPU)

@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    torch = pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    from moduseg.export.backbone import export_torch_source
    from moduseg.export.sources import timm_source

    torch.manual_seed(0)
    vit = timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=(28, 42),
                            depth=1, embed_dim=32, num_heads=2, num_classes=0)
    src = timm_source("tiny", model=vit, resolution=(28, 42))
    out = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    return export_torch_source(src, (28, 42), out, dynamic_batch=True, check=False).path


def test_build_cache_reuse_and_accuracy_on_fakes(tiny_onnx, tmp_path, monkeypatch):
    import trt_fakes
    from moduseg.export.engine import build_cached_engine
    from moduseg.runtime.engine_cache import read_sidecar

    trt = trt_fakes.install(monkeypatch)
    opts = BuildOptions(precision="fp16", timing_cache=str(tmp_path / "timing.cache"),
                        fp32_layers=("LayerNormalization", "Softmax"), workspace_mb=256)
    path, side, reused = build_cached_engine(tiny_onnx, opts, tmp_path / "cache")
    assert not reused and path.parent == tmp_path / "cache"
    assert ".trt10.3.0.Fake-GPU.sm87.fp16." in path.name
    assert side.key.profile == "image=1x3x28x42"  # dynamic batch -> batch 1 profile
    assert side.accuracy["ok"] and side.accuracy["min"] > 0.9999
    assert read_sidecar(path).metadata["patch_size"] == "14"
    network, config = trt.built[-1]
    assert {"FP16", "OBEY"} <= config.flags and config.pools["workspace"] == 256 << 20
    pinned = [l.name for l in network.layers if l.precision is not None]
    assert pinned and all(("LayerNorm" in n or "Softmax" in n) for n in pinned)
    assert (tmp_path / "timing.cache").read_bytes() == b"timing+"
    # same graph, device, precision -> the cached engine is reused, no new build
    n_builds = len(trt.built)
    assert build_cached_engine(tiny_onnx, opts, tmp_path / "cache")[2]
    assert len(trt.built) == n_builds
    build_cached_engine(tiny_onnx, opts, tmp_path / "cache", force=True)
    assert trt.built[-1][1].timing_cache.data == b"timing+"  # loaded the saved cache


def test_backbone_on_fake_engine(tiny_onnx, tmp_path, monkeypatch):
    import trt_fakes
    from moduseg.export.engine import build_cached_engine
    from moduseg.runtime.backbones.onnx_backbone import OnnxBackbone
    from moduseg.runtime.backbones.trt_backend import TensorRTBackbone

    trt_fakes.install(monkeypatch)
    path, _, _ = build_cached_engine(tiny_onnx, BuildOptions(precision="fp32"),
                                     tmp_path / "c")
    bb = TensorRTBackbone(path, policy="stretch")
    img = np.random.default_rng(0).integers(0, 256, (60, 90, 3), dtype=np.uint8)
    fm = bb(img)
    assert fm.features.shape == (32, 2, 3) and fm.geometry.resized_hw == (28, 42)
    ref = OnnxBackbone(tiny_onnx, pixels=None, policy="stretch", providers="cpu")
    x = ref.runner.run({"image": __import__(
        "moduseg.runtime.backbones.onnx_backbone", fromlist=["preprocess"]).preprocess(
        img, fm.geometry, bb.mean, bb.std)})[ref.output_name][0]
    np.testing.assert_allclose(fm.features, x, atol=1e-5)
    dev, geo = bb.device_features(img)
    assert dev.shape == (1, 32, 2, 3) and dev.ptr and geo == fm.geometry
    gf = bb.gpu_features(img)  # what the GPU SMFA pooler takes
    assert gf.shape == (32, 2, 3) and gf.dtype == "float32" and gf.layout == "dhw"
    assert gf.geometry == fm.geometry


def test_int8_calibration_dla_and_strong_typing_on_fakes(tiny_onnx, tmp_path, monkeypatch):
    import cv2
    import trt_fakes
    from moduseg.errors import BackendUnavailableError
    from moduseg.export.engine import build_cached_engine

    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(3):
        cv2.imwrite(str(calib / f"{i}.jpg"), np.full((20, 30, 3), 60 * i, np.uint8))
    trt = trt_fakes.install(monkeypatch)
    opts = BuildOptions(precision="int8", calib_dir=str(calib),
                        calib_cache=str(tmp_path / "calib.cache"))
    path, side, _ = build_cached_engine(tiny_onnx, opts, tmp_path / "c", check=False)
    config = trt.built[-1][1]
    assert {"INT8", "FP16"} <= config.flags and config.int8_calibrator.index == 3
    assert (tmp_path / "calib.cache").read_bytes() == b"calib" and ".int8." in path.name
    with pytest.raises(BackendUnavailableError, match="DLA cores"):
        build_cached_engine(tiny_onnx, BuildOptions(dla_core=0), tmp_path / "c", check=False)
    trt_fakes.install(monkeypatch, dla_cores=2)
    path, side, _ = build_cached_engine(tiny_onnx, BuildOptions(dla_core=1), tmp_path / "c",
                                        check=False)
    assert side.key.dla_core == 1 and ".dla1." in path.name
    # TensorRT 11: strongly typed network built from an FP16 graph, no FP16 flag
    pytest.importorskip("onnxconverter_common", reason="needs onnxconverter-common")
    trt = trt_fakes.install(monkeypatch, version="11.4.1")
    build_cached_engine(tiny_onnx, BuildOptions(precision="fp16"), tmp_path / "c",
                        check=False)
    network, config = trt.built[-1]
    assert network.flags & (1 << 5) and "FP16" not in config.flags
    assert any(t.data_type == TensorProto.FLOAT16 for t in network.onnx.graph.initializer)
    with pytest.raises(InputError, match="Q/DQ"):
        build_cached_engine(tiny_onnx, BuildOptions(precision="int8", calib_dir=str(calib)),
                            tmp_path / "c", check=False)


def test_engine_cli_on_fakes(tiny_onnx, tmp_path, monkeypatch):
    import trt_fakes
    from moduseg.cli import cli

    trt_fakes.install(monkeypatch)
    args = ["export", "engine", str(tiny_onnx), "--cache-dir", str(tmp_path / "c"),
            "--opt-shape", "2x3x28x42", "--max-shape", "4x3x28x42"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert "built" in r.output and "cosine vs ONNX Runtime: min 1.0000" in r.output
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0 and r.output.startswith("reused")
    r = CliRunner().invoke(cli, ["export", "engine", str(tiny_onnx), "--precision", "int8"])
    assert r.exit_code == 2 and "--calib-dir" in r.output


def test_old_opset_graph_is_fused_before_parsing(tmp_path, monkeypatch):
    """The installed DINOv2 graph is opset 14 with decomposed LayerNorms: TensorRT gets
    an opset-17 copy with LayerNormalization (so FP16 can keep it FP32)."""
    torch = pytest.importorskip("torch")
    import trt_fakes
    from moduseg.export.engine import build_cached_engine

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.ln = torch.nn.LayerNorm(3)

        def forward(self, x):
            return self.ln(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    src = tmp_path / "old.onnx"
    torch.onnx.export(Net().eval(), (torch.rand(1, 3, 4, 4),), str(src), opset_version=14,
                      dynamo=False, input_names=["image"], output_names=["features"])
    trt = trt_fakes.install(monkeypatch)
    path, side, _ = build_cached_engine(src, BuildOptions(precision="fp16"), tmp_path / "c",
                                        check=False)
    network, config = trt.built[-1]
    ops = [n.op_type for n in network.onnx.graph.node]
    assert "LayerNormalization" in ops and "Pow" not in ops
    assert side.build["fused_layernorms"] == 1
    assert [l.name for l in network.layers if l.precision is not None]  # pinned to FP32


def test_inaccurate_engine_is_deleted_with_a_clear_error(tiny_onnx, tmp_path, monkeypatch):
    import trt_fakes
    import moduseg.export.parity as parity
    from moduseg.export.engine import build_cached_engine
    from moduseg.export.parity import CosineStats, ParityError, ParityReport

    trt_fakes.install(monkeypatch)
    monkeypatch.setattr(parity, "compare", lambda *a, **k: ParityReport(
        "onnxruntime-cpu", "tensorrt", {"random0": CosineStats(0.93, 0.98, 6)}, 0.99))
    with pytest.raises(ParityError, match="engine was deleted.*--fp32-layers"):
        build_cached_engine(tiny_onnx, BuildOptions(precision="fp16"), tmp_path / "c")
    assert not list((tmp_path / "c").glob("*.engine*"))
