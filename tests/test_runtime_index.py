import numpy as np
import pytest

from moduseg.errors import InputError
from moduseg.runtime.index import build_index, choose_kind, ivf_params
from moduseg.smfa import l2_normalize


def clustered(n, d, k=20, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d))
    x = centres[rng.integers(0, k, n)] + 0.3 * rng.normal(size=(n, d))
    return l2_normalize(x.astype(np.float32))


def recall(a, b):
    return np.mean([len(set(x) & set(y)) / len(x) for x, y in zip(a, b)])


def test_auto_choice_by_size():
    assert choose_kind(1_000) == "flat"
    assert choose_kind(100_000) == "flat_fp16"
    assert choose_kind(1_000_000) == "ivf"
    assert choose_kind(10, "ivf") == "ivf"
    assert ivf_params(10_000) == (100, 32) and ivf_params(4_000_000) == (1024, 32)
    assert ivf_params(100) == (10, 10)


@pytest.mark.slow
def test_fp16_and_ivf_agree_with_exact_search():
    x, q = clustered(20_000, 64), clustered(100, 64, seed=1)
    exact = build_index(x, "flat")
    s0, i0 = exact.search(q, 25)
    # brute force check of the exact index
    ref = np.argsort(-(q @ x.T), axis=1)[:, :25]
    assert recall(i0, ref) > 0.99
    for kind, floor in (("flat_fp16", 0.98), ("ivf", 0.9)):
        s, i = build_index(x, kind).search(q, 25)
        assert recall(i, i0) >= floor, kind
        np.testing.assert_allclose(s[:, 0], s0[:, 0], atol=2e-3)


def test_k_is_capped_at_bank_size_and_validated():
    idx = build_index(clustered(10, 8), "flat")
    s, i = idx.search(clustered(3, 8), 25)
    assert s.shape == (3, 10)
    with pytest.raises(InputError):
        idx.search(clustered(3, 8), 0)
    with pytest.raises(InputError, match="feature dim"):
        idx.search(clustered(3, 9), 5)


def test_bad_bank_vectors_are_rejected():
    with pytest.raises(InputError):
        build_index(np.zeros((0, 8), np.float32))
    x = clustered(10, 8)
    x[0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        build_index(x)
