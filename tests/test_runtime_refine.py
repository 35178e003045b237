"""Guided label refinement snaps a coarse boundary to the image edge."""

import numpy as np
import pytest

from moduseg.errors import InputError
from moduseg.runtime.refine import guided_label_refine
from moduseg.types import IGNORE


def _scene():
    img = np.zeros((64, 64, 3), np.uint8)
    img[:, 32:] = 200                       # the true edge: column 32
    coarse = np.zeros((64, 64), np.uint8)
    coarse[:, 28:] = 1                      # a coarse mask, 4 pixels off
    return img, coarse


def test_boundary_moves_toward_the_image_edge():
    img, coarse = _scene()
    truth = np.zeros_like(coarse)
    truth[:, 32:] = 1
    out = guided_label_refine(coarse, img, radius=8, eps=1e-3)
    assert (out != truth).sum() <= (coarse != truth).sum() / 2  # 4 -> 2 columns off
    assert (out[:, 32:] == 1).all() and (out[:, :28] == 0).all()


def test_flat_image_keeps_labels_and_ignore_stays():
    img = np.full((32, 32, 3), 90, np.uint8)
    lab = np.zeros((32, 32), np.uint8)
    lab[:, 16:] = 2
    lab[0, 0] = IGNORE
    out = guided_label_refine(lab, img, radius=2)
    assert out[0, 0] == IGNORE
    assert (out[:, 18:] == 2).all() and (out[1:, :14] == 0).all()


def test_single_class_is_returned_as_is_and_bad_input_is_named():
    img, _ = _scene()
    one = np.ones((64, 64), np.uint8)
    assert guided_label_refine(one, img) is one
    with pytest.raises(InputError, match="guide image"):
        guided_label_refine(one[:10], img)
    with pytest.raises(InputError, match="radius"):
        guided_label_refine(one, img, radius=0)
