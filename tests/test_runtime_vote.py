import numpy as np

from moduseg.runtime.vote import vote


def test_majority_count_wins():
    sims = np.array([[0.9, 0.5, 0.5, 0.5]], np.float32)
    labs = np.array([[0, 1, 1, 1]])
    winner, conf = vote(sims, labs, 2)
    assert winner[0] == 1 and conf[0] == np.float32(0.5)


def test_tie_broken_by_summed_similarity():
    # two votes each for classes 0 and 2; the larger summed similarity wins
    sims2 = np.array([[0.9, 0.8, 0.6, 0.65]], np.float32)
    winner2, conf2 = vote(sims2, np.array([[2, 0, 0, 2]]), 3)   # class 2: 1.55 > 1.4
    assert winner2[0] == 2 and np.isclose(conf2[0], 0.775)
    sims3 = np.array([[0.5, 0.8, 0.7, 0.1]], np.float32)
    winner3, _ = vote(sims3, np.array([[2, 0, 0, 2]]), 3)       # class 0: 1.5 > 0.6
    assert winner3[0] == 0


def test_confidence_is_mean_similarity_of_winning_neighbours():
    sims = np.array([[0.9, 0.7, 0.2]], np.float32)
    winner, conf = vote(sims, np.array([[1, 1, 0]]), 2)
    assert winner[0] == 1 and np.isclose(conf[0], 0.8)


def test_missing_neighbours_are_ignored_and_empty_rows_get_minus_one():
    sims = np.array([[0.9, -1.0], [0.0, 0.0]], np.float32)
    labs = np.array([[1, -1], [-1, -1]])
    winner, conf = vote(sims, labs, 2)
    assert winner.tolist() == [1, -1] and conf[1] == 0


def test_weighted_voting_lifts_rare_classes():
    sims = np.array([[0.6, 0.6, 0.6, 0.7, 0.7]], np.float32)
    labs = np.array([[0, 0, 0, 1, 1]])
    assert vote(sims, labs, 2)[0][0] == 0
    prior = np.array([0.9, 0.1])
    assert vote(sims, labs, 2, "weighted", prior)[0][0] == 1


def test_vote_balance_tempers_the_class_prior():
    # sums: class 0 = 1.8, class 1 = 1.4; prior 0.8 / 0.2
    sims = np.array([[0.6, 0.6, 0.6, 0.7, 0.7]], np.float32)
    labs = np.array([[0, 0, 0, 1, 1]])
    prior = np.array([0.8, 0.2])
    assert vote(sims, labs, 2, "weighted", prior, balance=0.0)[0][0] == 0    # 1.8 > 1.4
    assert vote(sims, labs, 2, "weighted", prior, balance=1.0)[0][0] == 1    # 2.25 < 7.0
    # balance 0.1: 1.8 / 0.8**0.1 = 1.84 > 1.4 / 0.2**0.1 = 1.64
    assert vote(sims, labs, 2, "weighted", prior, balance=0.1)[0][0] == 0
    assert vote(sims, labs, 2, "weighted", prior, balance=0.5)[0][0] == 1    # 2.01 < 3.13


def test_many_queries_vectorised():
    rng = np.random.default_rng(0)
    labs = rng.integers(0, 5, (200, 25))
    sims = rng.random((200, 25)).astype(np.float32)
    winner, conf = vote(sims, labs, 5)
    for q in range(0, 200, 37):
        counts = np.bincount(labs[q], minlength=5)
        sums = np.bincount(labs[q], weights=sims[q], minlength=5)
        best = np.flatnonzero(counts == counts.max())
        assert winner[q] == best[np.argmax(sums[best])]


def test_class_scores_argmax_is_the_vote():
    from moduseg.runtime.vote import class_scores
    rng = np.random.default_rng(1)
    labs = np.where(rng.random((300, 10)) < 0.05, -1, rng.integers(0, 4, (300, 10)))
    sims = rng.random((300, 10)).astype(np.float32)
    prior = np.array([0.5, 0.2, 0.2, 0.1])
    for mode in ("count", "weighted"):
        score, counts, _ = class_scores(sims, labs, 4, mode, prior, 0.5)
        winner, _ = vote(sims, labs, 4, mode, prior, 0.5)
        assert (score.argmax(1) == winner).all()
        assert np.isneginf(score[counts == 0]).all()
