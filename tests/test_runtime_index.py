import numpy as np
import pytest

from moduseg.errors import InputError
from moduseg.runtime.index import build_index, choose_kind, ivf_params
from moduseg.smfa import l2_normalize
from moduseg.bank.builder import fit_projection, project  # noqa: E402
from moduseg.config import BankConfig, ModuSegConfig  # noqa: E402


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


def test_projection_keeps_a_low_rank_subspace_exactly():
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(8, 3)))[0]          # a 3-d subspace of R^8
    x = rng.normal(size=(200, 3)) @ basis.T + 5.0             # offset: centring matters
    P, mean = fit_projection(x, 3)
    assert np.allclose(mean, x.mean(0), atol=1e-5)
    assert np.allclose(P.T @ P, np.eye(3), atol=1e-5)         # orthonormal axes
    y = (x - mean) @ P
    d_in = np.linalg.norm((x - mean)[:, None] - (x - mean)[None], axis=-1)
    d_out = np.linalg.norm(y[:, None] - y[None], axis=-1)
    assert np.allclose(d_in, d_out, atol=1e-3)                # nothing of the subspace lost
    # same axes and signs whatever the row order (a rebuild gives the same bytes)
    P2, _ = fit_projection(x[rng.permutation(len(x))], 3)
    assert np.allclose(P, P2, atol=1e-5)
    Pw, _ = fit_projection(x, 3, whiten=True)
    assert np.allclose(((x - mean) @ Pw).std(0, ddof=1), 1.0, atol=1e-3)


def test_bad_pca_dims_are_refused():
    with pytest.raises(InputError, match="pca_dim"):
        BankConfig(pca_dim=-1)
    with pytest.raises(InputError, match="pca_dim"):
        fit_projection(np.ones((10, 4), np.float32), 4)
    with pytest.raises(InputError, match="pca_dim"):
        ModuSegConfig().with_overrides(**{"bank.pca_dim": 1.5})


def test_a_bank_smaller_than_pca_dim_keeps_the_axes_it_has():
    """A one-image bank with the default preset (pca_dim 128) still builds: n - 1 axes."""
    rng = np.random.default_rng(0)
    v = l2_normalize(rng.normal(size=(20, 32)).astype(np.float32))
    P, mean = fit_projection(v, 16, whiten=True)
    assert P.shape == (32, 16) and mean.shape == (32,)
    P, mean = fit_projection(v[:9], 16, whiten=True)
    assert P.shape == (32, 8)                     # 9 vectors span at most 8 centred axes
    y = project(v[:9], P, mean)
    assert np.allclose(np.linalg.norm(y, axis=1), 1.0, atol=1e-5)
    with pytest.raises(InputError, match="at least 3"):
        fit_projection(v[:2], 16)
