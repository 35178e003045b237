"""The TC metric's known answers."""

import numpy as np

from moduseg.temporal.consistency import ConsistencyMeter, clip_consistency, \
    pair_consistency, summarize_tc
from temporal_fixtures import canvas, crop


def test_static_labels_on_a_still_scene_agree_fully():
    world, lab = canvas()
    f = crop(world, 0, 0)
    assert pair_consistency(f, f, crop(lab, 0, 0), crop(lab, 0, 0)) == 1.0


def test_labels_that_move_with_the_scene_agree_and_static_ones_do_not():
    world, lab = canvas()
    f0, f1 = crop(world, 0, 0), crop(world, 6, 3)
    moving = pair_consistency(f0, f1, crop(lab, 0, 0), crop(lab, 6, 3))
    frozen = pair_consistency(f0, f1, crop(lab, 0, 0), crop(lab, 0, 0))
    assert moving > 0.98 and frozen < moving - 0.03


def test_swapped_classes_give_zero():
    world, lab = canvas()
    f = crop(world, 0, 0)
    a = crop(lab, 0, 0)
    assert pair_consistency(f, f, a, (a + 1) % 3) == 0.0


def test_cut_pairs_are_excluded_and_summary_percentiles():
    world, lab = canvas()
    f = crop(world, 0, 0)
    a = crop(lab, 0, 0)
    s = clip_consistency([f, f, f], [a, (a + 1) % 3, (a + 1) % 3], cuts=[1])
    assert s["pairs"] == 1 and s["mean"] == 100.0 and s["cut_pairs_excluded"] == 1
    assert summarize_tc([0.5, 1.0, None]) == {"pairs": 2, "mean": 75.0, "median": 75.0,
                                              "p10": 55.0}
    m = ConsistencyMeter()
    assert m.add(f, a) is None and m.summary()["pairs"] == 0
