"""EntitySeg post-processing: hand-built query outputs with known answers, and the
numpy runtime (``moduseg.runtime.proposers.entityseg``) against the torch reference."""

import numpy as np
import pytest

from moduseg.errors import InputError
from moduseg.runtime.proposers.entityseg import (MAX_MASK_CONF, entity_postprocess,
                                                 preprocess, resized_size)


def _ss(x):
    s = 1 / (1 + np.exp(-x))
    return 1 / (1 + np.exp(-s))


def _hand_built():
    """Three queries on a 4x6 image: p = 0.9, 0.8, 0.3."""
    p = np.array([0.9, 0.8, 0.3])
    cls = np.stack([np.log(p), np.log(1 - p)], 1).astype(np.float32)
    masks = np.full((3, 4, 6), -3.0, np.float32)
    masks[0, :, :3] = 2.0          # left half
    masks[1] = 1.0                 # everything
    masks[2, 0, 0] = 5.0           # one pixel, already taken by query 0
    return cls, masks


def test_known_answer_non_overlapping_entities():
    cls, masks = _hand_built()
    m, s, q = entity_postprocess(cls, masks, (4, 6), (4, 6), (4, 6))
    assert q.tolist() == [0, 1]                       # query 2 ends up empty: left out
    left = np.zeros((4, 6), bool)
    left[:, :3] = True
    np.testing.assert_array_equal(m[0], left)
    np.testing.assert_array_equal(m[1], ~left)
    np.testing.assert_allclose(s, [0.9 * _ss(2.0), 0.8 * _ss(1.0)], rtol=1e-5)
    assert not (m[0] & m[1]).any()
    assert ((0 <= s) & (s <= 1)).all()


def test_top_k_keeps_the_most_probable_queries():
    cls, masks = _hand_built()
    m, s, q = entity_postprocess(cls, masks, (4, 6), (4, 6), (4, 6), top_k=1)
    assert q.tolist() == [0] and m[0].sum() == 12


def test_reference_scoring_bounds_tau():
    """score < 0.7311 * p: with tau_obj = 0.6 a query needs p > 0.82."""
    cls = np.array([[np.log(0.8), np.log(0.2)]], np.float32)
    masks = np.full((1, 2, 2), 50.0, np.float32)
    _, s, _ = entity_postprocess(cls, masks, (2, 2), (2, 2), (2, 2))
    assert s[0] == pytest.approx(0.8 * MAX_MASK_CONF, rel=1e-5) and s[0] < 0.6


def _random_outputs(seed, Q=12, h=16, w=24):
    rng = np.random.default_rng(seed)
    cls = rng.normal(size=(Q, 2)).astype(np.float32) * 2
    yy, xx = np.mgrid[0:h, 0:w]
    masks = np.empty((Q, h, w), np.float32)
    for i in range(Q):   # smooth blobs so thresholds are not decided by resize rounding
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(3, 10)
        masks[i] = 4 * (1 - np.hypot(yy - cy, xx - cx) / r)
    return cls, masks


def test_min_score_prefilter_is_exact():
    cls, masks = _random_outputs(3)
    full = entity_postprocess(cls, masks, (64, 96), (50, 80), (50, 80))
    tau = 0.35
    part = entity_postprocess(cls, masks, (64, 96), (50, 80), (50, 80), min_score=tau)
    keep = np.isin(full[2], part[2])
    np.testing.assert_array_equal(full[0][keep], part[0])
    np.testing.assert_array_equal(full[1][keep], part[1])
    assert (full[1][~keep] < tau).all()


def test_chunk_size_does_not_change_the_result():
    cls, masks = _random_outputs(4)
    ref = entity_postprocess(cls, masks, (64, 96), (64, 90), (40, 57), chunk=100)
    for chunk in (1, 5):
        got = entity_postprocess(cls, masks, (64, 96), (64, 90), (40, 57), chunk=chunk)
        for a, b in zip(ref, got):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("image_hw", [(37, 61), (120, 190)])
def test_numpy_runtime_matches_torch_reference(image_hw):
    torch = pytest.importorskip("torch")
    from moduseg.export.entityseg.postprocess import entity_inference, upsample_masks

    cls, masks = _random_outputs(image_hw[0])
    rhw = (50, 80)
    up = upsample_masks(torch.from_numpy(masks), (64, 96), rhw, image_hw)
    tm, ts, tq = (t.numpy() for t in entity_inference(torch.from_numpy(cls), up, top_k=100))
    nm, ns, nq = entity_postprocess(cls, masks, (64, 96), rhw, image_hw)
    nonempty = tm.reshape(len(tm), -1).any(1)
    assert (ts[~nonempty] == 0).all()                 # empty entities score 0 in EntitySeg
    assert nq.tolist() == tq[nonempty].tolist()       # same entities, same order
    agree = np.mean([(a == b).mean() for a, b in zip(nm, tm[nonempty])])
    assert agree > 0.998                              # OpenCV vs torch resize rounding
    np.testing.assert_allclose(ns, ts[nonempty], atol=2e-3)


def test_bad_outputs_are_refused():
    with pytest.raises(InputError, match=r"\[Q, K\+1\]"):
        entity_postprocess(np.zeros((3, 2)), np.zeros((4, 5, 5)), (5, 5), (5, 5), (5, 5))


def test_resize_rule_is_detectron2s_then_fits_the_input():
    assert resized_size((480, 640), (800, 1344), 800, 1333) == (800, 1067)
    assert resized_size((1080, 1920), (800, 1344), 800, 1333) == (750, 1333)
    assert resized_size((640, 480), (800, 1344), 800, 1333) == (800, 600)   # portrait: fit
    assert resized_size((50, 80), (64, 96), 64, 96) == (60, 96)           # long-side cap


def test_preprocess_pads_with_the_mean():
    img = np.full((10, 20, 3), 7, np.uint8)
    x = preprocess(img, (32, 32), (10, 20), (1.0, 2.0, 3.0))
    assert x.shape == (1, 3, 32, 32) and x.dtype == np.float32
    assert (x[0, :, :10, :20] == 7).all()
    assert (x[0, 2, 10:] == 3.0).all() and (x[0, 0, :, 20:] == 1.0).all()


def test_query_without_positive_logits_is_skipped_and_blocks_nothing():
    cls, masks = _hand_built()
    cls = np.concatenate([[[np.log(0.95), np.log(0.05)]], cls]).astype(np.float32)
    masks = np.concatenate([np.full((1, 4, 6), -0.5, np.float32), masks])
    m, s, q = entity_postprocess(cls, masks, (8, 12), (8, 12), (8, 12))
    assert q.tolist() == [1, 2] and m.sum() == 96
    torch = pytest.importorskip("torch")
    from moduseg.export.entityseg.postprocess import entity_inference, upsample_masks
    up = upsample_masks(torch.from_numpy(masks), (8, 12), (8, 12), (8, 12))
    tm, ts, tq = entity_inference(torch.from_numpy(cls), up)
    assert tq[0] == 0 and not tm[0].any() and ts[0] == 0      # EntitySeg: empty, score 0
    np.testing.assert_allclose(ts[1:3].numpy(), s, rtol=1e-5)


def test_runtime_proposer_does_not_import_torch():
    import subprocess
    import sys
    code = ("import sys, moduseg.runtime.proposers.entityseg as m; "
            "assert 'torch' not in sys.modules, 'torch imported'; print(m.EntitySegProposer.name)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "entityseg", out.stderr
