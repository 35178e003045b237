"""Regression tests for issue 18 (bad input never gives a traceback).

Each test names the numbered item it guards; the hypothesis fuzz suite over the
same readers is ``test_fuzz_inputs.py``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from moduseg.bank.builder import build_bank
from moduseg.config import BankConfig, preset
from moduseg.errors import ModuSegError
from moduseg.evaluate import gt_proposals
from moduseg.runtime.pipeline import Segmenter, assign
from moduseg.types import IGNORE, Proposals

from synthetic import ColourBackbone, dataset

# --------------------------------------------------------------------------- #
# item 1: a frame with no proposal left after the filter is a normal frame


@pytest.fixture(scope="module")
def patch_bank():
    cfg = BankConfig(granularity="patch", purification="none", min_area=0,
                     outlier_fraction=0, patch_purity=1.0, patches_per_region=6)
    return build_bank(dataset(4), ColourBackbone(), cfg)


class _FixedProposer:
    name = "fixed"

    def __init__(self, make):
        self.make = make

    def __call__(self, image):
        return self.make(image)


def _tiny_masks(image):
    # one-pixel masks: all fall below any min_area and are filtered out
    H, W = image.shape[:2]
    m = np.zeros((2, H, W), bool)
    m[:, 0, 0] = True
    return Proposals(m, np.array([0.99, 0.5], np.float32), (H, W))


@pytest.mark.parametrize("name", ["paper", "default"])
@pytest.mark.parametrize("hw", [(1, 1), (8, 8), (40, 56)])
@pytest.mark.parametrize("make", [lambda im: Proposals.empty(im.shape[:2]), _tiny_masks],
                         ids=["none", "all-filtered"])
def test_a_frame_without_proposals_is_a_normal_frame(patch_bank, name, hw, make):
    rcfg = dataclasses.replace(preset(name).runtime, index="flat", min_area=4, top_k=3)
    seg = Segmenter(ColourBackbone(), _FixedProposer(make), patch_bank, rcfg, parallel=False)
    image = np.zeros(hw + (3,), np.uint8)
    res = seg(image)
    assert res.label_map.shape == hw and res.label_map.dtype == np.uint8
    assert all(s.painted_pixels == 0 for s in res.segments)
    if rcfg.unassigned == "nearest":   # default: every pixel takes its patch's label
        assert (res.label_map != IGNORE).all()


@pytest.mark.parametrize("name", ["paper", "default"])
def test_gt_proposals_of_an_all_ignore_label_are_empty_and_assign_runs(patch_bank, name):
    rcfg = dataclasses.replace(preset(name).runtime, index="flat", top_k=3)
    label = np.full((16, 24), IGNORE, np.uint8)
    props = gt_proposals(label)
    assert len(props) == 0
    image = np.zeros((16, 24, 3), np.uint8)
    from moduseg.runtime.index import build_index
    res = assign(ColourBackbone()(image), props, patch_bank,
                 build_index(patch_bank.vectors), rcfg)
    assert res.label_map.shape == (16, 24) and res.segments == []
