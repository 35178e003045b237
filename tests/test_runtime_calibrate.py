"""``unknown``: calibration from the bank itself (known answers) and the run-time decision."""

import numpy as np
import pytest

from moduseg.runtime import calibrate as cal
from moduseg.errors import InputError


def _arc(n, step, plane, D=8):
    """``n`` unit vectors on a circle in axes ``plane``, ``step`` radians apart, one image each:
    every vector's nearest other one is exactly ``cos(step)`` away."""
    t = np.arange(n) * step
    v = np.zeros((n, D))
    v[:, plane[0]], v[:, plane[1]] = np.cos(t), np.sin(t)
    return v.astype(np.float32)


def test_leave_one_image_out_threshold_has_the_known_answer():
    a, b = _arc(30, 0.05, (0, 1)), _arc(20, 0.2, (2, 3))
    v = np.concatenate([a, b])
    labels = np.r_[np.zeros(30, int), np.ones(20, int)]
    ids = np.array([f"img{i}" for i in range(50)])
    rec = cal.calibrate(v, labels, ids, ["a", "b"])
    t = cal.tables(rec, ["a", "b"])
    for q in (0.0, 0.05, 0.5):
        np.testing.assert_allclose(cal.thresholds(t, q), [np.cos(0.05), np.cos(0.2)], atol=1e-5)


def test_vectors_of_the_same_image_do_not_calibrate_each_other():
    # pairs of duplicates from one image each: leave-one-vector-out would give 1.0
    base = _arc(10, 0.3, (0, 1))
    v = np.repeat(base, 2, axis=0)
    ids = np.repeat([f"img{i}" for i in range(10)], 2)
    rec = cal.calibrate(v, np.zeros(20, int), ids, ["a"])
    np.testing.assert_allclose(cal.thresholds(cal.tables(rec, ["a"]), 0.5), [np.cos(0.3)],
                               atol=1e-5)
    # a class from one image: the vector itself is left out instead
    rec = cal.calibrate(v, np.zeros(20, int), np.array(["one"] * 20), ["a"])
    np.testing.assert_allclose(cal.thresholds(cal.tables(rec, ["a"]), 0.5), [1.0], atol=1e-5)


def _cluster(rng, centre, n, spread, D):
    x = centre[None] + spread * rng.normal(size=(n, D))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_quantile_is_the_false_rejection_rate_on_fresh_samples_and_strangers_are_rejected():
    rng = np.random.default_rng(3)
    D = 16
    centres = np.eye(D)[:3] * 1.0
    bank = np.concatenate([_cluster(rng, c, 800, 0.15, D) for c in centres])
    labels = np.repeat([0, 1, 2], 800)
    ids = np.array([f"i{i}" for i in range(len(bank))])
    rec = cal.calibrate(bank, labels, ids, ["a", "b", "c"], max_queries=800)
    t = cal.tables(rec, ["a", "b", "c"])
    q = 0.05
    thr = cal.thresholds(t, q)
    from moduseg.runtime.index import build_index
    index = build_index(bank, "flat")

    def flagged(x):
        sims, nn = index.search(x, 5)
        nbr = labels[nn]
        winners = nbr[:, 0]
        return cal.unknown_mask(sims, nbr, winners, thr), cal.p_values(
            t, winners, cal.evidence(sims, nbr, winners))

    fresh = np.concatenate([_cluster(rng, c, 2000, 0.15, D) for c in centres])
    m, p = flagged(fresh)
    assert abs(m.mean() - q) < 0.02                         # ~q of the known are flagged
    np.testing.assert_array_equal(m, p < q)                 # the p-value decides
    stranger = _cluster(rng, np.eye(D)[5], 500, 0.15, D)    # a class the bank never saw
    m, p = flagged(stranger)
    assert m.mean() > 0.99
    # turned off: q = 0 flags nothing known
    assert not flagged(fresh)[1].min() < 0.0
    assert (cal.thresholds(t, 0.0) <= cal.thresholds(t, q)).all()


def test_a_one_vector_class_borrows_the_most_lenient_table_and_bad_q_is_refused():
    v = np.concatenate([_arc(10, 0.1, (0, 1)), _arc(10, 0.3, (2, 3)), _arc(1, 0, (4, 5))])
    labels = np.r_[np.zeros(10, int), np.ones(10, int), [2]]
    rec = cal.calibrate(v, labels, np.array([f"i{i}" for i in range(21)]), list("abc"))
    assert rec["per_class"]["c"] is None
    t = cal.tables(rec, list("abc"))
    thr = cal.thresholds(t, 0.5)
    assert np.isclose(thr[2], np.cos(0.3), atol=1e-5)
    with pytest.raises(InputError, match="quantile"):
        cal.thresholds(t, 1.5)


def test_stored_calibration_that_does_not_fit_is_ignored():
    rec = cal.calibrate(_arc(5, 0.1, (0, 1)), np.zeros(5, int), np.arange(5), ["a"])
    assert cal.check_calibration(rec, ["a"]) is rec
    assert cal.check_calibration(rec, ["a", "b"]) is None
    assert cal.check_calibration({"levels": 3}, ["a"]) is None
    bad = dict(rec, per_class={"a": [float("nan")] * len(cal.LEVELS)})
    assert cal.check_calibration(bad, ["a"]) is None


def _scene_with_a_stranger():
    """A scene drawn like the bank's, with a colour-4 rectangle in its empty quadrant."""
    from synthetic import PALETTE, scene
    _, label = scene(100, n_classes=4)
    for q in range(4):
        y0, x0 = (q // 2) * 48, (q % 2) * 64
        if not label[y0:y0 + 48, x0:x0 + 64].any():
            label[y0 + 8:y0 + 40, x0 + 10:x0 + 54] = 4
            inner = np.zeros_like(label, bool)
            inner[y0 + 16:y0 + 32, x0 + 18:x0 + 46] = True    # off the patch-grid edges
            return PALETTE[label], label, inner
    raise AssertionError("no empty quadrant")


@pytest.mark.parametrize("assignment", ["pooled", "patch_vote", "patch"])
def test_a_region_no_class_explains_becomes_unknown(assignment):
    from synthetic import ColourBackbone, dataset, gt_proposals
    from moduseg.bank.builder import build_bank
    from moduseg.config import BankConfig, RuntimeConfig
    from moduseg.runtime.index import bank_index
    from moduseg.runtime.pipeline import assign
    from moduseg.types import UNKNOWN

    bcfg = BankConfig(min_area=0, erosion_iterations=0, outlier_fraction=0.0,
                      granularity="class" if assignment == "pooled" else "patch",
                      patch_purity=0.9, purification="none")
    bank = build_bank(dataset(30, n_classes=4), ColourBackbone(n_classes=5), bcfg)
    image, label, inner = _scene_with_a_stranger()
    fmap = ColourBackbone(n_classes=5)(image)
    index = bank_index(bank, "flat")
    base = dict(min_area=0, min_objectness=0.0, top_k=3, assignment=assignment,
                unassigned="nearest")
    off = assign(fmap, gt_proposals(label), bank, index, RuntimeConfig(**base))
    on = assign(fmap, gt_proposals(label), bank, index, RuntimeConfig(**base, unknown=0.02))
    assert UNKNOWN not in off.label_map
    assert (on.label_map[inner] == UNKNOWN).all()
    import cv2
    for c in (1, 2, 3):                              # the known classes keep their labels
        # (patch: a cell straddling two classes is like neither; judged inside the regions)
        m = label == c if assignment != "patch" else cv2.erode(
            (label == c).astype(np.uint8), np.ones((17, 17), np.uint8)).astype(bool)
        assert (on.label_map[m] == c).mean() > 0.9
    if assignment != "patch":
        seg = [s for s in on.segments if s.label == UNKNOWN]
        assert seg and all(s.class_name == "unknown" for s in seg)
        assert all(s.class_name != "unknown" for s in off.segments)


def test_the_pooled_table_is_the_mixture_of_the_class_tables():
    """Known answer: class a uniform on [0, 1] (weight 1), class b uniform on [1, 2]
    (weight 3): the mixture's quantile at q is 4q for q <= 1/4, then 1 + (4q - 1) / 3."""
    a = cal.LEVELS.copy()
    b = 1.0 + cal.LEVELS
    got = cal.pooled_table(np.stack([a, b]), np.array([1, 3]))
    want = np.where(cal.LEVELS <= 0.25, 4 * cal.LEVELS, 1 + (4 * cal.LEVELS - 1) / 3)
    np.testing.assert_allclose(got, want, atol=0.011)
    # a class without a table (NaN) weighs nothing; no table at all -> NaN
    nan = np.full_like(a, np.nan)
    np.testing.assert_allclose(cal.pooled_table(np.stack([a, nan]), np.array([1, 5])), a,
                               atol=1e-9)
    assert np.isnan(cal.pooled_table(np.stack([nan]), np.array([1]))).all()


def test_the_rule_reads_one_pooled_table_so_a_loose_class_does_not_hide_strangers():
    """Class 'tight' (spread 0.05) and class 'loose' (spread 0.6): with per-class tables a
    query far from both but won by 'loose' would look typical of 'loose'; the pooled rule
    uses one threshold for both."""
    from moduseg.runtime.unknown import pooled_tables, unknown_rule
    from moduseg.types import BackboneIdentity, Bank

    rng = np.random.default_rng(0)
    D = 16
    tight = _cluster(rng, np.eye(D)[0], 300, 0.05, D)
    loose = _cluster(rng, np.eye(D)[1], 300, 0.6, D)
    v = np.concatenate([tight, loose]).astype(np.float32)
    labels = np.repeat([0, 1], 300)
    bank = Bank(vectors=v, labels=labels, class_names=["tight", "loose"],
                backbone=BackboneIdentity("t", "x", 14, D, "0" * 64),
                image_ids=np.array([f"i{i}" for i in range(len(v))]))
    t = pooled_tables(bank)
    np.testing.assert_array_equal(t[0], t[1])
    rule = unknown_rule(bank, 0.05)
    assert rule.thresholds[0] == rule.thresholds[1]
    per_class = cal.thresholds(cal.tables(bank.calibration, bank.class_names), 0.05)
    assert per_class[1] < rule.thresholds[1] < per_class[0]


# -- the segment-level rule (every assignment but 'patch') --------------------------------

def _cluster_bank(rng, D=16, n=800, spread=0.15, same_image=1):
    from moduseg.types import BackboneIdentity, Bank

    centres = np.eye(D)[:3]
    v = np.concatenate([_cluster(rng, c, n, spread, D) for c in centres])
    ids = np.array([f"i{i // same_image}" for i in range(len(v))])
    return Bank(vectors=v, labels=np.repeat([0, 1, 2], n), class_names=["a", "b", "c"],
                backbone=BackboneIdentity("t", "x", 14, D, "0" * 64), image_ids=ids), centres


def test_segment_rule_flags_q_of_fresh_known_samples_and_every_stranger():
    """Known answer: every bank vector is its own image, so leaving one image out is
    exactly a fresh sample of the same clusters; the q-quantile of those held-out
    scores flags about q of fresh known queries, and a cluster the bank never saw is
    flagged whole. The rule is class-agnostic (the same for any winning class)."""
    from moduseg.runtime.index import build_index
    from moduseg.runtime.unknown import segment_rule

    rng = np.random.default_rng(5)
    D = 16
    bank, centres = _cluster_bank(rng, D)
    index = build_index(bank.vectors, "flat")
    k, q = 5, 0.05
    rule = segment_rule(bank, q, k)
    assert segment_rule(bank, q, k) is rule                     # calibrated once per bank
    assert rule.index == 3

    def scored(x):
        sims, _ = index.search(x, k)
        return cal.density(sims)

    fresh = scored(np.concatenate([_cluster(rng, c, 2000, 0.15, D) for c in centres]))
    won = np.zeros(len(fresh), np.int32)
    flagged = rule.apply(won, fresh) == rule.index
    assert abs(flagged.mean() - q) < 0.015
    assert abs((rule.p_values(fresh) < q).mean() - q) < 0.015   # the p-value ranks alike
    stranger = scored(_cluster(rng, np.eye(D)[7], 500, 0.15, D))
    assert (rule.apply(np.full(500, 2, np.int32), stranger) == rule.index).all()
    # no evidence (-1: not labelled) is never unknown; q = 0 is off
    assert (rule.apply(np.full(500, -1, np.int32), stranger) == -1).all()
    assert segment_rule(bank, 0.0, k) is None


def test_segment_rule_leaves_the_query_image_out():
    """Vectors in pairs of near-copies from one image: leaving only the vector out would
    score every pair ~1 and put the threshold above every fresh sample."""
    from moduseg.runtime.unknown import segment_rule

    rng = np.random.default_rng(2)
    bank, _ = _cluster_bank(rng, n=400, same_image=2)
    bank.vectors[1::2] = bank.vectors[0::2] + 1e-4            # each image's two copies
    bank.vectors /= np.linalg.norm(bank.vectors, axis=1, keepdims=True)
    held = cal.held_out_density(bank.vectors, bank.image_ids, 1)
    assert held.max() < 0.999
    assert segment_rule(bank, 0.5, 1).threshold < 0.999


def test_segment_rule_refuses_a_bad_quantile_before_calibrating(monkeypatch):
    from moduseg.runtime.unknown import segment_rule

    bank, _ = _cluster_bank(np.random.default_rng(1), n=50)
    monkeypatch.setattr(cal, "held_out_density",
                        lambda *a, **k: pytest.fail("calibrated for a bad quantile"))
    with pytest.raises(InputError, match=r"runtime.unknown must be a quantile in \[0, 1\]"):
        segment_rule(bank, 1.5, 5)


def test_segment_scores_average_the_cells_wholly_inside_a_mask():
    from moduseg.runtime.pipeline import segment_scores
    from moduseg.types import GridGeometry

    geo = GridGeometry((8, 8), (8, 8), (2, 2), 4)            # four 4x4 cells
    cells = np.array([0.9, 0.5, 0.1, 0.3])
    masks = np.zeros((3, 8, 8), bool)
    masks[0, :, :4] = True                                    # cells 0 and 2 whole
    masks[0, 0, 4] = True                                     # a corner of cell 1: ignored
    masks[1, 1:3, 5:7] = True                                 # part of cell 1 only
    out = segment_scores(masks, np.array([0, 1, 2]), geo, cells)
    np.testing.assert_allclose(out[:2], [0.5, 0.5])
    assert out[2] == np.inf                                   # empty: never unknown
