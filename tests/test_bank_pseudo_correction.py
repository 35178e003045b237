"""Proposal correction: each confident proposal takes its pixels' majority label."""

import numpy as np
import pytest

from moduseg.bank.pseudo.correction import correct_with_proposals, majority_labels, masks_at
from moduseg.errors import InputError
from moduseg.types import IGNORE, Proposals


def _noisy_square():
    lm = np.zeros((8, 8), np.uint8)
    lm[2:6, 2:6] = 3
    lm[2, 2] = lm[5, 5] = 1          # two noisy pixels inside the object
    lm[0, 0] = 3                     # noise outside it
    return lm


def _props(masks, scores, hw=(8, 8)):
    return Proposals(np.stack(masks), np.asarray(scores, np.float32), hw)


def test_object_gets_its_majority_label_and_outside_is_untouched():
    lm = _noisy_square()
    sq = np.zeros((8, 8), bool)
    sq[2:6, 2:6] = True
    out = correct_with_proposals(lm, _props([sq], [0.9]))
    assert (out[sq] == 3).all()
    assert out[0, 0] == 3 and (out[~sq] == lm[~sq]).all()
    assert lm[2, 2] == 1             # input not modified


def test_low_scores_are_ignored_and_threshold_is_inclusive():
    lm = _noisy_square()
    sq = np.zeros((8, 8), bool)
    sq[2:6, 2:6] = True
    np.testing.assert_array_equal(correct_with_proposals(lm, _props([sq], [0.49])), lm)
    assert (correct_with_proposals(lm, _props([sq], [0.5]))[sq] == 3).all()


def test_small_proposal_inside_a_large_one_keeps_its_own_label():
    lm = np.zeros((8, 8), np.uint8)
    lm[3:5, 3:5] = 7                 # a small object, minority inside the big region
    big = np.ones((8, 8), bool)
    small = np.zeros((8, 8), bool)
    small[3:5, 3:5] = True
    out = correct_with_proposals(lm, _props([small, big], [0.9, 0.9]))
    assert (out[small] == 7).all() and (out[~small] == 0).all()


def test_ignore_pixels_do_not_vote_but_are_painted():
    lm = np.full((4, 4), IGNORE, np.uint8)
    lm[0, :3] = 2
    lm[1, 0] = 5
    m = np.ones((4, 4), bool)
    assert majority_labels(lm, m[None]).tolist() == [2]
    assert (correct_with_proposals(lm, _props([m], [1.0], (4, 4))) == 2).all()
    all_ignored = np.full((4, 4), IGNORE, np.uint8)
    assert majority_labels(all_ignored, m[None]).tolist() == [-1]
    np.testing.assert_array_equal(
        correct_with_proposals(all_ignored, _props([m], [1.0], (4, 4))), all_ignored)


def test_low_resolution_masks_are_upsampled():
    lm = np.zeros((8, 8), np.uint8)
    lm[:4, :4] = 4
    lm[0, 3] = 0
    low = np.zeros((2, 2), bool)
    low[0, 0] = True                  # the top-left quarter at 2x2
    p = Proposals(low[None], np.array([0.8], np.float32), (8, 8))
    assert masks_at(p, (8, 8))[0, :4, :4].all() and masks_at(p, (8, 8))[0].sum() == 16
    out = correct_with_proposals(lm, p)
    assert (out[:4, :4] == 4).all() and (out[4:] == 0).all()


def test_mismatched_image_size_is_an_error():
    with pytest.raises(InputError, match="same image"):
        correct_with_proposals(np.zeros((8, 8), np.uint8),
                               _props([np.ones((4, 4), bool)], [1.0], (4, 4)))
    empty = Proposals.empty((8, 8))
    np.testing.assert_array_equal(correct_with_proposals(_noisy_square(), empty),
                                  _noisy_square())
