"""The rewritten SAM decoder: B prompts in one call give the original's answers."""

from pathlib import Path

import numpy as np
import pytest

from moduseg.errors import InputError, ModelNotFoundError
from moduseg.graphs import sam_decoder as surgery


def _decoder_path() -> Path:
    from moduseg.models.defaults import default_model_paths

    try:
        return default_model_paths()[1]
    except ModelNotFoundError as e:
        pytest.skip(f"SAM decoder not installed: {e}")


pytestmark = pytest.mark.models


def _session(path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def prompts():
    rng = np.random.default_rng(0)
    emb = (rng.standard_normal((1, 256, 64, 64)) * 0.5).astype(np.float32)
    b = 3
    coords = np.zeros((b, 2, 2), np.float32)
    coords[:, 0] = rng.uniform(50, 900, (b, 2))
    labels = np.tile(np.array([[1.0, -1.0]], np.float32), (b, 1))
    return {"image_embeddings": emb, "point_coords": coords, "point_labels": labels,
            "mask_input": np.zeros((1, 1, 256, 256), np.float32),
            "has_mask_input": np.zeros(1, np.float32),
            "orig_im_size": np.array([768, 1024], np.float32)}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("sam_cache")


def _run(path, feed):
    s = _session(path)
    names = {i.name for i in s.get_inputs()}
    return s.run(None, {k: v for k, v in feed.items() if k in names})


@pytest.mark.parametrize("fast", [False, True])
def test_batched_equals_unbatched(prompts, cache, fast):
    dec = _decoder_path()
    ref = _session(dec)
    batched = surgery.batched_decoder_path(dec, cache, mask_stride=1, fast_attention=fast)
    masks, ious = _run(batched, prompts)
    b = prompts["point_coords"].shape[0]
    assert masks.shape == (b, 4, 256, 256) and ious.shape == (b, 4)
    for i in range(b):
        one = dict(prompts, point_coords=prompts["point_coords"][i:i + 1],
                   point_labels=prompts["point_labels"][i:i + 1])
        _, iou1, low1 = ref.run(None, one)
        # one point + padding: the export picks the best multimask output (1..3)
        best = int(np.argmax(ious[i, 1:])) + 1
        np.testing.assert_allclose(ious[i, best], iou1[0, 0], atol=1e-4)
        np.testing.assert_allclose(masks[i, best], low1[0, 0], atol=5e-3)
        assert ((masks[i, best] > 0) == (low1[0, 0] > 0)).mean() > 0.999


def test_subsampled_heads_sample_the_full_logits(prompts, cache):
    dec = _decoder_path()
    full, _ = _run(surgery.batched_decoder_path(dec, cache, mask_stride=1), prompts)
    for stride in (2, 4):
        sub, _ = _run(surgery.batched_decoder_path(dec, cache, mask_stride=stride), prompts)
        off = surgery.SUBSAMPLE_OFFSET[stride]
        assert sub.shape[-2:] == (256 // stride, 256 // stride)
        np.testing.assert_allclose(sub, full[..., off::stride, off::stride], atol=5e-3)


def test_rewrite_is_cached_and_atomic(cache):
    dec = _decoder_path()
    p1 = surgery.batched_decoder_path(dec, cache, mask_stride=4)
    mtime = p1.stat().st_mtime_ns
    p2 = surgery.batched_decoder_path(dec, cache, mask_stride=4)
    assert p1 == p2 and p2.stat().st_mtime_ns == mtime
    assert not list(Path(cache).glob("tmp*"))


def test_not_a_sam_decoder_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    with pytest.raises(InputError, match="image_embeddings"):
        surgery.batch_prompt_decoder(helper.make_model(g))
    with pytest.raises(ModelNotFoundError):
        surgery.batched_decoder_path(tmp_path / "missing.onnx", tmp_path)
    with pytest.raises(InputError):
        surgery.subsample_mask_head(onnx.ModelProto(), 3)


def test_quantized_model_path_on_a_tiny_graph(tmp_path):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 32)).astype(np.float32)
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 64])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 32])],
                          [numpy_helper.from_array(w, "w")])
    src = tmp_path / "tiny.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), src)
    q = surgery.quantized_model_path(src, tmp_path / "cache")
    assert q.is_file() and q == surgery.quantized_model_path(src, tmp_path / "cache")
    x = rng.standard_normal((4, 64)).astype(np.float32)
    y = ort.InferenceSession(str(q), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    ref = x @ w
    assert np.linalg.norm(y - ref) / np.linalg.norm(ref) < 0.05
