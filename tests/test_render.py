"""Tests of ``moduseg.render`` (moved here from test_reliability.py)."""

from __future__ import annotations
import numpy as np


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
