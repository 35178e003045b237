"""Tests of ``moduseg.render``."""

from __future__ import annotations
import numpy as np
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from moduseg.render import MIN_LUMA, class_palette, legend_height, luma, render_overlay  # noqa: E402
from app_fixtures import CAMVID  # noqa: E402,F401


def test_overlay_memory_stays_a_few_bytes_per_pixel():
    """An 8000x6000 frame peaked at 4.45 GB with float32 overlay temporaries; the
    overlay (``render.render_overlay``) blends in uint8 (measured ~15 B/px, with
    the legend strip)."""
    import tracemalloc

    from moduseg.render import class_palette, render_overlay
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (1000, 1000, 3), dtype=np.uint8)
    label = rng.integers(0, 12, (1000, 1000)).astype(np.uint8)
    names = [f"class{i}" for i in range(12)]
    palette = class_palette(names)
    tracemalloc.start()
    try:
        render_overlay(image, label, palette, names)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 24 * image.shape[0] * image.shape[1]     # float32 temporaries: ~65 B/px


def test_camvid_palette_keeps_camvid_colours_and_none_is_dark():
    pal = class_palette(CAMVID)
    assert (luma(pal) >= MIN_LUMA - 0.5).all()
    assert len({tuple(c) for c in pal}) == len(CAMVID)
    assert tuple(pal[CAMVID.index("sky")]) == (128, 128, 128)        # CamVid's own colour
    road = pal[CAMVID.index("road")].astype(int)                      # (128, 64, 128) lifted
    assert np.abs(road - (128, 64, 128)).max() <= 15
    car = pal[CAMVID.index("car")].astype(int)                        # (64, 0, 128) lifted
    assert car[2] > car[0] > car[1]                                   # still purple


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(min_size=0, max_size=12), min_size=1, max_size=120))
def test_any_class_list_gets_a_visible_palette(names):
    pal = class_palette(names)
    assert pal.shape == (len(names), 3) and pal.dtype == np.uint8
    assert (luma(pal) >= MIN_LUMA - 0.5).all()


def test_generated_palette_colours_are_distinct():
    pal = class_palette([f"class{i}" for i in range(80)]).astype(int)
    d = np.abs(pal[:, None] - pal[None]).sum(-1) + np.eye(80, dtype=int) * 999
    assert d.min() >= 15


def test_overlay_keeps_the_picture_and_shows_a_legend_of_present_classes():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (120, 200, 3), np.uint8)
    lm = np.full((120, 200), 255, np.uint8)
    lm[:60] = 0
    lm[60:, :100] = 2
    names = ["sky", "road", "car"]
    pal = class_palette(names)
    ov = render_overlay(img, lm, pal, names)
    lh = legend_height(names, 200)
    assert ov.shape == (120 + lh, 200, 3)
    body = ov[:120].astype(float)
    inner = np.zeros((120, 200), bool)
    inner[2:58, 2:198] = True
    # the picture stays readable: the blended region still follows the image
    assert np.corrcoef(body[inner].ravel(), img[inner].astype(float).ravel())[0, 1] > 0.8
    assert (ov[70:118, 102:198] == img[70:118, 102:198]).all()          # unassigned: untouched
    strip = ov[120:].reshape(-1, 3)
    colours = {tuple(c) for c in strip}
    assert tuple(pal[0]) in colours and tuple(pal[2]) in colours       # swatches present
    assert tuple(pal[1]) not in colours                                # absent class: none


def test_class_on_a_black_frame_stays_visible():
    names = ["car"]
    lm = np.zeros((40, 40), np.uint8)
    ov = render_overlay(np.zeros((40, 40, 3), np.uint8), lm, class_palette(names), names)
    assert luma(ov[5:35, 5:35].astype(float)).mean() > 0.4 * MIN_LUMA
