"""CLIP export: the dense wrapper is faithful, and ONNX matches torch."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")
ort = pytest.importorskip("onnxruntime")

from click.testing import CliRunner
from pseudo_tiny_clip import export_tiny, tiny_clip, write_tiny_config

from moduseg.errors import InputError
from moduseg.export.clip import DenseClipOptions, dense_image_module, export_clip, sha256_file


def _pixels(n=2, size=32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 255


def _normalise(x):
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    return (x / 255 - mean) / std


def test_vanilla_options_reproduce_open_clip_tokens():
    """attention=vanilla with residual and FFN kept == open_clip's own patch tokens."""
    model = tiny_clip()
    x = _pixels()
    dense = dense_image_module(model, DenseClipOptions(attention="vanilla", residual=True,
                                                       ffn=True))
    model.visual.output_tokens = True
    with torch.no_grad():
        _, tokens = model.visual(_normalise(x))
        ref = torch.nn.functional.normalize(tokens @ model.visual.proj, dim=-1)
        out = dense(x)
    assert out.shape == (2, 16, 4, 4)
    assert torch.allclose(out.flatten(2).transpose(1, 2), ref, atol=1e-5)


def test_self_self_attention_equals_vanilla_when_q_equals_k():
    """With W_q == W_k, q-q attention is exactly q-k attention (a known answer)."""
    model = tiny_clip()
    attn = model.visual.transformer.resblocks[-1].attn
    W = attn.embed_dim
    with torch.no_grad():
        attn.in_proj_weight[W:2 * W] = attn.in_proj_weight[:W]
        attn.in_proj_bias[W:2 * W] = attn.in_proj_bias[:W]
        attn.out_proj.bias.zero_()
    x = _pixels()
    with torch.no_grad():
        van = dense_image_module(model, DenseClipOptions(attention="vanilla"))(x)
        qq = dense_image_module(model, DenseClipOptions(attention="qq"))(x)
        # q-q + k-k doubles the attention; without bias the LayerNorm removes the scale
        qqkk = dense_image_module(model, DenseClipOptions(attention="qq+kk"))(x)
    assert torch.allclose(qq, van, atol=1e-6)
    assert torch.allclose(qqkk, van, atol=1e-4)


def test_default_drops_ffn_and_residual():
    model = tiny_clip()
    x = _pixels()
    with torch.no_grad():
        base = dense_image_module(model)(x)
        with_ffn = dense_image_module(model, DenseClipOptions(ffn=True))(x)
        model.visual.transformer.resblocks[-1].mlp.c_proj.weight.zero_()
        model.visual.transformer.resblocks[-1].mlp.c_proj.bias.zero_()
        zero_ffn = dense_image_module(model, DenseClipOptions(ffn=True))(x)
    assert not torch.allclose(base, with_ffn, atol=1e-3)
    assert torch.allclose(base, zero_ffn, atol=1e-6)  # only the FFN differed


def test_positional_embedding_interpolated_for_larger_crop():
    model = tiny_clip()
    same = dense_image_module(model, DenseClipOptions(crop=32))
    assert torch.equal(same.pos, model.visual.positional_embedding.detach())
    big = dense_image_module(model, DenseClipOptions(crop=48))
    assert big.pos.shape == (1 + 36, 32)
    assert torch.equal(big.pos[0], model.visual.positional_embedding[0].detach())
    with pytest.raises(InputError, match="multiple of the patch"):
        dense_image_module(model, DenseClipOptions(crop=50))


@pytest.mark.slow
def test_onnx_parity_image_and_text(tmp_path):
    model, _ = export_tiny(tmp_path, crop=48)
    x = _pixels(3, 48).numpy()
    sess = ort.InferenceSession(str(tmp_path / "image.onnx"))
    got = sess.run(None, {"pixels": x})[0]
    with torch.no_grad():
        ref = dense_image_module(model, DenseClipOptions(crop=48))(torch.from_numpy(x)).numpy()
    assert got.shape == (3, 16, 6, 6)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)

    tokens = open_clip.tokenize(["a photo of a cat.", "dog", "a tv monitor"], 77).numpy()
    tsess = ort.InferenceSession(str(tmp_path / "text.onnx"))
    tgot = tsess.run(None, {"tokens": tokens})[0]
    with torch.no_grad():
        tref = torch.nn.functional.normalize(model.encode_text(torch.from_numpy(tokens)),
                                             dim=-1).numpy()
    np.testing.assert_allclose(tgot, tref, atol=1e-5)


def test_clip_json_describes_the_export(tmp_path):
    model, _ = export_tiny(tmp_path, crop=48)
    d = json.loads((tmp_path / "clip.json").read_text())
    assert d["crop"] == 48 and d["patch"] == 8 and d["embed_dim"] == 16
    assert d["attention"] == "qq+kk" and d["residual"] is False and d["ffn"] is False
    assert d["logit_scale"] == pytest.approx(float(model.logit_scale.detach().exp()))
    assert d["tokenizer"] == {"kind": "clip-bpe", "context_length": 77}
    assert d["activation"] == "GELU"
    assert d["image_sha256"] == sha256_file(tmp_path / "image.onnx")
    assert d["text_sha256"] == sha256_file(tmp_path / "text.onnx")


def test_cli_exports_a_custom_config(tmp_path):
    cfg = write_tiny_config(tmp_path / "tiny-clip.json")
    out = tmp_path / "clip"
    r = CliRunner().invoke(export_clip, ["--model-config", str(cfg), "--pretrained", "none",
                                         "--crop", "40", "--quick-gelu", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert {p.name for p in out.iterdir()} == {"image.onnx", "text.onnx", "clip.json"}
    meta = json.loads((out / "clip.json").read_text())
    assert meta["model"] == "tiny-clip" and meta["crop"] == 40
    assert meta["activation"] == "QuickGELU"


def test_cli_refuses_missing_pretrained_and_missing_checkpoint(tmp_path):
    cfg = write_tiny_config(tmp_path / "tiny-clip.json")
    r = CliRunner().invoke(export_clip, ["--model-config", str(cfg), "--out", str(tmp_path)])
    assert r.exit_code != 0 and "--pretrained is required" in r.output
    r = CliRunner().invoke(export_clip, ["--model-config", str(cfg), "--pretrained",
                                         str(tmp_path / "nope.pt"), "--out", str(tmp_path)])
    assert r.exit_code != 0 and "neither a checkpoint file nor a known tag" in str(r.exception)


def test_non_vit_towers_are_refused():
    model = tiny_clip()
    model.visual = torch.nn.Linear(2, 2)
    with pytest.raises(InputError, match="not an open_clip VisionTransformer"):
        dense_image_module(model)
