import numpy as np
import pytest

from moduseg.errors import InputError
from moduseg.evaluate import Evaluator, confusion, gt_proposals


def test_miou_with_ignore_and_missed_pixels():
    gt = np.array([[0, 0, 1, 1], [0, 255, 1, 1]], np.uint8)
    pred = np.array([[0, 1, 1, 1], [255, 0, 1, 1]], np.uint8)
    ev = Evaluator(["a", "b"])
    ev.add(pred, gt)
    s = ev.scores()
    # class a: tp 1 (0,0); gt a = 3 pixels; predicted a also at (1,1) which is ignore -> skipped
    # a: tp1, fn 2 (one predicted b, one predicted 255), fp 0 -> IoU 1/3
    # b: tp 4, fp 1 -> IoU 4/5
    np.testing.assert_allclose(s.iou, [1 / 3, 4 / 5])
    assert s.miou == pytest.approx((1 / 3 + 4 / 5) / 2 * 100)
    assert s.pixel_acc == pytest.approx(5 / 7)


def test_absent_classes_do_not_count():
    gt = np.zeros((4, 4), np.uint8)
    ev = Evaluator(["a", "b", "c"])
    ev.add(gt.copy(), gt)
    s = ev.scores()
    assert s.miou == pytest.approx(100) and np.isnan(s.iou[1])
    assert "n/a" in s.table()
    assert s.to_json()["per_class_iou"]["b"] is None


def test_shape_mismatch_is_refused():
    with pytest.raises(InputError):
        confusion(np.zeros((2, 2)), np.zeros((3, 2)), 2)


def test_gt_proposals_cover_every_labelled_pixel():
    gt = np.array([[0, 0, 2], [255, 2, 2]], np.uint8)
    p = gt_proposals(gt)
    assert len(p) == 2 and p.masks.sum() == 5 and (p.scores == 1).all()
    comp = gt_proposals(np.array([[1, 0, 1]], np.uint8), "components")
    assert len(comp) == 3
