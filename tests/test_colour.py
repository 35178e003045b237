"""CIEDE2000 against the published test pairs, and palettes whose colours can be told
apart (issue 29, item 11)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from moduseg.colour import (ciede2000, distinct_colours, min_delta_e, pairwise_delta_e,
                            required_delta_e, srgb_to_lab)

# Sharma, Wu and Dalal (2005), Table 1: L1 a1 b1, L2 a2 b2, CIEDE2000 (all 34 pairs)
SHARMA = [
    (50.0000, 2.6772, -79.7751, 50.0000, 0.0000, -82.7485, 2.0425),
    (50.0000, 3.1571, -77.2803, 50.0000, 0.0000, -82.7485, 2.8615),
    (50.0000, 2.8361, -74.0200, 50.0000, 0.0000, -82.7485, 3.4412),
    (50.0000, -1.3802, -84.2814, 50.0000, 0.0000, -82.7485, 1.0000),
    (50.0000, -1.1848, -84.8006, 50.0000, 0.0000, -82.7485, 1.0000),
    (50.0000, -0.9009, -85.5211, 50.0000, 0.0000, -82.7485, 1.0000),
    (50.0000, 0.0000, 0.0000, 50.0000, -1.0000, 2.0000, 2.3669),
    (50.0000, -1.0000, 2.0000, 50.0000, 0.0000, 0.0000, 2.3669),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0009, 7.1792),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0010, 7.1792),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0011, 7.2195),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0012, 7.2195),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0009, -2.4900, 4.8045),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0010, -2.4900, 4.8045),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0011, -2.4900, 4.7461),
    (50.0000, 2.5000, 0.0000, 50.0000, 0.0000, -2.5000, 4.3065),
    (50.0000, 2.5000, 0.0000, 73.0000, 25.0000, -18.0000, 27.1492),
    (50.0000, 2.5000, 0.0000, 61.0000, -5.0000, 29.0000, 22.8977),
    (50.0000, 2.5000, 0.0000, 56.0000, -27.0000, -3.0000, 31.9030),
    (50.0000, 2.5000, 0.0000, 58.0000, 24.0000, 15.0000, 19.4535),
    (50.0000, 2.5000, 0.0000, 50.0000, 3.1736, 0.5854, 1.0000),
    (50.0000, 2.5000, 0.0000, 50.0000, 3.2972, 0.0000, 1.0000),
    (50.0000, 2.5000, 0.0000, 50.0000, 1.8634, 0.5757, 1.0000),
    (50.0000, 2.5000, 0.0000, 50.0000, 3.2592, 0.3350, 1.0000),
    (60.2574, -34.0099, 36.2677, 60.4626, -34.1751, 39.4387, 1.2644),
    (63.0109, -31.0961, -5.8663, 62.8187, -29.7946, -4.0864, 1.2630),
    (61.2901, 3.7196, -5.3901, 61.4292, 2.2480, -4.9620, 1.8731),
    (35.0831, -44.1164, 3.7933, 35.0232, -40.0716, 1.5901, 1.8645),
    (22.7233, 20.0904, -46.6940, 23.0331, 14.9730, -42.5619, 2.0373),
    (36.4612, 47.8580, 18.3852, 36.2715, 50.5065, 21.2231, 1.4146),
    (90.8027, -2.0831, 1.4410, 91.1528, -1.6435, 0.0447, 1.4441),
    (90.9257, -0.5406, -0.9208, 88.6381, -0.8985, -0.7239, 1.5381),
    (6.7747, -0.2908, -2.4247, 5.8714, -0.0985, -2.2286, 0.6377),
    (2.0776, 0.0795, -1.1350, 0.9033, -0.0636, -0.5514, 0.9082),
]


def test_ciede2000_matches_the_published_test_pairs():
    d = np.array(SHARMA)
    assert len(d) == 34
    np.testing.assert_allclose(ciede2000(d[:, :3], d[:, 3:6]), d[:, 6], atol=1e-4)
    # symmetric: the pairs swapped give the same differences
    np.testing.assert_allclose(ciede2000(d[:, 3:6], d[:, :3]), d[:, 6], atol=1e-4)


def test_srgb_to_lab_known_answers():
    np.testing.assert_allclose(srgb_to_lab([255, 255, 255]), [100, 0, 0], atol=1e-3)
    np.testing.assert_allclose(srgb_to_lab([0, 0, 0]), [0, 0, 0], atol=1e-9)
    # sRGB red and a mid grey (published D65 values)
    np.testing.assert_allclose(srgb_to_lab([255, 0, 0]), [53.2408, 80.0925, 67.2032], atol=2e-3)
    np.testing.assert_allclose(srgb_to_lab([119, 119, 119]), [50.0329, 0, 0], atol=2e-3)


_rgb = st.tuples(*[st.integers(0, 255)] * 3)


@settings(max_examples=200, deadline=None)
@given(_rgb, _rgb)
def test_ciede2000_is_a_symmetric_non_negative_difference(c1, c2):
    l1, l2 = srgb_to_lab(c1), srgb_to_lab(c2)
    d = float(ciede2000(l1, l2))
    assert d >= 0 and np.isfinite(d)
    assert d == pytest.approx(float(ciede2000(l2, l1)), abs=1e-9)
    assert float(ciede2000(l1, l1)) == 0.0
    if c1 != c2:
        assert d > 0


def test_pairwise_and_min_delta_e():
    cols = [(255, 0, 0), (0, 255, 0), (254, 0, 0)]
    d = pairwise_delta_e(cols)
    assert d.shape == (3, 3) and np.allclose(np.diag(d), 0) and np.allclose(d, d.T)
    assert min_delta_e(cols) == pytest.approx(d[0, 2])
    assert min_delta_e([(1, 2, 3)]) == float("inf")


def test_required_delta_e_falls_with_the_class_count():
    assert required_delta_e(11) == 20.0
    assert required_delta_e(21) == pytest.approx(15.12, abs=0.01)
    assert required_delta_e(80) == pytest.approx(7.75, abs=0.01)
    assert required_delta_e(10_000) == 5.0
    assert all(required_delta_e(n) >= required_delta_e(n + 1) for n in range(1, 300))


def test_distinct_colours_keeps_colours_that_pass_and_moves_the_one_that_does_not():
    wanted = [(200, 30, 30), (30, 30, 200), (205, 35, 30)]    # the third is the first's twin
    got = distinct_colours(wanted, min_delta=20)
    assert got[:2].tolist() == [[200, 30, 30], [30, 30, 200]]
    assert got[2].tolist() != [205, 35, 30]
    assert min_delta_e(got) >= 20


@pytest.mark.parametrize("n", [1, 2, 11, 21, 40, 80, 150])
def test_distinct_colours_reach_the_bar_for_generated_classes(n):
    got = distinct_colours([None] * n, min_luma=90)
    assert got.shape == (n, 3) and got.dtype == np.uint8
    assert min_delta_e(got) >= required_delta_e(n)
    luma = got.astype(float) @ [0.2126, 0.7152, 0.0722]
    assert luma.min() >= 90


# -- the palettes segment uses (moduseg.render.class_palette) ------------------------------

from moduseg.bank.datasets import CAMVID_CLASSES, COCO80, VOC_CLASSES  # noqa: E402
from moduseg.render import CAMVID_COLORS, MIN_LUMA, class_palette, lift  # noqa: E402


@pytest.mark.parametrize("names", [CAMVID_CLASSES, VOC_CLASSES, COCO80,
                                   [f"class {i}" for i in range(200)]],
                         ids=["camvid", "voc", "coco80", "200"])
def test_every_pair_of_classes_in_a_palette_is_distinguishable(names):
    pal = class_palette(names)
    assert pal.shape == (len(names), 3)
    assert min_delta_e(pal) >= required_delta_e(len(names))
    assert (pal.astype(float) @ [0.2126, 0.7152, 0.0722]).min() >= MIN_LUMA - 0.5


def test_camvid_keeps_its_familiar_colours_where_they_pass():
    pal = {n: tuple(c) for n, c in zip(CAMVID_CLASSES, class_palette(CAMVID_CLASSES).tolist())}
    for name in ("sky", "building", "pole", "road", "pavement", "tree"):
        assert pal[name] == lift(CAMVID_COLORS[name]), name
    # the pair: pedestrian was tree's olive
    d = pairwise_delta_e([pal["pedestrian"], pal["tree"]])[0, 1]
    assert d >= 20
    old = pairwise_delta_e([lift(CAMVID_COLORS["pedestrian"]), lift(CAMVID_COLORS["tree"])])
    assert old[0, 1] < 20                         # why it had to move


def test_palette_is_stable_and_a_copy():
    a = class_palette(CAMVID_CLASSES)
    a[:] = 0
    assert class_palette(CAMVID_CLASSES).any()
    assert (class_palette(list(CAMVID_CLASSES)) == class_palette(tuple(CAMVID_CLASSES))).all()


def test_legend_of_a_320_px_still_is_readable():
    """Lower-case letters at least 7 px high, every present class listed in the strip."""
    import cv2
    from moduseg.render import _font, legend_height, render_overlay

    scale, thick = _font(320)
    (_, x_height), _ = cv2.getTextSize("x", cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    assert x_height >= 7
    lab = np.repeat(np.arange(len(CAMVID_CLASSES), dtype=np.uint8), 320 * 240 // 11 + 1)
    lab = lab[:320 * 240].reshape(240, 320)
    img = np.full((240, 320, 3), 120, np.uint8)
    ov = render_overlay(img, lab, class_palette(CAMVID_CLASSES), CAMVID_CLASSES)
    assert ov.shape == (240 + legend_height(CAMVID_CLASSES, 320), 320, 3)
    strip = ov[240:]
    # every class's swatch colour appears in the strip
    for c in class_palette(CAMVID_CLASSES):
        assert (strip == c).all(-1).sum() >= 50, c
