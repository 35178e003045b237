"""OnnxBackbone geometry on a tiny synthetic stride-14 model whose features
encode which pixels fell into each patch (so padding and resizing are checked
exactly), plus identity and input validation."""

import hashlib

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from moduseg.errors import InputError, ModelNotFoundError  # noqa: E402
from moduseg.io import check_image  # noqa: E402
from moduseg.runtime.backbones.onnx_backbone import (  # noqa: E402
    IMAGENET_MEAN, IMAGENET_STD, MIN_CHANNEL_STD, OnnxBackbone, image_channel_affine,
    plan_geometry, preprocess)
from moduseg.types import Backbone, BackboneIdentity, GridGeometry  # noqa: E402

from synthetic import patch_conv_model  # noqa: E402

P = 14


def _probe_model(path, patch=P, hw=("h", "w")):
    """Conv k=stride=patch: out c = mean over the patch of input channel c."""
    w = np.zeros((3, 3, patch, patch), np.float32)
    for c in range(3):
        w[c, c] = 1.0 / (patch * patch)
    return patch_conv_model(path, w, hw, name="probe")


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    return _probe_model(tmp_path_factory.mktemp("probe") / "probe.onnx")


def _position_image(H, W):
    """R = patch row, G = patch column (at native size), B = 255 everywhere."""
    rows, cols = np.mgrid[0:H, 0:W]
    img = np.zeros((H, W, 3), np.uint8)
    img[..., 0] = rows // P
    img[..., 1] = cols // P
    img[..., 2] = 255
    return img


def _coverage(geo: GridGeometry):
    """Fraction of each patch covered by real (not padded) pixels."""
    (rh, rw), (h, w) = geo.resized_hw, geo.grid_hw
    fr = np.clip(rh - P * np.arange(h), 0, P) / P
    fc = np.clip(rw - P * np.arange(w), 0, P) / P
    return fr[:, None] * fc[None, :]


def test_pad_native_camvid_size_every_pixel_in_its_patch(probe):
    bb = OnnxBackbone(probe, "probe", pixels=None, mean=(0, 0, 0), std=(1, 1, 1))
    img = _position_image(360, 480)
    fm = bb(img)
    geo = fm.geometry
    assert geo == GridGeometry((360, 480), (360, 480), (26, 35), 14)
    assert fm.features.shape == (3, 26, 35) and fm.features.dtype == np.float32
    cov = _coverage(geo)
    np.testing.assert_allclose(fm.features[2], cov, atol=1e-6)
    assert cov[-1, 0] == pytest.approx(10 / 14) and cov[0, -1] == pytest.approx(4 / 14)
    # full patches see exactly their own row/column index: nothing shifted
    h, w = geo.grid_hw
    rows, cols = np.mgrid[0:h, 0:w]
    full = cov == 1
    np.testing.assert_allclose(fm.features[0][full] * 255, rows[full], atol=1e-3)
    np.testing.assert_allclose(fm.features[1][full] * 255, cols[full], atol=1e-3)
    # partial bottom row: its pixels belong to row 25 and were averaged with zeros
    np.testing.assert_allclose(fm.features[0][-1, :-1] * 255, 25 * 10 / 14, atol=1e-3)


def test_default_pixel_budget_is_native_camvid(probe):
    bb = OnnxBackbone(probe, "probe")
    assert bb.pixels == 480 * 360 and bb.short_side is None and bb.policy == "pad"
    assert bb.geometry((360, 480)).resized_hw == (360, 480)
    assert bb.identity.input_size == "pad:pixels172800"


def test_pixel_budget_keeps_wide_frames_near_native(probe):
    bb = OnnxBackbone(probe, "probe")
    geo = bb.geometry((272, 640))                       # bikes.mp4
    assert geo.resized_hw == (271, 638) and geo.grid_hw == (20, 46)
    big = bb.geometry((1080, 1920))
    assert abs(big.resized_hw[0] * big.resized_hw[1] - 172800) < 1000
    short = OnnxBackbone(probe, "probe", short_side=360)    # the old sizing, on request
    assert short.geometry((272, 640)).resized_hw == (360, 847)
    assert short.pixels is None and short.identity.input_size == "pad:short360"
    with pytest.raises(InputError, match="pixels"):
        OnnxBackbone(probe, "probe", pixels=0)


def test_pad_resized_coverage_and_scale(probe):
    bb = OnnxBackbone(probe, "probe", short_side=180, mean=(0, 0, 0), std=(1, 1, 1))
    fm = bb(_position_image(360, 480))
    assert fm.geometry == GridGeometry((360, 480), (180, 240), (13, 18), 14)
    np.testing.assert_allclose(fm.features[2], _coverage(fm.geometry), atol=1e-6)
    # portrait: the short side is the width
    g = bb.geometry((500, 300))
    assert g.resized_hw == (300, 180) and g.grid_hw == (22, 13)


def test_stretch_fills_the_grid(probe):
    bb = OnnxBackbone(probe, "probe", short_side=180, policy="stretch",
                      mean=(0, 0, 0), std=(1, 1, 1))
    fm = bb(_position_image(360, 480))
    assert fm.geometry == GridGeometry((360, 480), (182, 238), (13, 17), 14)
    np.testing.assert_allclose(fm.features[2], 1.0, atol=1e-6)
    assert bb.identity.input_size == "stretch:short180"


def test_normalisation_uses_mean_std(probe):
    bb = OnnxBackbone(probe, "probe", pixels=None)  # ImageNet defaults
    img = np.full((28, 28, 3), 255, np.uint8)
    fm = bb(img)
    expect = (1 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(fm.features[:, 0, 0], expect, rtol=1e-5)


def _whole_image_model(path, hw):
    """One 'patch' covering the whole fixed input: out = per-channel mean and mean square."""
    h, w = hw
    x = helper.make_tensor_value_info("input_image", TensorProto.FLOAT, [1, 3, h, w])
    y = helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 6, 1, 1])
    nodes = [helper.make_node("ReduceMean", ["input_image"], ["m"], axes=[2, 3], keepdims=1),
             helper.make_node("Mul", ["input_image", "input_image"], ["sq"]),
             helper.make_node("ReduceMean", ["sq"], ["m2"], axes=[2, 3], keepdims=1),
             helper.make_node("Concat", ["m", "m2"], ["features"], axis=1)]
    g = helper.make_graph(nodes, "stats", [x], [y])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])
    m.ir_version = 8
    m.metadata_props.add(key="moduseg.patch_size", value=str(h))
    onnx.save(m, str(path))
    return path


def test_image_normalisation_gives_every_frame_the_dataset_statistics(tmp_path):
    """normalize='image': after the graph's (x - mean) / std each channel has mean 0 and
    std 1 whatever the exposure and white balance, so a dark, tinted copy of a frame and
    the frame itself give the same features; 'dataset' keeps them apart."""
    path = _whole_image_model(tmp_path / "stats.onnx", (28, 28))
    rng = np.random.default_rng(0)
    img = rng.integers(40, 220, (28, 28, 3)).astype(np.uint8)
    dusk = np.clip(img.astype(np.float32) * [0.45, 0.5, 0.7] + [3, 5, 12], 0, 255).round()
    dusk = dusk.astype(np.uint8)
    per_image = OnnxBackbone(path, "stats", normalize="image")
    f, g = per_image(img).features[:, 0, 0], per_image(dusk).features[:, 0, 0]
    np.testing.assert_allclose(f[:3], 0.0, atol=1e-5)           # channel means
    np.testing.assert_allclose(f[3:], 1.0, atol=1e-4)           # channel mean squares = var
    np.testing.assert_allclose(g, f, atol=1e-4)
    fixed = OnnxBackbone(path, "stats")
    assert np.abs(fixed(img).features - fixed(dusk).features).max() > 0.5
    assert per_image.identity.input_size == "pad:fixed28x28:norm-image"
    assert fixed.identity.input_size == "pad:fixed28x28"
    with pytest.raises(InputError, match="normalize"):
        OnnxBackbone(path, "stats", normalize="frame")


def test_image_channel_affine_known_answers():
    """The gain and bias map each channel onto ImageNet's mean and std, then apply the graph's
    own (x - mean) / std; a flat channel is not stretched beyond MIN_CHANNEL_STD."""
    img = np.zeros((4, 4, 3), np.uint8)
    img[..., 0] = (np.arange(16) * 17).reshape(4, 4)            # 0..255, spread
    img[..., 1] = 77                                           # flat
    img[..., 2] = 100 + (np.arange(16).reshape(4, 4) % 2)      # one grey level of spread
    gain, bias = image_channel_affine(img, (0, 0, 0), (1, 1, 1))   # a [0, 1]-input graph
    v = img.reshape(-1, 3).astype(np.float64)
    out = v * gain + bias
    assert abs(out[:, 0].mean() - IMAGENET_MEAN[0]) < 1e-9
    assert abs(out[:, 0].std() - IMAGENET_STD[0]) < 1e-9
    np.testing.assert_allclose(out[:, 1], IMAGENET_MEAN[1], atol=1e-9)
    assert out[:, 2].std() == pytest.approx(0.5 / 255 * IMAGENET_STD[2] / MIN_CHANNEL_STD)
    # with the graph's ImageNet normalisation the result has mean 0 and std 1 per channel
    gain, bias = image_channel_affine(img, IMAGENET_MEAN, IMAGENET_STD)
    out = v * gain + bias
    assert abs(out[:, 0].mean()) < 1e-9 and abs(out[:, 0].std() - 1) < 1e-9


def test_image_preprocess_pads_with_the_mean_colour():
    img = np.random.default_rng(1).integers(0, 256, (20, 30, 3)).astype(np.uint8)
    geo = plan_geometry(img.shape[:2], P, None, "pad")
    x = preprocess(img, geo, IMAGENET_MEAN, IMAGENET_STD, "image")
    assert x.shape == (1, 3, 28, 42) and x.dtype == np.float32
    content = x[0, :, :20, :30].reshape(3, -1)
    np.testing.assert_allclose(content.mean(1), 0, atol=1e-5)
    np.testing.assert_allclose(content.std(1), 1, atol=1e-5)
    assert not x[0, :, 20:, :].any() and not x[0, :, :, 30:].any()


def test_identity_and_protocol(probe):
    bb = OnnxBackbone(probe, "dinov2-test")
    sha = hashlib.sha256(probe.read_bytes()).hexdigest()
    assert bb.identity == BackboneIdentity("dinov2-test", "pad:pixels172800", 14, 3, sha)
    assert isinstance(bb, Backbone)
    given = BackboneIdentity("x", "y", 14, 3, "z")
    assert OnnxBackbone(probe, given).identity is given
    assert OnnxBackbone(probe, "n", weights_sha256="abc").identity.weights_sha256 == "abc"


@pytest.mark.parametrize("bad, msg", [
    (np.zeros((20, 20), np.uint8), "grayscale"),
    (np.zeros((20, 20, 4), np.uint8), "RGBA"),
    (np.zeros((20, 20, 3), np.float32), "uint8"),
    (np.zeros((0, 20, 3), np.uint8), "empty"),
    ([[1, 2, 3]], "numpy array"),
])
def test_bad_images_are_named(probe, bad, msg):
    bb = OnnxBackbone(probe, "probe")
    with pytest.raises(InputError, match=msg):
        bb(bad)
    with pytest.raises(InputError):
        check_image(bad)


def test_bad_options(probe, tmp_path):
    with pytest.raises(InputError, match="policy"):
        OnnxBackbone(probe, "p", policy="crop")
    with pytest.raises(InputError, match="short_side"):
        OnnxBackbone(probe, "p", short_side=-3)
    with pytest.raises(ModelNotFoundError, match="models pull"):
        OnnxBackbone(tmp_path / "missing.onnx", "p")
    with pytest.raises(InputError):
        plan_geometry((10, 10), 14, 10, "crop")


def test_tiny_image_gets_one_patch(probe):
    bb = OnnxBackbone(probe, "probe", pixels=None)
    fm = bb(np.zeros((5, 9, 3), np.uint8))
    assert fm.geometry.grid_hw == (1, 1) and fm.features.shape == (3, 1, 1)


def test_fixed_size_graph_letterboxes_or_stretches(tmp_path):
    path = _probe_model(tmp_path / "fixed.onnx", hw=(224, 224))
    bb = OnnxBackbone(path, "fixed", mean=(0, 0, 0), std=(1, 1, 1))
    assert bb.fixed_hw == (224, 224) and bb.identity.input_size == "pad:fixed224x224"
    fm = bb(_position_image(360, 480))
    assert fm.geometry == GridGeometry((360, 480), (168, 224), (16, 16), 14)
    np.testing.assert_allclose(fm.features[2], _coverage(fm.geometry), atol=1e-6)
    st = OnnxBackbone(path, "fixed", policy="stretch", mean=(0, 0, 0), std=(1, 1, 1))
    fm = st(_position_image(100, 700))
    assert fm.geometry == GridGeometry((100, 700), (224, 224), (16, 16), 14)
    np.testing.assert_allclose(fm.features[2], 1.0, atol=1e-6)


def test_flip_averages_the_mirror_on_the_same_grid(tmp_path, probe):
    """backbone.flip: features of the frame and of its mirror, un-mirrored, averaged.

    With a patch-mean model the mirror sees exactly the same pixels per patch
    (the padded input is mirrored whole), so nothing may change; with a model
    that reads only each patch's first column, the average is (first + last
    column) / 2, padding included.
    """
    img = _position_image(360, 480)
    img[..., 2] = (np.arange(480) * 7 % 251)[None, :]      # not mirror-symmetric
    kw = dict(pixels=None, mean=(0, 0, 0), std=(1, 1, 1))
    plain, flipped = OnnxBackbone(probe, "probe", **kw), OnnxBackbone(probe, "probe", flip=True, **kw)
    np.testing.assert_allclose(flipped(img).features, plain(img).features, atol=1e-6)
    assert flipped.identity.name == "probe+hflip" and plain.identity.name == "probe"

    w = np.zeros((3, 3, P, P), np.float32)
    for c in range(3):
        w[c, c, :, 0] = 1.0 / P
    x = helper.make_tensor_value_info("input_image", TensorProto.FLOAT, [1, 3, "h", "w"])
    y = helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 3, "gh", "gw"])
    node = helper.make_node("Conv", ["input_image", "W"], ["features"],
                            kernel_shape=[P, P], strides=[P, P])
    m = helper.make_model(helper.make_graph([node], "col0", [x], [y],
                                            [numpy_helper.from_array(w, "W")]),
                          opset_imports=[helper.make_opsetid("", 14)])
    m.ir_version = 8
    onnx.save(m, str(tmp_path / "col0.onnx"))
    fm = OnnxBackbone(tmp_path / "col0.onnx", "col0", flip=True, **kw)(img)
    pad = np.zeros((26 * P, 35 * P, 3), np.float32)
    pad[:360, :480] = img / 255.0
    first = pad[:, 0::P].reshape(26, P, 35, 3).mean(1)
    last = pad[:, P - 1::P].reshape(26, P, 35, 3).mean(1)
    np.testing.assert_allclose(fm.features, (0.5 * (first + last)).transpose(2, 0, 1), atol=1e-5)
