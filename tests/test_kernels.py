"""The compiled CPU kernels agree with the plain numpy paths they replace."""

import numpy as np
import pytest

from moduseg import kernels
from moduseg.bench.inputs import blob_masks, clustered_vectors
from moduseg.runtime.index import ExactIndex, topk_rows
from moduseg.runtime.masks import PackedMasks, class_nms, pairwise_iou
from moduseg.smfa import soft_weights, soft_weights_matmul
from moduseg.types import GridGeometry

needs_numba = pytest.mark.skipif(not kernels.HAVE_NUMBA, reason="numba is not installed")


def test_sparse_axis_lists_each_pixels_cells():
    ov = np.array([[0.5, 0.5, 0.0], [0.0, 0.25, 1.0]], np.float32)   # 2 cells x 3 pixels
    idx, wgt = kernels.sparse_axis(ov)
    assert idx.shape == (3, 2)
    assert idx[1].tolist() == [0, 1] and wgt[1].tolist() == [0.5, 0.25]
    assert idx[0, 0] == 0 and wgt[0].tolist() == [0.5, 0.0]          # padded slot weighs 0
    assert idx[2, 0] == 1 and wgt[2, 0] == 1.0


@needs_numba
@pytest.mark.parametrize("mask_hw,geo", [
    ((360, 480), GridGeometry.unpadded((360, 480), (26, 35), 14)),   # fractional cells
    ((90, 120), GridGeometry((360, 480), (360, 480), (26, 35), 14)),  # low-res, padded grid
    ((28, 28), GridGeometry((28, 28), (28, 28), (2, 2), 14)),        # integer cells
])
def test_area_weights_match_the_dense_overlap_products(mask_hw, geo):
    masks = blob_masks(12, mask_hw, seed=3) if min(mask_hw) > 60 else \
        np.random.default_rng(0).random((12,) + mask_hw) < 0.4
    rows = np.array([11, 0, 5, 5])
    got = soft_weights(masks, geo, rows=rows)
    want = soft_weights_matmul(masks[rows], geo)
    np.testing.assert_allclose(got, want, atol=2e-6)


@needs_numba
def test_area_weights_row_span_skips_only_empty_rows():
    geo = GridGeometry.unpadded((64, 64), (4, 4), 16)
    masks = np.zeros((2, 64, 64), bool)
    masks[0, 10:30, 5:50] = True
    masks[1, 40:64, :] = True
    pm = PackedMasks.pack(masks)
    lo, hi = pm.row_span()
    assert lo.tolist() == [10, 40] and hi.tolist() == [30, 64]
    got = soft_weights(masks, geo, rows=np.arange(2), row_span=(lo, hi))
    np.testing.assert_allclose(got, soft_weights_matmul(masks, geo), atol=1e-6)


def test_analytic_area_weight_of_a_half_covered_cell():
    geo = GridGeometry.unpadded((28, 28), (2, 2), 14)
    m = np.zeros((1, 28, 28), bool)
    m[0, :7, :14] = True                   # top half of the top-left cell
    w = soft_weights(m, geo)
    assert w[0, 0, 0] == pytest.approx(0.5) and w[0].sum() == pytest.approx(0.5)


@needs_numba
def test_compiled_nms_equals_the_pairwise_numpy_nms(monkeypatch):
    masks = blob_masks(60, (120, 160), seed=11)
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 4, 60)
    scores = rng.random(60).astype(np.float32)
    fast = class_nms(masks, labels, scores, 0.4)
    monkeypatch.setattr(kernels, "_greedy_class_nms_jit", None)
    slow = class_nms(masks, labels, scores, 0.4)
    assert fast.tolist() == slow.tolist() and 0 < len(fast) < 60


@needs_numba
def test_compiled_nms_suppression_order():
    m = np.zeros((3, 10, 10), bool)
    m[0, :5, :5] = True
    m[1, :5, :4] = True                    # IoU 0.8 with mask 0
    m[2, 5:, 5:] = True
    kept = class_nms(m, np.array([1, 1, 1]), np.array([0.5, 0.9, 0.7]), 0.4)
    assert kept.tolist() == [1, 2]         # 1 beats 0; 2 does not overlap
    assert pairwise_iou(m)[0, 1] == pytest.approx(0.8)


def test_topk_rows_sorted_with_ties_by_column():
    s = np.array([[0.1, 0.9, 0.5, 0.9, 0.2] * 4], np.float32)
    v, c = topk_rows(s, 3)
    assert v.tolist() == [[pytest.approx(0.9)] * 3] and c.tolist() == [[1, 3, 6]]
    big = np.random.default_rng(0).random((7, 1000)).astype(np.float32)
    v, c = topk_rows(big, 25)
    np.testing.assert_array_equal(c, np.argsort(-big, axis=1, kind="stable")[:, :25])


@needs_numba
def test_pruned_search_is_exact_on_a_clustered_bank():
    centres = np.random.default_rng(0).standard_normal((40, 64)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x, _ = clustered_vectors(8000, 64, spread=0.3, seed=1, centres=centres)
    q, _ = clustered_vectors(50, 64, spread=0.3, seed=2, centres=centres)
    pruned, dense = ExactIndex(x), ExactIndex(x, prune=False)
    assert pruned.pruned
    v1, i1 = pruned.search(q, 25)
    v2, i2 = dense.search(q, 25)
    np.testing.assert_array_equal(np.sort(i1, 1), np.sort(i2, 1))
    np.testing.assert_allclose(v1, v2, atol=1e-5)
    assert pruned.scanned_fraction < 0.35           # the bounds did prune


@needs_numba
def test_pruned_search_gives_up_on_an_unclustered_bank():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5000, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    idx = ExactIndex(x)
    q = x[:10] + 0.01
    v, i = idx.search(q, 5)
    assert not idx.pruned                            # switched to the dense product
    assert i[:, 0].tolist() == list(range(10))


def test_exact_index_without_numba_is_dense(monkeypatch):
    monkeypatch.setattr(kernels, "HAVE_NUMBA", False)
    x, _ = clustered_vectors(5000, 32, seed=0)
    idx = ExactIndex(x)
    assert not idx.pruned
    v, i = idx.search(x[:3], 4)
    assert i[:, 0].tolist() == [0, 1, 2]


def test_soft_weights_rejects_rows_outside_the_masks():
    from moduseg.errors import InputError
    geo = GridGeometry.unpadded((28, 28), (2, 2), 14)
    m = np.zeros((2, 28, 28), bool)
    with pytest.raises(InputError, match="rows must index"):
        soft_weights(m, geo, rows=[0, 2])
    assert soft_weights(m, geo, rows=[]).shape == (0, 2, 2)
