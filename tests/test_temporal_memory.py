"""The class memory: fusion known answers, holding against a single vote, reset."""

import numpy as np

from moduseg.temporal import memory
from moduseg.temporal.flow import identity_map
from moduseg.types import IGNORE


def test_one_hot_and_decide_round_trip():
    lab = np.array([[0, 1], [2, IGNORE]], np.uint8)
    s = memory.start(lab, 3)
    assert s.shape == (3, 2, 2) and s[:, 1, 1].sum() == 0
    assert np.array_equal(memory.decide(s), lab)


def test_fuse_known_answer():
    old = memory.start(np.zeros((1, 3), np.uint8), 2)
    carried = np.array([[True, True, False]])
    new = np.array([[1, IGNORE, 1]], np.uint8)
    f = memory.fuse(old, carried, new, 0.7)
    assert np.allclose(f[:, 0, 0], [0.7, 0.3])      # history wins one dissenting vote
    assert np.allclose(f[:, 0, 1], [0.7, 0.0])      # no vote: history, decayed
    assert np.allclose(f[:, 0, 2], [0.0, 1.0])      # not carried: the new label alone
    assert memory.decide(f).tolist() == [[0, 0, 1]]
    f2 = memory.fuse(f, np.ones((1, 3), bool), np.array([[1, 1, 1]], np.uint8), 0.7)
    assert memory.decide(f2).tolist() == [[1, 0, 1]]  # two votes in a row: the class changes


def test_warp_with_identity_and_start_is_a_reset():
    lab = np.random.default_rng(0).integers(0, 4, (20, 30)).astype(np.uint8)
    s = memory.start(lab, 4)
    assert np.array_equal(memory.warp(s, identity_map((20, 30))), s)
    # a reset ignores the old scores completely
    other = (lab + 1) % 4
    assert np.array_equal(memory.decide(memory.start(other, 4)), other)


def test_regions_are_connected_components_of_one_class():
    lab = np.array([[0, 0, 1, 0],
                    [1, 1, 1, 0],
                    [IGNORE, 2, 2, 0]], np.uint8)
    ids, count = memory.regions(lab, 3)
    assert count == 4                         # class 0 twice, class 1 once, class 2 once
    assert ids[2, 0] == 0 and len(np.unique(ids[lab == 1])) == 1
    assert ids[0, 0] == ids[0, 1] != ids[0, 3] == ids[2, 3]


def test_region_vote_keeps_the_new_boundary_and_the_memorys_class():
    """The memory says class 0 left of column 2 and class 1 from it; the keyframe's labels
    move the boundary to column 3 and vote class 2 on the right (one dissenting vote).
    Per pixel, the carried boundary wins at column 2; per region, the new boundary holds
    and each region takes the memory's class."""
    old = memory.start(np.array([[0, 0, 1, 1, 1, 1]], np.uint8), 3)
    new = np.array([[0, 0, 0, 2, 2, 2]], np.uint8)
    f = memory.fuse(old, np.ones((1, 6), bool), new, 0.7)
    assert memory.decide(f).tolist() == [[0, 0, 1, 1, 1, 1]]
    assert memory.decide_regions(f, new).tolist() == [[0, 0, 0, 1, 1, 1]]
    # a pixel the keyframe leaves unassigned is decided on its own (column 2: the history)
    new2 = np.array([[0, 0, IGNORE, 2, 2, 2]], np.uint8)
    f2 = memory.fuse(memory.start(np.array([[0, 0, 1, 1, 1, 1]], np.uint8), 3),
                     np.ones((1, 6), bool), new2, 0.7)
    assert memory.decide_regions(f2, new2).tolist() == [[0, 0, 1, 1, 1, 1]]
    # a fresh memory (first frame, a cut) decides exactly the keyframe's labels
    lab = np.array([[0, 1, IGNORE], [2, 2, 1]], np.uint8)
    assert np.array_equal(memory.decide_regions(memory.start(lab, 3), lab), lab)
