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
