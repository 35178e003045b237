"""Mask operations of the SAM generator on synthetic masks with known answers."""

import cv2
import numpy as np
import pytest

from moduseg.errors import InputError
from moduseg.runtime.proposers import mask_ops


def test_point_grid_is_cell_centred():
    g = mask_ops.point_grid(2, 4)
    assert g.shape == (8, 2)
    np.testing.assert_allclose(np.unique(g[:, 0]), [0.125, 0.375, 0.625, 0.875])
    np.testing.assert_allclose(np.unique(g[:, 1]), [0.25, 0.75])
    with pytest.raises(InputError):
        mask_ops.point_grid(0, 3)


def test_stability_score_on_constructed_logits():
    logits = np.full((2, 8, 8), -5.0, np.float32)
    logits[0, :2, :5] = 2.0       # 10 cells above +1
    logits[0, 2:4, :5] = 0.5      # 10 more above -1 only
    logits[1, :4, :4] = 3.0       # a crisp mask: 16 cells above both
    s = mask_ops.stability_score(logits, offset=1.0)
    np.testing.assert_allclose(s, [0.5, 1.0])
    # a wider offset counts the soft band as unstable too
    assert mask_ops.stability_score(logits[:1], offset=3.0)[0] == 0.0
    # no masks at all (nothing passed the IoU filter)
    assert mask_ops.stability_score(np.zeros((0, 8, 8), np.float32)).shape == (0,)
    # empty masks are trivially stable
    assert mask_ops.stability_score(np.full((1, 4, 4), -9.0))[0] == 1.0


def test_mask_iou_matrix_known_values():
    m = np.zeros((3, 4, 4), bool)
    m[0, :2] = True            # 8 cells
    m[1, :1] = True            # 4 cells, inside m0
    m[2, 2:] = True            # disjoint from m0
    iou = mask_ops.mask_iou_matrix(m)
    np.testing.assert_allclose(np.diag(iou), 1.0)
    assert iou[0, 1] == pytest.approx(0.5)
    assert iou[0, 2] == 0.0
    np.testing.assert_allclose(iou, iou.T)


def test_nms_keeps_the_higher_score_mask():
    m = np.zeros((3, 10, 10), bool)
    m[0, :5, :5] = True
    m[1, :5, :6] = True          # IoU 25/30 with m0
    m[2, 6:, 6:] = True          # disjoint
    keep = mask_ops.mask_nms(m, np.array([0.5, 0.9, 0.1]), iou_thresh=0.7)
    assert keep.tolist() == [1, 2]
    keep = mask_ops.mask_nms(m, np.array([0.95, 0.9, 0.1]), iou_thresh=0.7)
    assert keep.tolist() == [0, 2]
    # above the threshold nothing is suppressed
    assert sorted(mask_ops.mask_nms(m, np.array([0.5, 0.9, 0.1]), 0.9).tolist()) == [0, 1, 2]
    assert mask_ops.mask_nms(m[:0], np.zeros(0), 0.5).size == 0


def test_small_holes_filled_and_islands_removed():
    m = np.zeros((20, 20), bool)
    m[2:12, 2:12] = True
    m[5:7, 5:7] = False          # 4-cell hole
    m[16:18, 16:18] = True       # 4-cell island
    filled = mask_ops.remove_small_regions(m, 10, "holes")
    assert filled[5:7, 5:7].all() and filled[16:18, 16:18].all()
    cleaned = mask_ops.remove_small_regions(filled, 10, "islands")
    assert not cleaned[16:18, 16:18].any()
    assert cleaned[2:12, 2:12].all() and cleaned.sum() == 100
    # big holes survive
    m2 = np.ones((20, 20), bool)
    m2[5:15, 5:15] = False
    assert (mask_ops.remove_small_regions(m2, 50, "holes") == m2).all()
    # a mask made only of small islands keeps its largest island
    tiny = np.zeros((10, 10), bool)
    tiny[0, 0] = True
    tiny[5:7, 5:7] = True
    out = mask_ops.remove_small_regions(tiny, 100, "islands")
    assert out.sum() == 4 and out[5:7, 5:7].all()
    batch = mask_ops.clean_masks(np.stack([m, m]), 10)
    assert (batch[0] == cleaned).all() and (batch[1] == cleaned).all()
    with pytest.raises(InputError):
        mask_ops.remove_small_regions(m, 10, "both")


def test_uncovered_points_lie_in_the_largest_free_regions():
    covered = np.ones((30, 40), bool)
    covered[5:25, 20:38] = False   # big free block, 360 cells
    covered[1:3, 1:3] = False      # 4 free cells
    pts = mask_ops.uncovered_points(covered, min_area=10, max_points=5)
    assert pts.shape == (1, 2)
    x, y = pts[0]
    assert 20 <= x <= 38 and 5 <= y <= 25
    assert abs(x - 29) <= 2 and abs(y - 15) <= 2   # deep inside, near the centre
    two = mask_ops.uncovered_points(covered, min_area=1, max_points=5)
    assert len(two) == 2 and 20 <= two[0, 0] <= 38   # largest first
    assert len(mask_ops.uncovered_points(np.ones((5, 5), bool), 1, 3)) == 0


def test_crop_boxes_cover_the_image():
    boxes = mask_ops.crop_boxes((360, 480), 1)
    assert boxes[0] == (0, 0, 480, 360) and len(boxes) == 5
    cover = np.zeros((360, 480), bool)
    for x0, y0, x1, y1 in boxes[1:]:
        assert 0 <= x0 < x1 <= 480 and 0 <= y0 < y1 <= 360
        cover[y0:y1, x0:x1] = True
    assert cover.all()


def test_color_cluster_points_find_a_small_distinct_object():
    img = np.full((120, 160, 3), 128, np.uint8)
    img[60:, :] = (60, 60, 60)              # "road"
    img[20:35, 110:125] = (220, 30, 30)     # a small red sign
    pts = mask_ops.color_cluster_points(img, 4)
    assert pts.shape == (4, 2) and (pts >= 0).all() and (pts <= 1).all()
    xy = pts * np.array([160, 120])
    on_sign = (xy[:, 0] >= 108) & (xy[:, 0] <= 127) & (xy[:, 1] >= 18) & (xy[:, 1] <= 37)
    assert on_sign.sum() == 1
    np.testing.assert_array_equal(pts, mask_ops.color_cluster_points(img, 4))  # seeded


def _street(h=180, w=480):
    img = np.full((h, w, 3), 170, np.uint8)          # a bright wall
    img[120:] = (90, 90, 90)                          # road
    return img


def test_thin_structure_points_land_on_poles_tallest_first():
    img = _street()
    img[20:150, 60:63] = 40                           # tall dark pole, 3 px wide
    img[70:120, 180:184] = 235                        # shorter bright post, 4 px wide
    img[40:100, 110:150] = 40                         # a wide dark block (a window): not thin
    img[30:33, 10:230] = 40                           # a horizontal wire: not upright
    pts = mask_ops.thin_structure_points(img, 5)
    xy = pts * np.array([480, 180])
    assert pts.shape == (2, 2) and (pts >= 0).all() and (pts <= 1).all()
    assert 59 <= xy[0, 0] <= 64 and 20 <= xy[0, 1] <= 150       # the pole first (taller)
    assert 179 <= xy[1, 0] <= 185 and 70 <= xy[1, 1] <= 120     # then the post
    np.testing.assert_array_equal(mask_ops.thin_structure_points(img, 1), pts[:1])


def test_thin_structure_points_none_without_thin_structures():
    img = _street()
    assert mask_ops.thin_structure_points(img, 4).shape == (0, 2)
    img[20:110, 60:63] = 160                          # too faint (10 grey levels)
    assert mask_ops.thin_structure_points(img, 4).shape == (0, 2)
    img[20:110, 60:63] = 40
    assert len(mask_ops.thin_structure_points(img, 4)) == 1
    assert mask_ops.thin_structure_points(img, 0).shape == (0, 2)
    img[35:110, 60:63] = 170                          # now 15 px tall: too short
    assert mask_ops.thin_structure_points(img, 4).shape == (0, 2)
    small = cv2.resize(_street(), (240, 90))          # sizes scale with the frame
    small[10:55, 30:32] = 40
    assert len(mask_ops.thin_structure_points(small, 4)) == 1
