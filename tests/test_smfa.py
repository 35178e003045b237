import cv2
import numpy as np
import pytest

from moduseg.errors import InputError
from moduseg.smfa import hard_weights, overlap_matrix, pool, smfa, soft_weights
from moduseg.types import FeatureMap, GridGeometry


def test_partial_patch_coverage_gives_fractional_weight():
    # 2x2 grid of 4-px patches; the mask covers the left 3 columns of the top-left patch
    g = GridGeometry.unpadded((8, 8), (2, 2), 4)
    m = np.zeros((1, 8, 8), bool)
    m[0, 0:4, 0:3] = True
    w = soft_weights(m, g)[0]
    np.testing.assert_allclose(w, [[0.75, 0], [0, 0]], atol=1e-7)


def test_smfa_equals_hand_computed_weighted_mean():
    g = GridGeometry.unpadded((8, 8), (2, 2), 4)
    F = np.arange(2 * 2 * 3, dtype=np.float32).reshape(3, 2, 2) + 1
    m = np.zeros((1, 8, 8), bool)
    m[0, 0:4, 0:4] = True          # full top-left patch: weight 1
    m[0, 0:2, 4:8] = True          # half of the top-right patch: weight 0.5
    v, wsum = smfa(m, FeatureMap(F, g))
    expect = (1.0 * F[:, 0, 0] + 0.5 * F[:, 0, 1]) / 1.5
    expect /= np.linalg.norm(expect)
    np.testing.assert_allclose(v[0], expect, rtol=1e-5)
    assert wsum[0] == pytest.approx(1.5)


@pytest.mark.parametrize("H,W,h,w", [(360, 480, 24, 32), (360, 480, 26, 34), (97, 61, 7, 5)])
def test_soft_weights_match_opencv_inter_area(H, W, h, w):
    rng = np.random.default_rng(0)
    m = rng.random((3, H, W)) > 0.6
    got = soft_weights(m, GridGeometry.unpadded((H, W), (h, w), 14))
    ref = np.stack([cv2.resize(x.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
                    for x in m])
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_padding_cells_get_zero_weight_and_content_lines_up():
    # a 30x20 image resized to 60x40 inside a 4x3 grid of 16-px patches (64x48 padded)
    g = GridGeometry((30, 20), (60, 40), (4, 3), 16)
    m = np.ones((1, 30, 20), bool)
    w = soft_weights(m, g)[0]
    np.testing.assert_allclose(w[:3, :2], 1.0)
    np.testing.assert_allclose(w[3, :2], 12 / 16)     # rows 48..60 of the last patch row
    np.testing.assert_allclose(w[:3, 2], 8 / 16)       # cols 32..40
    assert w[3, 2] == pytest.approx(12 * 8 / 256)


def test_low_resolution_masks_describe_the_same_area():
    g = GridGeometry.unpadded((64, 64), (4, 4), 16)
    hi = np.zeros((1, 64, 64), bool)
    hi[0, :32, :48] = True
    lo = hi[:, ::4, ::4]
    np.testing.assert_allclose(soft_weights(hi, g), soft_weights(lo, g), atol=1e-6)


def test_overlap_rows_sum_to_coverage():
    a = overlap_matrix(100, 90, 6, 16)   # content 90 px in 6 patches of 16 (96)
    np.testing.assert_allclose(a.sum(1), [1, 1, 1, 1, 1, 10 / 16], atol=1e-6)


def test_empty_mask_pools_to_zero_with_zero_weight():
    g = GridGeometry.unpadded((16, 16), (2, 2), 8)
    F = np.ones((4, 2, 2), np.float32)
    v, wsum = smfa(np.zeros((1, 16, 16), bool), FeatureMap(F, g))
    assert wsum[0] == 0 and np.all(v[0] == 0)


def test_hard_weights_use_patch_centres():
    g = GridGeometry.unpadded((8, 8), (2, 2), 4)
    m = np.zeros((1, 8, 8), bool)
    m[0, 0:3, 0:3] = True     # covers the centre (2, 2) of patch (0, 0)
    np.testing.assert_array_equal(hard_weights(m, g)[0], [[1, 0], [0, 0]])


def test_pool_rejects_grid_mismatch():
    g = GridGeometry.unpadded((8, 8), (2, 2), 4)
    with pytest.raises(InputError):
        pool(np.ones((1, 3, 3), np.float32), FeatureMap(np.ones((2, 2, 2), np.float32), g))


def test_featuremap_rejects_wrong_grid():
    with pytest.raises(InputError, match="grid"):
        FeatureMap(np.ones((4, 3, 3), np.float32), GridGeometry.unpadded((8, 8), (2, 2), 4))


@pytest.mark.parametrize("mask_hw,geo", [
    ((360, 480), GridGeometry((360, 480), (504, 672), (36, 48), 14)),   # upscaled + pad
    ((192, 256), GridGeometry((360, 480), (360, 480), (26, 35), 14)),   # low-res masks, pad
    ((97, 61), GridGeometry((97, 61), (60, 40), (4, 3), 16)),           # downscaled, pad
])
def test_integral_form_equals_the_overlap_matrix_products(mask_hw, geo):
    from moduseg.smfa import soft_weights_matmul
    m = np.random.default_rng(1).random((5,) + mask_hw) > 0.5
    np.testing.assert_allclose(soft_weights(m, geo), soft_weights_matmul(m, geo), atol=1e-5)


def test_empty_mask_among_many_has_exactly_zero_weight():
    rng = np.random.default_rng(3)
    g = GridGeometry((90, 110), (50, 66), (8, 10), 7)
    m = rng.random((37, 90, 110)) > 0.5
    m[17] = False
    w = soft_weights(m, g)
    assert (w[17] == 0).all() and (w >= 0).all()
