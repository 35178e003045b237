"""Label filtering: a class absent from the image labels never appears."""

import numpy as np
import pytest

from moduseg.bank.pseudo.filtering import filter_logits, filtered_argmax, softmax
from moduseg.bank.pseudo.generate import PseudoMaskGenerator
from moduseg.errors import InputError


def _dominated_logits(H=6, W=7, C=4, winner=2, seed=0):
    """Random logits where class ``winner`` beats every other class at every pixel."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(C, H, W)).astype(np.float32)
    logits[winner] = logits.max(0) + 10.0
    return logits


def test_unfiltered_the_dominant_class_wins_everywhere():
    labels, conf = filtered_argmax(_dominated_logits(), None)
    assert (labels == 2).all() and (conf > 0.99).all()


def test_absent_class_never_appears_and_background_stays():
    logits = _dominated_logits()
    present = np.array([True, True, False, False])   # background + class 1
    labels, conf = filtered_argmax(logits, present)
    assert set(np.unique(labels)) <= {0, 1}
    assert 2 not in labels and 3 not in labels
    # the winner among the allowed classes, pixel by pixel
    np.testing.assert_array_equal(labels, logits[:2].argmax(0))
    probs = softmax(filter_logits(logits, present))
    assert (probs[2:] == 0).all()
    np.testing.assert_allclose(probs.sum(0), 1.0, rtol=1e-6)
    np.testing.assert_allclose(conf, probs.max(0), rtol=1e-6)


def test_filter_errors_are_clear():
    with pytest.raises(InputError, match="presence"):
        filter_logits(np.zeros((3, 2, 2)), np.ones(2, bool))
    with pytest.raises(InputError, match="no class is allowed"):
        filter_logits(np.zeros((3, 2, 2)), np.zeros(3, bool))


class _FixedLogits:
    def __init__(self, logits):
        self.logits = logits

    def class_logits(self, image):
        return self.logits


def test_generator_applies_image_labels_and_always_allows_background():
    names = ["background", "cat", "dog", "car"]
    gen = PseudoMaskGenerator(_FixedLogits(_dominated_logits(winner=2)), names, 0)
    img = np.zeros((6, 7, 3), np.uint8)
    out = gen(img, ["cat"], "x")
    assert set(np.unique(out.label_map)) <= {0, 1}
    assert out.allowed == ["background", "cat"]
    assert (gen(img, [], "x").label_map == 0).all()          # only background allowed
    assert (gen(img, ["dog"], "x").label_map == 2).all()
    assert (gen(img, None, "x").label_map == 2).all()        # no labels: no filtering
    with pytest.raises(InputError, match="horse"):
        gen(img, ["horse"], "img7")
    off = PseudoMaskGenerator(_FixedLogits(_dominated_logits(winner=2)), names, 0,
                              filter_labels=False)
    assert (off(img, ["cat"], "x").label_map == 2).all()


def test_low_confidence_pixels_become_ignore():
    logits = np.zeros((3, 2, 2), np.float32)
    logits[1, 0, 0] = 10.0                      # one sure pixel, three uniform ones
    gen = PseudoMaskGenerator(_FixedLogits(logits), ["background", "a", "b"], 0,
                              filter_labels=False, min_confidence=0.5)
    out = gen(np.zeros((2, 2, 3), np.uint8), None)
    assert out.label_map.tolist() == [[1, 255], [255, 255]]
    with pytest.raises(InputError, match="min_confidence"):
        PseudoMaskGenerator(_FixedLogits(logits), ["a"], None, min_confidence=1.0)
