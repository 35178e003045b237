"""Options users of comparable tools reach for (issue 29, item 12), at the pipeline:
a confidence threshold below which a segment is left unassigned, and a class filter."""

from __future__ import annotations

import numpy as np
import pytest

from moduseg.bank.builder import build_bank
from moduseg.config import BankConfig, RuntimeConfig
from moduseg.errors import InputError
from moduseg.runtime.index import build_index
from moduseg.runtime.pipeline import assign, assign_patches, class_filter
from moduseg.types import IGNORE, Proposals
from synthetic import ColourBackbone, dataset, scene


@pytest.fixture(scope="module")
def bank():
    return build_bank(dataset(6), ColourBackbone(), BankConfig(erosion_iterations=3, min_area=50))


def _mixed(label):
    """One mask per class region, plus one mask spanning two regions (a split vote)."""
    cs = [int(c) for c in np.unique(label) if c != 0]
    masks = [label == 0] + [label == c for c in cs[:2]] + [(label == cs[2]) | (label == cs[3])]
    return Proposals(np.stack(masks), np.ones(len(masks)), label.shape), cs


def _run(bank, label, image, props, **kw):
    cfg = RuntimeConfig(min_area=50, top_k=5, unassigned="nearest", **kw)
    return assign(ColourBackbone()(image), props, bank, build_index(bank.vectors), cfg)


def test_segments_below_the_confidence_threshold_are_left_unassigned(bank):
    image, label = scene(5)
    props, cs = _mixed(label)
    base = _run(bank, label, image, props)
    conf = {s.proposal: s.confidence for s in base.segments}
    assert conf[3] < conf[1] and conf[3] < conf[2]          # the split vote is the unsure one
    thr = (conf[3] + min(conf[1], conf[2])) / 2
    res = _run(bank, label, image, props, min_confidence=thr)
    seg = {s.proposal: s for s in res.segments}
    assert seg[3].label == -1 and seg[3].class_name == "" and seg[3].painted_pixels == 0
    assert seg[1].label == cs[0] and seg[1].painted_pixels > 0
    # its pixels stay unassigned although runtime.unassigned=nearest would fill them
    assert (res.label_map[props.masks[3]] == IGNORE).all()
    assert (base.label_map[props.masks[3]] != IGNORE).all()
    assert (res.label_map[props.masks[1]] == cs[0]).all()


def test_class_filter_paints_only_the_named_classes(bank):
    image, label = scene(5)
    props, cs = _mixed(label)
    name = bank.class_names[cs[0]]
    res = _run(bank, label, image, props, classes=(name,))
    assert set(np.unique(res.label_map)) == {cs[0], IGNORE}
    assert (res.label_map[label == cs[0]] == cs[0]).all()
    assert res.segments and all(s.class_name in (name, "") for s in res.segments)
    # names are matched case-insensitively
    res2 = _run(bank, label, image, props, classes=(name.upper(),))
    assert (res2.label_map == res.label_map).all()


def test_class_filter_on_the_patch_path(bank):
    image, label = scene(5)
    name = bank.class_names[int(label.max())]
    cfg = RuntimeConfig(assignment="patch", top_k=5, classes=(name,))
    res = assign_patches(ColourBackbone()(image), bank, build_index(bank.vectors), cfg)
    assert set(np.unique(res.label_map)) <= {int(label.max()), IGNORE}
    assert (res.label_map == int(label.max())).any()


def test_unknown_class_names_one_line(bank):
    with pytest.raises(InputError, match=r"no class 'clas1' \(did you mean 'class1'\?\); its "
                                         r"classes: background, class1"):
        class_filter(("clas1",), bank.class_names)
    assert class_filter((), bank.class_names) is None


def test_confidence_threshold_needs_segments():
    with pytest.raises(InputError, match="min_confidence applies to segments"):
        RuntimeConfig(assignment="patch", min_confidence=0.5).validate()
    RuntimeConfig(assignment="patch_vote", min_confidence=0.5).validate()
