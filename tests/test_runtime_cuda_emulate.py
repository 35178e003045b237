"""The CUDA kernels, built from the same .cu source by g++, against numpy references.

``emulator_host.cu`` runs every CUDA thread as a fiber with real barriers and
shuffled thread/block order, so these tests check the kernels' indexing,
arithmetic, barriers and launch plans (``cuda/plans.py``) without a GPU.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from moduseg.errors import InputError
from moduseg.runtime.cuda.emulate import Emulator, build_emulator
from moduseg.runtime.cuda.plans import defines, smfa_plan, topk_plan
from moduseg.smfa import smfa, soft_weights
from moduseg.types import FeatureMap, GridGeometry

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++ to build the emulator")


@pytest.fixture(scope="session")
def emu(tmp_path_factory):
    lib = build_emulator(tmp_path_factory.getbasetemp() / "cuda-emu")   # shared with test_gpu_path
    return Emulator(lib, seed=1234)


GEOMETRIES = {
    # integer scale, no padding: cv2 INTER_AREA territory
    "integer": ((64, 48), GridGeometry.unpadded((64, 48), (4, 3), 16)),
    # non-integer scale and bottom/right padding
    "fractional_padded": ((37, 53), GridGeometry((50, 70), (45, 61), (5, 7), 10)),
    # masks finer than the resized image (SAM-like full resolution masks)
    "fine_masks": ((100, 130), GridGeometry((100, 130), (45, 61), (5, 7), 10)),
    # masks coarser than the grid: one mask pixel spans several cells
    "coarse_masks": ((9, 11), GridGeometry((90, 110), (50, 66), (8, 10), 7)),
}


def _case(rng, mask_hw, geo, P, D):
    masks = rng.random((P, *mask_hw)) < rng.uniform(0.1, 0.7, size=(P, 1, 1))
    if P > 3:
        masks[3] = False                       # an empty mask
    feats = rng.standard_normal((D, *geo.grid_hw)).astype(np.float32)
    return masks, feats


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_smfa_kernel_matches_numpy(emu, name, dtype):
    rng = np.random.default_rng(len(name))
    mask_hw, geo = GEOMETRIES[name]
    # P > PT and D > DT: several mask tiles and feature tiles, so the
    # last-block normalisation and the tile edges are exercised.
    P, D = defines("smfa")["PT"] + 5, defines("smfa")["DT"] + 6
    masks, feats = _case(rng, mask_hw, geo, P, D)
    f = feats.astype(dtype)
    before = emu.barriers()
    vec, wsum, area = emu.smfa(masks, f, geo)
    assert emu.barriers() > before                        # barriers really ran
    ref_vec, ref_wsum = smfa(masks, FeatureMap(f.astype(np.float32), geo))
    np.testing.assert_allclose(emu.last_weights, soft_weights(masks, geo), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(wsum, ref_wsum, rtol=1e-5, atol=1e-5)
    # Rows with zero weight are compared by the zero check below: numpy's batched
    # matmul can leave ~1e-14 noise in an empty mask's weights, which the CPU
    # path then normalises into a meaningless unit vector (wsum is still 0).
    live = ref_wsum > 1e-6
    np.testing.assert_allclose(vec[live], ref_vec[live], rtol=1e-5, atol=2e-6)
    np.testing.assert_array_equal(area, masks.sum((1, 2)))             # exact pixel counts
    assert np.all(vec[3] == 0) and wsum[3] == 0 and area[3] == 0      # empty mask
    norms = np.linalg.norm(vec, axis=1)
    np.testing.assert_allclose(norms[wsum > 0], 1.0, rtol=1e-5)


def test_token_major_features_need_no_transpose(emu):
    rng = np.random.default_rng(7)
    mask_hw, geo = GEOMETRIES["fractional_padded"]
    masks, feats = _case(rng, mask_hw, geo, 6, 40)
    hwd = np.ascontiguousarray(feats.transpose(1, 2, 0)).astype(np.float16)
    vec, wsum, _ = emu.smfa(masks, hwd, geo, layout="hwd")
    ref, ref_w = smfa(masks, FeatureMap(feats.astype(np.float16).astype(np.float32), geo))
    live = ref_w > 1e-6
    np.testing.assert_allclose(vec[live], ref[live], rtol=1e-5, atol=2e-6)
    assert np.all(vec[~live] == 0)
    np.testing.assert_allclose(wsum, ref_w, rtol=1e-5, atol=1e-5)


def test_integer_scale_equals_opencv_inter_area(emu):
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(3)
    geo = GridGeometry.unpadded((96, 64), (6, 4), 16)
    masks = rng.random((3, 96, 64)) < 0.4
    emu.smfa(masks, rng.standard_normal((8, 6, 4)).astype(np.float32), geo)
    for m, w in zip(masks, emu.last_weights):
        ref = cv2.resize(m.astype(np.float32), (4, 6), interpolation=cv2.INTER_AREA)
        np.testing.assert_allclose(w, ref, atol=1e-6)


def test_no_masks(emu):
    mask_hw, geo = GEOMETRIES["integer"]
    vec, wsum, area = emu.smfa(np.zeros((0, *mask_hw), bool),
                               np.ones((5, *geo.grid_hw), np.float32), geo)
    assert vec.shape == (0, 5) and wsum.shape == (0,) and area.shape == (0,)


def test_full_mask_pools_the_covered_cells(emu):
    # A full mask on a padded grid: weights are 1 inside the content, the
    # fractional border in between, 0 on the padding; the vector is their mean.
    geo = GridGeometry((40, 40), (30, 25), (4, 3), 10)
    masks = np.ones((1, 40, 40), bool)
    feats = np.arange(2 * 12, dtype=np.float32).reshape(2, 4, 3) + 1
    vec, wsum, area = emu.smfa(masks, feats, geo)
    expect_w = np.outer([1, 1, 1, 0], [1, 1, 0.5])
    np.testing.assert_allclose(emu.last_weights[0], expect_w, atol=1e-7)
    assert wsum[0] == pytest.approx(expect_w.sum()) and area[0] == 1600
    v = (feats.reshape(2, -1) * expect_w.ravel()).sum(1)
    np.testing.assert_allclose(vec[0], v / np.linalg.norm(v), rtol=1e-6)


def test_launch_plans_cover_the_problem():
    p = smfa_plan(200, 1152, 1024)
    assert p.weights_grid == (200, 1) and p.pool_grid == (18, 7) and p.tiles == 7
    t = topk_plan(200, 100_000, 25)
    assert t.nseg <= 64 and t.nseg * t.rows_per_seg >= 100_000
    assert t.rows_per_seg % defines("topk")["TB"] == 0
    assert (t.nseg - 1) * t.rows_per_seg < 100_000                  # no empty segment
    with pytest.raises(InputError, match="k <= 32"):
        topk_plan(10, 100, 33)


def _exact(q, bank, k):
    s = q @ bank.T
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, 1), order


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("k,n,segments", [(1, 50, 64), (25, 1000, 3), (32, 700, 64)])
def test_topk_kernel_matches_exact_search(emu, dtype, k, n, segments):
    rng = np.random.default_rng(k * n)
    D, Q = 72, defines("topk")["TQ"] * 2 + 3                      # several query tiles
    bank = rng.standard_normal((n, D)).astype(np.float32)
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    q = rng.standard_normal((Q, D)).astype(np.float32)
    stored = bank.astype(dtype)
    sims, ids = emu.topk(q, stored, k, max_segments=segments)
    ref_s, ref_i = _exact(q, stored.astype(np.float32), k)
    np.testing.assert_array_equal(ids, ref_i)
    np.testing.assert_allclose(sims, ref_s, rtol=1e-5, atol=1e-5)


def test_topk_ties_prefer_the_lower_index_and_missing_entries_are_minus_one(emu):
    bank = np.tile(np.eye(4, dtype=np.float32), (3, 1))        # rows i, i+4, i+8 identical
    q = np.eye(4, dtype=np.float32)[[2, 0]]
    sims, ids = emu.topk(q, bank, 3, max_segments=2)
    np.testing.assert_array_equal(ids, [[2, 6, 10], [0, 4, 8]])
    np.testing.assert_array_equal(sims, 1.0)
    sims, ids = emu.topk(q, bank[:2], 3)                        # k > bank size
    assert ids[0, 2] == -1 and ids[1, 0] == 0


def test_topk_with_no_queries(emu):
    s, i = emu.topk(np.zeros((0, 8), np.float32), np.ones((5, 8), np.float32), 4)
    assert s.shape == (0, 4) and i.shape == (0, 4)


@pytest.mark.slow
def test_emulator_catches_a_missing_barrier(tmp_path):
    # The same kernel with the barrier between staging a tile and using it
    # removed must give wrong numbers: the emulator does not pass by luck.
    from moduseg.runtime.cuda.nvrtc import KERNEL_DIR

    for name in ("emulator_host.cu", "smfa.cu", "topk.cu"):
        shutil.copy(KERNEL_DIR / name, tmp_path / name)
    src = (tmp_path / "smfa.cu").read_text()
    staged = "        __syncthreads();\n        for (int kk = 0; kk < NK; ++kk) {"
    assert src.count(staged) == 1
    (tmp_path / "smfa.cu").write_text(src.replace(staged, "        for (int kk = 0; kk < NK; ++kk) {"))
    broken = Emulator(build_emulator(tmp_path / "build", source_dir=tmp_path), seed=5)
    rng = np.random.default_rng(11)
    mask_hw, geo = GEOMETRIES["fractional_padded"]
    masks, feats = _case(rng, mask_hw, geo, 9, 20)
    vec, _, _ = broken.smfa(masks, feats, geo)
    ref, _ = smfa(masks, FeatureMap(feats, geo))
    assert not np.allclose(vec, ref, atol=1e-3)
