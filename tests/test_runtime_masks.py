import numpy as np

from moduseg.runtime.masks import class_nms, pairwise_iou, rasterize


def box(H, W, y0, y1, x0, x1):
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_iou_matrix():
    a, b = box(10, 10, 0, 10, 0, 5), box(10, 10, 0, 10, 0, 10)
    iou = pairwise_iou(np.stack([a, b]))
    assert np.isclose(iou[0, 1], 0.5) and np.isclose(iou[0, 0], 1)


def test_nms_keeps_the_higher_confidence_mask_of_a_class():
    a, b = box(20, 20, 0, 10, 0, 10), box(20, 20, 0, 10, 0, 9)   # IoU 0.9
    keep = class_nms(np.stack([a, b]), np.array([1, 1]), np.array([0.5, 0.8]), 0.4)
    assert keep.tolist() == [1]


def test_nms_is_class_specific():
    a, b = box(20, 20, 0, 10, 0, 10), box(20, 20, 0, 10, 0, 9)
    keep = class_nms(np.stack([a, b]), np.array([1, 2]), np.array([0.5, 0.8]), 0.4)
    assert keep.tolist() == [1, 0]


def test_nms_threshold_is_strict_greater():
    a, b = box(10, 10, 0, 10, 0, 5), box(10, 10, 0, 10, 0, 10)   # IoU exactly 0.5
    keep = class_nms(np.stack([a, b]), np.array([1, 1]), np.array([0.9, 0.8]), 0.5)
    assert sorted(keep.tolist()) == [0, 1]


def test_rasterize_first_come_first_served():
    big, small = box(10, 10, 0, 10, 0, 10), box(10, 10, 2, 4, 2, 4)
    masks, labels = np.stack([big, small]), np.array([1, 2])
    out, won = rasterize(masks, labels, np.array([1, 0]), fill=-1)
    assert out[3, 3] == 2 and out[0, 0] == 1 and won.tolist() == [4, 96]
    out2, won2 = rasterize(masks, labels, np.array([0, 1]), fill=-1)
    assert (out2 == 1).all() and won2.tolist() == [100, 0]


def test_rasterize_leaves_uncovered_pixels_at_fill():
    out, _ = rasterize(np.stack([box(5, 5, 0, 2, 0, 2)]), np.array([3]), np.array([0]), fill=-1)
    assert (out == -1).sum() == 21


def test_packed_masks_round_trip_and_areas():
    from moduseg.runtime.masks import PackedMasks
    rng = np.random.default_rng(0)
    m = rng.random((3, 7, 13)) > 0.5          # 91 pixels: not a multiple of 64
    pm = PackedMasks.pack(m)
    assert pm.areas.tolist() == m.reshape(3, -1).sum(1).tolist()
    for i in range(3):
        np.testing.assert_array_equal(pm.unpack(pm.bits[i]), m[i])
    ref = np.array([[(a & b).sum() / max((a | b).sum(), 1) for b in m] for a in m])
    np.testing.assert_allclose(pairwise_iou(pm), ref, atol=1e-6)


# numpy 1.x (the serving environment, PyTriton pins numpy < 2) has no bitwise_count
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

from moduseg.runtime import masks as masks_mod  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.uint64, hnp.array_shapes(min_dims=1, max_dims=3, max_side=5),
                  elements=st.integers(0, 2**64 - 1)))
def test_table_popcount_counts_every_set_bit(words):
    expected = np.array([bin(int(v)).count("1") for v in words.ravel()]).reshape(words.shape)
    np.testing.assert_array_equal(masks_mod._popcount_table(words), expected)


def test_masks_module_gives_the_same_answers_without_bitwise_count(monkeypatch):
    rng = np.random.default_rng(0)
    m = rng.random((7, 23, 31)) > 0.6
    labels = rng.integers(0, 3, 7)
    order = np.arange(7)
    want_iou, (want_map, want_won) = pairwise_iou(m), rasterize(m, labels, order, -1)
    monkeypatch.setattr(masks_mod, "popcount", masks_mod._popcount_table)
    np.testing.assert_array_equal(pairwise_iou(m), want_iou)
    got_map, got_won = rasterize(m, labels, order, -1)
    np.testing.assert_array_equal(got_map, want_map)
    np.testing.assert_array_equal(got_won, want_won)
    assert masks_mod.PackedMasks.pack(m).areas.tolist() == m.reshape(7, -1).sum(1).tolist()
