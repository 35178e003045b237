"""Flow, composition and warps on known shifts."""

import numpy as np

import cv2
import pytest

from moduseg.temporal.flow import PRESETS, compose, flow_pair, gray, identity_map, \
    resize_map, to_map, warp_nearest
from temporal_fixtures import canvas, crop


def test_translation_gives_translated_labels():
    world, lab = canvas()
    f0, f1 = crop(world, 0, 0), crop(world, 4, 2)
    bwd, _ = flow_pair(gray(f0), gray(f1), "medium")
    inner = (slice(20, -20), slice(20, -20))
    assert np.allclose(np.median(bwd[inner][..., 0]), 4.0, atol=0.5)
    assert np.allclose(np.median(bwd[inner][..., 1]), 2.0, atol=0.5)
    warped = warp_nearest(crop(lab, 0, 0), to_map(bwd))
    agree = (warped[inner] == crop(lab, 4, 2)[inner]).mean()
    assert agree > 0.97


def test_compose_two_shifts_equals_their_sum():
    f = np.zeros((40, 50, 2), np.float32)
    f[..., 0] = 2.0
    g = np.zeros_like(f)
    g[..., 1] = 3.0
    m = compose(compose(identity_map((40, 50)), f), g)
    assert np.allclose(m[10:30, 10:40], identity_map((40, 50))[10:30, 10:40] + [2.0, 3.0])


def test_resize_map_keeps_the_identity():
    m = resize_map(identity_map((30, 40)), (90, 120))
    assert np.allclose(m, identity_map((90, 120)), atol=1e-4)


def test_warp_nearest_of_planes_and_bool():
    a = np.arange(12, dtype=np.float32).reshape(3, 2, 2)
    m = identity_map((2, 2))
    assert np.array_equal(warp_nearest(a, m), a)
    b = np.array([[True, False], [False, True]])
    assert np.array_equal(warp_nearest(b, m), b)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_a_small_frame_does_not_change_later_flows(preset):
    """OpenCV's DIS lowers its finest scale for a small frame and keeps it; the cached
    instance is reset on each call, so a flow depends on its two frames only."""
    world, _ = canvas()
    f0, f1 = gray(crop(world, 0, 0)), gray(crop(world, 3, 1))
    fresh = cv2.DISOpticalFlow_create(PRESETS[preset])
    want = fresh.calc(f1, f0, None), fresh.calc(f0, f1, None)
    tiny = np.zeros((16, 20), np.uint8)
    flow_pair(tiny, tiny, preset)
    got = flow_pair(f0, f1, preset)
    assert all(np.array_equal(g, w) for g, w in zip(got, want))
