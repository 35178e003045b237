"""Track matching by warped-mask IoU."""

import numpy as np

from moduseg.temporal.tracks import TrackSet, greedy_match, mask_iou, update


def box(y, x, h=4, w=4, H=16, W=16):
    m = np.zeros((H, W), bool)
    m[y:y + h, x:x + w] = True
    return m


def test_iou_known_answers():
    a = np.stack([box(0, 0), box(8, 8)])
    b = np.stack([box(0, 2), box(8, 8)])
    iou = mask_iou(a, b)
    assert np.isclose(iou[0, 0], 8 / 24) and iou[1, 1] == 1.0 and iou[0, 1] == 0.0


def test_greedy_match_prefers_the_best_pair():
    iou = np.array([[0.9, 0.6], [0.7, 0.2]])
    assert greedy_match(iou, 0.5) == [0, -1]


def test_tracks_continue_start_and_end():
    ts = TrackSet()
    ids = update(ts, {}, np.stack([box(0, 0), box(8, 8)]), [1, 2], [1.0, 1.0], 3, 0, 0.7)
    assert ids == [0, 1]
    warped = {tid: t.mask for tid, t in ts.tracks.items()}
    ids2 = update(ts, warped, np.stack([box(8, 8), box(0, 12)]), [0, 2], [1.0, 1.0], 3, 1, 0.7)
    assert ids2 == [1, 2]                   # one continues, one is new, track 0 ended
    assert ts.tracks[1].label == 2          # one dissenting vote does not change its class
    ts.reset()
    assert update(ts, {}, np.stack([box(0, 0)]), [1], [1.0], 3, 2, 0.7) == [3]
