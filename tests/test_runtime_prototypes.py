"""Frame prototypes: the frame's own class means correct its retrieval labels."""

import numpy as np
import pytest

from moduseg.runtime.prototypes import frame_prototype_scores, score_distribution


def two_clusters(n=20, seed=0):
    """Unit features around two directions; patch 0 of cluster A retrieved as B (weakly)."""
    rng = np.random.default_rng(seed)
    a, b = np.eye(8)[0], np.eye(8)[1]
    f = np.concatenate([a + 0.1 * rng.standard_normal((n, 8)),
                        b + 0.1 * rng.standard_normal((n, 8))]).astype(np.float32)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    scores = np.full((2 * n, 3), -np.inf)
    scores[:n, 0], scores[n:, 1] = 2.0, 2.0
    scores[0] = [0.9, 1.1, -np.inf]            # the retrieval's mistake: B by a little
    return f, scores


def test_weight_zero_returns_the_scores_unchanged():
    f, scores = two_clusters()
    assert frame_prototype_scores(scores, f, 0.0, 0.05) is scores


def test_a_weakly_mislabelled_patch_joins_its_own_cluster():
    f, scores = two_clusters()
    assert scores.argmax(1)[0] == 1
    out = frame_prototype_scores(scores, f, 0.3, 0.05)
    assert out.argmax(1)[0] == 0
    assert (out.argmax(1)[1:20] == 0).all() and (out.argmax(1)[20:] == 1).all()


def test_a_confident_label_is_not_overturned_by_a_small_weight():
    f, scores = two_clusters()
    scores[0] = [-np.inf, 3.0, -np.inf]        # every neighbour says B
    assert frame_prototype_scores(scores, f, 0.2, 0.05).argmax(1)[0] == 1


def test_rows_are_distributions_and_absent_classes_get_nothing_extra():
    f, scores = two_clusters()
    out = frame_prototype_scores(scores, f, 0.4, 0.1)
    assert np.allclose(out.sum(1), 1.0)
    assert (out[:, 2] == 0).all()              # no patch won class 2: no prototype


def test_patches_without_neighbours_stay_unlabelled():
    f, scores = two_clusters()
    scores[5] = -np.inf
    out = frame_prototype_scores(scores, f, 0.3, 0.05)
    assert np.isneginf(out[5]).all() and np.isfinite(out[6]).all()


def test_score_distribution_clips_negatives_and_keeps_empty_rows_empty():
    d = score_distribution(np.array([[2.0, -1.0, -np.inf], [-np.inf] * 3]))
    assert d.tolist() == [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]


@pytest.mark.parametrize("t", [0.01, 0.05, 1.0])
def test_no_classes_found_or_empty_frame_pass_through(t):
    empty = np.zeros((0, 3))
    assert frame_prototype_scores(empty, np.zeros((0, 8), np.float32), 0.3, t) is empty
    none = np.full((4, 3), -np.inf)
    assert np.isneginf(frame_prototype_scores(none, np.ones((4, 8), np.float32), 0.3, t)).all()


def test_label_patches_applies_frame_prototypes_to_a_whole_frame_only():
    """Cell 0 is nearer a class-1 bank vector, but it belongs with the frame's class-0 cells."""
    from moduseg.bank.store import Bank
    from moduseg.config import RuntimeConfig
    from moduseg.runtime.index import build_index
    from moduseg.runtime.pipeline import label_patches
    from moduseg.types import BackboneIdentity, FeatureMap, GridGeometry

    e = np.eye(8, dtype=np.float32)
    odd = e[0] + 0.9 * e[2]
    cells = np.stack([odd / np.linalg.norm(odd)] + [e[0]] * 5 + [e[1]] * 4)   # [10, 8]
    v1 = 0.6 * e[0] + 0.8 * e[2]
    vectors = np.stack([e[0], v1 / np.linalg.norm(v1), e[1]])
    ident = BackboneIdentity("t", "native", 14, 8, "0" * 64)
    bank = Bank(vectors=vectors, labels=np.array([0, 1, 1], np.int32), class_names=["a", "b"],
                backbone=ident, image_ids=np.array(["x"] * 3))
    geo = GridGeometry(image_hw=(14, 140), resized_hw=(14, 140), grid_hw=(1, 10), patch=14)
    fmap = FeatureMap(np.ascontiguousarray(cells.T.reshape(8, 1, 10)), geo)
    index = build_index(bank.vectors, "flat")
    all_cells = np.arange(10)
    off = RuntimeConfig(top_k=2, voting="weighted")
    on = RuntimeConfig(top_k=2, voting="weighted", frame_prototypes=0.2)
    assert label_patches(fmap, all_cells, bank, index, off)[0] == 1
    got = label_patches(fmap, all_cells, bank, index, on, whole_frame=True)
    assert got.tolist() == [0] * 6 + [1] * 4
    # a subset of cells (the nearest fill of a few pixels) is not a frame: no prototypes
    assert label_patches(fmap, all_cells, bank, index, on)[0] == 1
