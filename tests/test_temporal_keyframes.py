"""Keyframe choice: a synthetic cut, motion, fit and the interval."""

import numpy as np

from moduseg.config import TemporalOptions
from moduseg.temporal.flow import flow_pair, gray, to_map
from moduseg.temporal.keyframes import FrameChange, histogram_distance, \
    is_cut, keyframe_reason, photometric_residual
from temporal_fixtures import canvas, crop

P = TemporalOptions()


def change(g0, g1):
    from moduseg.temporal.flow import fb_valid
    bwd, fwd = flow_pair(g0, g1)
    r = photometric_residual(g1, g0, to_map(bwd))
    return FrameChange(r, histogram_distance(g0, g1), float(fb_valid(bwd, fwd, 2.0).mean()),
                       float(np.linalg.norm(bwd, axis=2).mean()) / g1.shape[1], r)


def test_synthetic_cut_is_a_keyframe_and_a_pan_is_not():
    world_a, _ = canvas(0)
    world_b, _ = canvas(5)
    a0, a1 = gray(crop(world_a, 0, 0)), gray(crop(world_a, 3, 1))
    b0 = gray(np.ascontiguousarray(np.flipud(crop(world_b, 0, 0))))
    pan, cut = change(a0, a1), change(a1, b0)
    assert not is_cut(pan, P) and keyframe_reason(pan, 1, P) is None
    assert is_cut(cut, P) and keyframe_reason(cut, 1, P) == "cut"


def test_reasons_in_order():
    calm = FrameChange(1.0, 0.01, 0.95, 0.001, 2.0)
    assert keyframe_reason(None, 5, P) == "first"
    assert keyframe_reason(calm, P.max_interval - 1, P) is None
    assert keyframe_reason(calm, P.max_interval, P) == "interval"
    fast = FrameChange(3.0, 0.01, 0.9, P.max_motion * 2, 2.0)
    assert keyframe_reason(fast, 1, P) == "motion"
    drift = FrameChange(1.0, 0.01, 0.95, 0.001, P.max_fit_residual + 1)
    assert keyframe_reason(drift, 1, P) == "fit"
    blank = FrameChange(1.0, 0.01, 0.05, 0.001, 2.0)       # the flow explains nothing
    assert keyframe_reason(blank, 1, P) == "cut"


def test_histogram_distance_known_answers():
    a = np.zeros((10, 10), np.uint8)
    assert histogram_distance(a, a) < 1e-6
    assert histogram_distance(a, a + 255) > 0.99
