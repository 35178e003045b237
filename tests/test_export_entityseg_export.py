"""Tiny random EntitySeg models: ONNX export, torch vs ONNX Runtime parity of masks and
scores through the runtime proposer, the CLI, and the TensorRT step (GPU only)."""

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from moduseg.errors import InputError  # noqa: E402
from moduseg.export.entityseg.config import tiny_test_config  # noqa: E402
from moduseg.export.entityseg.export import check_parity, export_onnx  # noqa: E402
from moduseg.export.entityseg.model import random_model  # noqa: E402
from moduseg.export.entityseg.postprocess import entity_inference, upsample_masks  # noqa: E402
from moduseg.runtime.proposers.entityseg import (EntitySegProposer, preprocess,  # noqa: E402
                                                 resized_size)
from moduseg.types import Proposer, Proposals  # noqa: E402

HW = (64, 96)
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _scene(h, w, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), np.float32)
    for _ in range(5):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(5, 25)
        img[np.hypot(yy - cy, xx - cx) < r] = rng.uniform(0, 255, 3)
    return (img + rng.normal(0, 4, img.shape)).clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def swin_export(tmp_path_factory):
    model = random_model(tiny_test_config("swin"), seed=3)
    path = export_onnx(model, tmp_path_factory.mktemp("es") / "tiny_swin.onnx", HW,
                       min_size=64, max_size=96, simplify=False)
    return model, path


@pytest.mark.slow
def test_graph_is_plain_onnx_with_grid_sample(swin_export):
    _, path = swin_export
    g = onnx.load(path)
    ops = {n.op_type for n in g.graph.node}
    assert "GridSample" in ops
    assert all(n.domain in ("", "ai.onnx") for n in g.graph.node)      # no custom ops
    assert max(o.version for o in g.opset_import if o.domain in ("", "ai.onnx")) >= 16
    dims = [d.dim_value for d in g.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, *HW]
    assert "moduseg.entityseg" in {p.key for p in g.metadata_props}
    from moduseg.export.trt_compat import check_file
    for version in ("8.6", "10.x"):                            # JetPack 5 and current
        assert check_file(path, version).ok


@pytest.fixture(scope="module")
def swin_proposer(swin_export):
    return EntitySegProposer(swin_export[1], providers="cpu")


@pytest.mark.slow
@pytest.mark.parametrize("image_hw", [(50, 80), (90, 60)])
def test_proposer_matches_torch_end_to_end(swin_export, swin_proposer, image_hw):
    model, _ = swin_export
    image = _scene(*image_hw, seed=image_hw[0])
    prop = swin_proposer
    assert isinstance(prop, Proposer)
    out = prop(image)
    assert isinstance(out, Proposals) and out.image_hw == image_hw
    assert out.masks.shape[1:] == image_hw and len(out) > 0
    assert out.masks.sum(0).max() <= 1                                  # non-overlapping
    assert ((out.scores >= 0) & (out.scores <= 1)).all()
    # the torch reference: same preprocessing, model in torch, EntitySeg's own loop
    rhw = resized_size(image_hw, HW, 64, 96)
    x = torch.from_numpy(preprocess(image, HW, rhw, model.cfg.pixel_mean))
    with torch.no_grad():
        cls, masks = model(x)
    tm, ts, _ = entity_inference(cls[0], upsample_masks(masks[0], HW, rhw, image_hw))
    keep = tm.flatten(1).any(1)
    tm, ts = tm[keep].numpy(), ts[keep].numpy()
    assert len(tm) == len(out)
    agree = np.mean([(a == b).mean() for a, b in zip(tm, out.masks)])
    assert agree > 0.998
    np.testing.assert_allclose(out.scores, ts, atol=2e-3)


def test_parity_report_on_a_real_image(swin_export):
    model, path = swin_export
    jpgs = sorted((DATA / "coco128-seg" / "images").rglob("*.jpg"))[:1]
    if not jpgs:
        pytest.skip(f"shared data not found under {DATA}")
    import cv2
    image = cv2.cvtColor(cv2.imread(str(jpgs[0])), cv2.COLOR_BGR2RGB)
    report = check_parity(model, path, image)
    assert report.ok(), str(report)
    assert report.logits_max_abs < 1e-4


@pytest.mark.slow
def test_hornet_export_parity(tmp_path):
    model = random_model(tiny_test_config("hornet"), seed=5)
    path = export_onnx(model, tmp_path / "tiny_hornet.onnx", HW, 64, 96, simplify=False)
    report = check_parity(model, path, _scene(60, 90, seed=7))
    assert report.ok(), str(report)
    assert report.masks_max_abs < 1e-3
    from moduseg.export.trt_compat import check_file
    compat = check_file(path, "10.x")
    assert compat.ok, compat.lines()
    assert not compat.by_code("decomposed-layernorm-fp16")      # fused LayerNormalization


def test_input_size_must_be_a_multiple_of_32(tmp_path):
    with pytest.raises(InputError, match="multiples of 32"):
        export_onnx(random_model(tiny_test_config()), tmp_path / "x.onnx", (60, 96))


def test_proposer_refuses_foreign_onnx(tmp_path):
    from onnx import TensorProto, helper
    node = helper.make_node("Identity", ["x"], ["y"])
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(g), tmp_path / "other.onnx")
    with pytest.raises(InputError, match="moduseg.entityseg"):
        EntitySegProposer(tmp_path / "other.onnx", providers="cpu")


@pytest.mark.slow
def test_cli_exports_and_checks_parity(tmp_path):
    from click.testing import CliRunner
    from moduseg.cli import cli
    out = tmp_path / "cli.onnx"
    res = CliRunner().invoke(cli, ["export", "entityseg", "--random", "tiny", "-o", str(out),
                                   "--input-size", "64x96", "--min-size", "64",
                                   "--max-size", "96", "--no-simplify"])
    assert res.exit_code == 0, res.output
    assert out.is_file() and "parity torch vs onnxruntime" in res.output


def test_tensorrt_engine_build(swin_export, tmp_path):
    try:
        import tensorrt  # noqa: F401
        from cuda.bindings import driver
        ok = driver.cuInit(0)[0] == driver.CUresult.CUDA_SUCCESS
    except Exception:  # noqa: BLE001
        ok = False
    if not ok:
        pytest.skip("needs an NVIDIA GPU and driver: TensorRT engines are built on the device")
    from moduseg.export.entityseg.export import build_trt_engine, check_engine_parity
    _, path = swin_export
    engine = build_trt_engine(path, tmp_path / "tiny.engine", precision="fp32")
    report = check_engine_parity(engine, path, _scene(60, 90))
    assert report.ok(), str(report)
    prop = EntitySegProposer(engine)
    assert len(prop(_scene(50, 80))) > 0


def test_engine_branch_reads_sidecar_metadata(swin_export, tmp_path, monkeypatch):
    """The .engine code path without a GPU: a stand-in runner backed by ONNX Runtime."""
    import types

    import moduseg.runtime.trt as trt_mod
    from moduseg.export.backbone import read_metadata
    from moduseg.runtime.onnx_session import make_session

    _, path = swin_export
    sess = make_session(path, providers="cpu")

    class FakeRunner:
        def __init__(self, engine_path, device=0, **kw):
            self.sidecar = types.SimpleNamespace(metadata=read_metadata(path))
            self.inputs = [sess.get_inputs()[0].name]
            self.outputs = ["pred_logits", "pred_masks"]

        def engine_shape(self, name):
            return (-1,)

        def run(self, feeds):
            return dict(zip(["pred_logits", "pred_masks"], sess.run(None, feeds)))

        def close(self):
            pass

    monkeypatch.setattr(trt_mod, "TrtRunner", FakeRunner)
    engine = tmp_path / "tiny.engine"
    engine.write_bytes(b"stand-in")
    image = _scene(50, 80)
    got = EntitySegProposer(engine)(image)
    want = EntitySegProposer(path, providers="cpu")(image)
    np.testing.assert_array_equal(got.masks, want.masks)
    np.testing.assert_array_equal(got.scores, want.scores)
