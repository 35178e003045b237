"""Test-time views of the backbone (backbone.flip, backbone.shifts): known answers on
synthetic images with tiny ONNX graphs whose features are box means of the input, so
every half-patch cell's expected value is computed independently of views.py."""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from moduseg.config import preset  # noqa: E402
from moduseg.errors import InputError  # noqa: E402
from moduseg.runtime.backbones.onnx_backbone import OnnxBackbone  # noqa: E402
from moduseg.runtime.backbones.views import (  # noqa: E402
    SHIFTS, combine_shifted, fine_geometry, pass_offsets, shifted_input, view_features)
from moduseg.settings import parse_overrides  # noqa: E402
from moduseg.types import GridGeometry  # noqa: E402

from synthetic import patch_conv_model  # noqa: E402

P = 14
KW = dict(pixels=None, mean=(0, 0, 0), std=(1, 1, 1))


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    """Each output channel = the mean of its input channel over the patch."""
    w = np.zeros((3, 3, P, P))
    for c in range(3):
        w[c, c] = 1.0 / (P * P)
    return patch_conv_model(tmp_path_factory.mktemp("box") / "box.onnx", w)


@pytest.fixture(scope="module")
def col0(tmp_path_factory):
    """Each output channel = the mean of its input channel over the patch's first column
    (not mirror-symmetric: a mirrored pass reads the last column)."""
    w = np.zeros((3, 3, P, P))
    for c in range(3):
        w[c, c, :, 0] = 1.0 / P
    return patch_conv_model(tmp_path_factory.mktemp("col0") / "col0.onnx", w)


def _image(H=50, W=71, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _padded(img):
    """The graph's input as the backbone lays it out: top-left, zero padding, [0, 1]."""
    H, W = img.shape[:2]
    ph, pw = -(-H // P) * P, -(-W // P) * P
    pad = np.zeros((ph, pw, 3), np.float64)
    pad[:H, :W] = img / 255.0
    return pad


def _expected_mean(pad, offsets):
    """Half-patch cells: the mean, over the passes' patches that cover a cell, of each
    patch's pixel mean; a pass moved (dy, dx) half patches has patch (i, j) over rows
    14i - 7dy .. +14 and columns 14j - 7dx .. +14 of the unmoved input (zeros above/left)."""
    ph, pw = pad.shape[:2]
    gh, gw = ph // P, pw // P
    h = P // 2
    total = np.zeros((2 * gh, 2 * gw, 3))
    count = np.zeros((2 * gh, 2 * gw, 1))
    big = np.zeros((ph + P, pw + P, 3))
    big[P:, P:] = pad
    for dy, dx in offsets:
        for i in range(gh):
            for j in range(gw):
                r0, c0 = P * i - h * dy, P * j - h * dx
                value = big[P + r0:P + r0 + P, P + c0:P + c0 + P].mean((0, 1))
                for m in (r0 // h, r0 // h + 1):
                    for n in (c0 // h, c0 // h + 1):
                        if 0 <= m < 2 * gh and 0 <= n < 2 * gw:
                            total[m, n] += value
                            count[m, n] += 1
    return (total / count).transpose(2, 0, 1)


@pytest.mark.parametrize("shifts", ["diagonal-mean", "square-mean"])
def test_mean_shifts_give_the_mean_of_the_patches_covering_each_half_patch_cell(box, shifts):
    img = _image()
    fm = OnnxBackbone(box, "box", shifts=shifts, **KW)(img)
    assert fm.geometry == GridGeometry((50, 71), (50, 71), (8, 12), 7)
    want = _expected_mean(_padded(img), pass_offsets(shifts))
    np.testing.assert_allclose(fm.features, want, atol=1e-5)


def test_interleave_gives_each_half_patch_cell_the_patch_centred_on_its_corner(box):
    img = _image()
    fm = OnnxBackbone(box, "box", shifts="square-interleave", **KW)(img)
    assert fm.geometry.grid_hw == (8, 12) and fm.geometry.patch == 7
    pad = _padded(img)
    big = np.zeros((pad.shape[0] + 7, pad.shape[1] + 7, 3))
    big[7:, 7:] = pad
    # cell (m, n): the 14 x 14 window centred on pixel (7m, 7n) of the padded input
    want = np.stack([[big[7 * m:7 * m + P, 7 * n:7 * n + P].mean((0, 1)) for n in range(12)]
                     for m in range(8)]).transpose(2, 0, 1)
    np.testing.assert_allclose(fm.features, want, atol=1e-5)
    # the unmoved pass's patches are the odd cells, unchanged
    plain = OnnxBackbone(box, "box", **KW)(img).features
    np.testing.assert_allclose(fm.features[:, 1::2, 1::2], plain, atol=1e-6)


def test_a_flat_image_gives_flat_features_on_the_finer_grid(box):
    """No padding and one colour: every patch of every pass sees that colour except
    where a moved pass's vacated strip (zeros) enters; the mean shifts keep the
    interior cells at the colour."""
    img = np.full((42, 56, 3), 200, np.uint8)
    for shifts in SHIFTS:
        fm = OnnxBackbone(box, "box", shifts=shifts, **KW)(img)
        np.testing.assert_allclose(fm.features[:, 2:-2, 2:-2], 200 / 255.0, atol=1e-5)


def test_flip_of_a_mirror_symmetric_image_is_mirror_symmetric_and_equals_an_equivariant_model(
        tmp_path, col0, box):
    half = _image(42, 28)
    img = np.concatenate([half, half[:, ::-1]], 1)        # 42 x 56: no padding, symmetric
    for shifts in (None, *SHIFTS):
        y = OnnxBackbone(col0, "c", flip=True, shifts=shifts, **KW)(img).features
        if shifts != "square-interleave":   # its cells sit a quarter patch off-centre
            # a moved pass's first column has no mirror image: the edge columns differ
            inner = slice(None) if shifts is None else slice(1, -1)
            np.testing.assert_allclose(y[..., inner], y[..., ::-1][..., inner], atol=1e-6)
        # a mirror-equivariant model (the box mean): flip changes nothing at all
        a = OnnxBackbone(box, "b", flip=True, shifts=shifts, **KW)(img).features
        b = OnnxBackbone(box, "b", shifts=shifts, **KW)(img).features
        np.testing.assert_allclose(a, b, atol=1e-6)
    # col0 with flip on a symmetric input: (first + last column) / 2 of each patch
    pad = img / 255.0
    first = pad[:, 0::P].reshape(3, P, 4, 3).mean(1)
    last = pad[:, P - 1::P].reshape(3, P, 4, 3).mean(1)
    y = OnnxBackbone(col0, "c", flip=True, **KW)(img).features
    np.testing.assert_allclose(y, (0.5 * (first + last)).transpose(2, 0, 1), atol=1e-5)


def test_pure_helpers():
    x = np.arange(2 * 4 * 6, dtype=np.float32).reshape(1, 2, 4, 6)
    s = shifted_input(x, 1, 2)
    assert s.shape == x.shape and np.all(s[..., :1, :] == 0) and np.all(s[..., :, :2] == 0)
    np.testing.assert_array_equal(s[..., 1:, 2:], x[..., :3, :4])
    assert shifted_input(x, 0, 0) is x
    g = fine_geometry(GridGeometry((50, 71), (50, 71), (4, 6), 14))
    assert g == GridGeometry((50, 71), (50, 71), (8, 12), 7) and g.padded_hw == (56, 84)
    # interleave: 4 constant passes land on their own parity
    passes = {o: np.full((1, 2, 3), 10 * o[0] + o[1], np.float32) for o in pass_offsets(
        "square-interleave")}
    y = combine_shifted(passes, "square-interleave")
    assert y.shape == (1, 4, 6)
    np.testing.assert_array_equal(y[0], [[11, 10, 11, 10, 11, 10], [1, 0, 1, 0, 1, 0]] * 2)
    # mean: the last row/column is not reached by the moved passes
    y = combine_shifted(passes, "square-mean")
    np.testing.assert_allclose(y[0, :-1, :-1], 5.5)
    np.testing.assert_allclose(y[0, -1, :-1], 0.5)
    np.testing.assert_allclose(y[0, :-1, -1], 5.0)
    np.testing.assert_allclose(y[0, -1, -1], 0.0)
    calls = []
    view_features(lambda v: calls.append(v.shape) or np.zeros((1, 1, 2, 3)), np.zeros(
        (1, 3, 28, 42), np.float32), P, flip=True, shifts="diagonal-mean")
    assert len(calls) == 4                                  # 2 passes, each mirrored too


def test_identity_and_option_checks(box, tmp_path):
    assert OnnxBackbone(box, "b", shifts="square-mean", **KW).identity.name == \
        "b+shift-square-mean"
    assert OnnxBackbone(box, "b", flip=True, shifts="diagonal-mean", **KW).identity.name == \
        "b+hflip+shift-diagonal-mean"
    assert OnnxBackbone(box, "b", **KW).identity.name == "b"
    with pytest.raises(InputError, match="backbone.shifts must be one of"):
        OnnxBackbone(box, "b", shifts="half", **KW)
    patch_conv_model(tmp_path / "odd.onnx", np.zeros((3, 3, 5, 5)))
    with pytest.raises(InputError, match="even patch size"):
        OnnxBackbone(tmp_path / "odd.onnx", "o", shifts="square-mean", **KW)
    # the option: declared once in config, its choices checked there
    cfg = preset("default").with_overrides(**parse_overrides(["backbone.shifts='square-mean'"]))
    assert cfg.backbone_options()["shifts"] == "square-mean"
    assert "shifts" not in preset("default").backbone_options()
    with pytest.raises(InputError, match="shifts"):
        preset("default").with_overrides(**parse_overrides(["backbone.shifts='half'"]))


def test_a_bank_of_views_is_accepted_only_with_the_same_views():
    """build.check_bank_options names the backbone the configuration selects, views
    included: a bank built with backbone.shifts / backbone.flip runs with them, not
    without them (and not the other way round)."""
    from types import SimpleNamespace

    from moduseg.build import check_bank_options

    base = preset("accurate")
    shifted = base.with_overrides(**parse_overrides(["backbone.shifts='square-interleave'"]))
    both = base.with_overrides(**parse_overrides(["backbone.flip=True",
                                                  "backbone.shifts='diagonal-mean'"]))

    def bank(name):
        return SimpleNamespace(backbone=SimpleNamespace(name=name), config=base.to_dict())

    plain = "dinov2-vits14-blocks7-9-11"
    check_bank_options(base, bank(plain))
    check_bank_options(shifted, bank(plain + "+shift-square-interleave"))
    check_bank_options(both, bank(plain + "+hflip+shift-diagonal-mean"))
    for cfg, name in ((base, plain + "+shift-square-interleave"), (shifted, plain),
                      (both, plain + "+shift-diagonal-mean")):
        with pytest.raises(InputError, match="the bank was built with backbone"):
            check_bank_options(cfg, bank(name))
