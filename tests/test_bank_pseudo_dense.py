"""Sliding-window dense CLIP: window layout, stitching and ONNX end-to-end."""

import numpy as np
import pytest

from moduseg.bank.pseudo.dense import (
    SlidingWindow,
    axis_starts,
    classes_from_queries,
    resize_channels,
    resize_short_side,
    stitch,
    window_boxes,
)
from moduseg.errors import InputError


def test_axis_starts_cover_and_end_at_the_edge():
    assert axis_starts(80, 48, 16) == [0, 16, 32]
    assert axis_starts(100, 48, 32) == [0, 32, 52]      # last window aligned to the edge
    assert axis_starts(48, 48, 16) == [0]
    assert axis_starts(30, 48, 16) == [0]               # smaller than a crop: one window
    assert axis_starts(500, 336, 112) == [0, 112, 164]  # CorrCLIP's 336/112 on 500 px


def test_window_boxes_clip_to_the_image():
    boxes = window_boxes((30, 100), 48, 32)
    assert boxes == [(0, 0, 30, 48), (0, 32, 30, 80), (0, 52, 30, 100)]


def test_stitch_of_constant_windows_is_the_exact_average():
    H, W, crop, stride = 10, 16, 8, 4
    boxes = window_boxes((H, W), crop, stride)
    values = np.arange(1, len(boxes) + 1, dtype=np.float32)
    windows = [np.full((2, crop, crop), v, np.float32) * np.array([1, -1], np.float32)[:, None,
                                                                                       None]
               for v in values]
    out = stitch(windows, boxes, (H, W))
    # expected: per pixel, the mean value of the windows covering it
    total, count = np.zeros((H, W)), np.zeros((H, W))
    for v, (y0, x0, y1, x1) in zip(values, boxes):
        total[y0:y1, x0:x1] += v
        count[y0:y1, x0:x1] += 1
    np.testing.assert_allclose(out[0], total / count, rtol=1e-6)
    np.testing.assert_allclose(out[1], -total / count, rtol=1e-6)
    assert out[0, 0, 0] == 1.0          # covered by the first window only
    assert out[0, -1, -1] == values[-1]  # covered by the last window only


def test_stitch_refuses_gaps():
    with pytest.raises(InputError, match="do not cover"):
        stitch([np.zeros((1, 4, 4), np.float32)], [(0, 0, 4, 4)], (4, 8))


def test_resize_channels_beyond_opencv_channel_limit():
    x = np.random.default_rng(0).random((600, 3, 5)).astype(np.float32)
    y = resize_channels(x, (6, 10))
    assert y.shape == (600, 6, 10)
    import cv2
    np.testing.assert_allclose(y[599], cv2.resize(x[599], (10, 6),
                                                  interpolation=cv2.INTER_LINEAR), atol=1e-6)


def test_resize_short_side():
    img = np.zeros((100, 200, 3), np.uint8)
    assert resize_short_side(img, 50).shape == (50, 100, 3)
    assert resize_short_side(img, None) is img


def test_classes_take_the_max_of_their_queries():
    q = np.array([[[1.0]], [[5.0]], [[3.0]]], np.float32)   # 3 queries, 1x1 image
    out = classes_from_queries(q, [1, 1, 0], 3)
    assert out[:, 0, 0].tolist() == [3.0, 5.0, -np.inf]     # class 2 has no query


def test_window_settings_are_checked():
    with pytest.raises(InputError, match="stride"):
        SlidingWindow(crop=48, stride=64).validate()


# ---- end to end on a tiny exported CLIP --------------------------------------------------

torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from pseudo_tiny_clip import export_tiny

    from moduseg.bank.pseudo.model import load_clip_model

    d = tmp_path_factory.mktemp("clip")
    model, _ = export_tiny(d, crop=48)
    return model, load_clip_model(d)


def _segmenter(clip, window, n_queries=5, seed=0):
    from moduseg.bank.pseudo.dense import DenseClipSegmenter

    rng = np.random.default_rng(seed)
    q = rng.normal(size=(n_queries, 16)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return DenseClipSegmenter(clip, q, list(range(n_queries)), n_queries, window,
                              providers="cpu", threads=1), q


def _torch_window_logits(model, crop, q, scale):
    from moduseg.export.clip import DenseClipOptions, dense_image_module

    x = torch.from_numpy(crop.transpose(2, 0, 1)[None].astype(np.float32))
    with torch.no_grad():
        f = dense_image_module(model, DenseClipOptions(crop=48))(x)[0].numpy()
    return resize_channels(np.einsum("qe,ehw->qhw", q * scale, f), crop.shape[:2])


def test_one_window_image_equals_whole_image_inference(tiny):
    model, clip = tiny
    seg, q = _segmenter(clip, SlidingWindow(crop=48, stride=16, short_side=None))
    img = np.random.default_rng(1).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    got = seg.query_logits(img)
    ref = _torch_window_logits(model, img, q, clip.logit_scale)
    assert got.shape == (5, 48, 48)
    np.testing.assert_allclose(got, ref, atol=1e-4)


@pytest.mark.slow
def test_sliding_windows_stitch_torch_window_logits(tiny):
    model, clip = tiny
    seg, q = _segmenter(clip, SlidingWindow(crop=48, stride=16, short_side=None, batch=2))
    img = np.random.default_rng(2).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    boxes = window_boxes((64, 80), 48, 16)
    assert len(boxes) == 6
    ref = stitch([_torch_window_logits(model, img[y0:y1, x0:x1], q, clip.logit_scale)
                  for y0, x0, y1, x1 in boxes], boxes, (64, 80))
    np.testing.assert_allclose(seg.query_logits(img), ref, atol=1e-4)


def test_small_and_resized_images_come_back_at_their_size(tiny):
    _, clip = tiny
    seg, _ = _segmenter(clip, SlidingWindow(crop=48, stride=16, short_side=None))
    small = np.full((30, 20, 3), 128, np.uint8)   # padded up to one crop
    out = seg.class_logits(small)
    assert out.shape == (5, 30, 20) and np.isfinite(out).all()
    seg2, _ = _segmenter(clip, SlidingWindow(crop=48, stride=24, short_side=48))
    assert seg2.query_logits(np.zeros((90, 150, 3), np.uint8)).shape == (5, 90, 150)


def test_crop_must_match_the_export(tiny):
    _, clip = tiny
    with pytest.raises(InputError, match="re-export"):
        _segmenter(clip, SlidingWindow(crop=64, stride=16))


def test_class_logits_are_the_resized_max_over_queries(tiny):
    _, clip = tiny
    seg, _ = _segmenter(clip, SlidingWindow(crop=48, stride=24, short_side=48))
    seg.query_class = np.array([0, 0, 1, 1, 1])   # 5 queries serve classes 0 and 1 of 3
    img = np.random.default_rng(3).integers(0, 256, (60, 100, 3), dtype=np.uint8)
    q = seg.query_logits(img, original_size=False)
    assert q.shape == (5, 48, 80)
    out = seg.class_logits(img)
    assert out.shape == (5, 60, 100)
    np.testing.assert_allclose(out[1], resize_channels(q[2:].max(0)[None], (60, 100))[0],
                               rtol=1e-5, atol=1e-5)
    assert (out[2:] < -1e29).all()               # classes without a query never win
