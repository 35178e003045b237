"""Bank-statistics projection (bank.pca_dim / whiten) and the proposer-free patch mode."""

import dataclasses

import numpy as np
import pytest

from moduseg.bank.builder import build_bank, fit_projection, project
from moduseg.bank.store import load_bank, save_bank
from moduseg.config import BankConfig, ModuSegConfig, RuntimeConfig, preset
from moduseg.errors import InputError
from moduseg.evaluate import Evaluator
from moduseg.runtime.index import bank_index
from moduseg.runtime.pipeline import Segmenter, assign
from moduseg.smfa import l2_normalize

from synthetic import ColourBackbone, dataset, gt_proposals, scene


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


@pytest.mark.parametrize("whiten", [False, True])
def test_projected_bank_segments_synthetic_scenes_and_round_trips(tmp_path, whiten):
    cfg = BankConfig(erosion_iterations=3, min_area=50, outlier_fraction=0.0, pca_dim=4,
                     whiten=whiten)
    bank = build_bank(dataset(8), ColourBackbone(), cfg)
    assert bank.dim == 4 and bank.projection.shape == (5, 4)
    assert np.allclose(np.linalg.norm(bank.vectors.astype(np.float32), axis=1), 1, atol=1e-2)
    loaded = load_bank(save_bank(bank, tmp_path / "b.npz"))
    assert np.array_equal(loaded.projection, bank.projection)
    assert np.array_equal(loaded.projection_mean, bank.projection_mean)
    rt = RuntimeConfig(min_area=50, top_k=5, unassigned="background")
    ev = Evaluator(bank.class_names)
    for seed in range(100, 104):
        image, label = scene(seed)
        fmap = ColourBackbone()(image)
        index = bank_index(loaded)
        res = assign(fmap, gt_proposals(label), loaded, index, rt)
        ev.add(res.label_map, label)
        # a query in the backbone's space is compared in the bank's projected space
        f = l2_normalize(fmap.features.reshape(5, -1).T)
        sims, ids = index.search(f, 1)
        want = project(f, bank.projection, bank.projection_mean) @ \
            loaded.vectors.astype(np.float32).T
        assert np.allclose(sims[:, 0], want.max(1), atol=2e-3)
    assert ev.scores().miou > 95


class RaisingProposer:
    name = "never"

    def __call__(self, image):
        raise AssertionError("the patch mode must not run a proposer")


def test_patch_mode_labels_every_pixel_without_a_proposer():
    cfg = BankConfig(granularity="patch", purification="none", min_area=0,
                     outlier_fraction=0.0, patch_purity=0.75)
    bank = build_bank(dataset(8), ColourBackbone(), cfg)
    rt = RuntimeConfig(assignment="patch", top_k=5, refine_radius=4)
    seg = Segmenter(ColourBackbone(), RaisingProposer(), bank, rt)
    ev = Evaluator(bank.class_names)
    for seed in range(100, 104):
        image, label = scene(seed)
        res = seg(image)
        assert res.segments == [] and "proposer" not in res.timings_ms
        ev.add(res.label_map, label)
    # 8-px patches on 30x38 rectangles: edges are where the error is
    assert ev.scores().miou > 80


def test_fast_preset_needs_no_proposer_and_default_does():
    assert not preset("fast").needs_proposer
    assert preset("default").needs_proposer and preset("paper").needs_proposer


def test_max_per_class_caps_every_class_evenly():
    cfg = BankConfig(granularity="patch", purification="none", min_area=0,
                     outlier_fraction=0.0, patch_purity=0.75, patches_per_region=50)
    full = build_bank(dataset(8), ColourBackbone(), cfg)
    cfg = dataclasses.replace(cfg, max_per_class=20)
    capped = build_bank(dataset(8), ColourBackbone(), cfg)
    for name, n in full.class_counts().items():
        assert capped.class_counts()[name] == min(n, 20)
    # spread over the build order: the capped vectors come from several images
    assert len(set(capped.image_ids[capped.labels == 1])) > 3
    with pytest.raises(InputError, match="max_per_class"):
        BankConfig(max_per_class=-2)


class ShiftedBackbone(ColourBackbone):
    """The colour features plus one constant vector per frame (a global colour cast)."""

    shift = np.zeros(5, np.float32)

    def __call__(self, image):
        f = super().__call__(image)
        f.features += self.shift[:, None, None]
        return f


def test_center_image_cancels_a_per_frame_shift_on_both_sides():
    cfg = BankConfig(granularity="patch", purification="none", min_area=0,
                     outlier_fraction=0.0, patch_purity=0.75, center_image=True)
    bb = ShiftedBackbone()
    bank = build_bank(dataset(8), bb, cfg, config_record={"bank": cfg.__dict__.copy()})
    assert bank.centers_images
    rt = RuntimeConfig(assignment="patch", top_k=5, refine_radius=0)
    seg = Segmenter(bb, RaisingProposer(), bank, rt)
    image, _ = scene(101)
    plain = seg(image).label_map
    bb.shift = np.array([3.0, -1.0, 0.5, 2.0, 1.0], np.float32)
    assert np.array_equal(seg(image).label_map, plain)


def test_projected_banks_say_version_2_and_plain_banks_stay_1(tmp_path):
    import json
    for pca, want in ((0, 1), (4, 2)):
        cfg = BankConfig(erosion_iterations=3, min_area=50, outlier_fraction=0.0, pca_dim=pca)
        path = save_bank(build_bank(dataset(4), ColourBackbone(), cfg), tmp_path / f"b{pca}.npz")
        with np.load(path) as z:
            assert json.loads(str(z["meta"]))["version"] == want
