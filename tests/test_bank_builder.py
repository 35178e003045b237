import numpy as np
import pytest

from moduseg.bank.builder import build_bank, region_masks, reject_outliers, select_shots
from moduseg.bank.datasets import Dataset, Sample
from moduseg.bank.store import load_bank, save_bank
from moduseg.config import BankConfig
from moduseg.errors import BankError, InputError
from moduseg.types import BackboneIdentity

from synthetic import ColourBackbone, dataset, scene
import dataclasses  # noqa: E402
from moduseg.bank.builder import project  # noqa: E402
from moduseg.config import RuntimeConfig  # noqa: E402
from moduseg.evaluate import Evaluator  # noqa: E402
from moduseg.runtime.index import bank_index  # noqa: E402
from moduseg.runtime.pipeline import Segmenter, assign  # noqa: E402
from moduseg.smfa import l2_normalize  # noqa: E402
from synthetic import gt_proposals  # noqa: E402
from synthetic import RaisingProposer  # noqa: E402

CFG = BankConfig(erosion_iterations=3, min_area=50, outlier_fraction=0.0)


def test_one_vector_per_image_and_class_with_correct_labels():
    ds = dataset(4)
    bank = build_bank(ds, ColourBackbone(), CFG)
    assert bank.stats["images"] == 4
    for v, l in zip(bank.vectors.astype(np.float32), bank.labels):
        assert np.argmax(v) == l          # separable features: the vector points at its class
    per_image = {i: sorted(bank.labels[bank.image_ids == i].tolist()) for i in set(bank.image_ids)}
    for i, s in enumerate(ds):
        assert per_image[f"img{i}"] == sorted(np.unique(s.label()).tolist())


def test_small_regions_are_skipped_and_counted():
    label = np.zeros((64, 64), np.uint8)
    label[5:12, 5:12] = 1                  # 49 px, gone after 3 erosions
    masks, labels, skipped = region_masks(label, 2, CFG)
    assert labels.tolist() == [0] and skipped == 1


def test_component_granularity_splits_instances():
    label = np.zeros((64, 64), np.uint8)
    label[2:30, 2:30] = 1
    label[34:62, 34:62] = 1
    cfg = BankConfig(erosion_iterations=2, min_area=50, granularity="component",
                     component_min_area=50)
    _, labels, _ = region_masks(label, 2, cfg)
    assert sorted(labels.tolist()) == [0, 1, 1]


def test_outlier_rejection_drops_the_farthest_quarter_per_foreground_class():
    rng = np.random.default_rng(0)
    v = np.vstack([np.zeros((8, 4)), np.full((4, 4), 5.0)])
    v[:8] += 0.01 * rng.normal(size=(8, 4))
    v[3] = [3, 3, 3, 3]; v[6] = [2, 2, 2, 2]         # two far members of class 1
    labels = np.array([1] * 8 + [0] * 4)
    keep = reject_outliers(v, labels, 0.25, background_index=0)
    assert not keep[3] and not keep[6] and keep[[0, 1, 2, 4, 5, 7]].all()
    assert keep[8:].all()                            # background kept whole
    assert reject_outliers(v, labels, 0.0, 0).all()


def test_shots_limit_images_per_class():
    ds = dataset(6)
    chosen = select_shots(ds, 2)
    assert 2 <= len(chosen) <= 6
    counts = {}
    for s in chosen:
        for c in np.unique(s.label()):
            counts[c] = counts.get(c, 0) + 1
    assert all(v >= 2 for k, v in counts.items() if k != 0)


def test_save_load_round_trip_and_identity_check(tmp_path):
    bank = build_bank(dataset(3), ColourBackbone(), CFG, config_record={"bank": {"x": 1}})
    path = save_bank(bank, tmp_path / "b.npz")
    back = load_bank(path, expect=ColourBackbone().identity)
    np.testing.assert_array_equal(back.vectors, bank.vectors)
    np.testing.assert_array_equal(back.labels, bank.labels)
    assert back.class_names == bank.class_names and back.background_index == 0
    assert list(back.image_ids) == list(bank.image_ids) and back.config == {"bank": {"x": 1}}
    assert back.vectors.dtype == np.float16
    other = BackboneIdentity("colour-test", "native", 8, 5, "f" * 64)
    with pytest.raises(BankError, match="weights_sha256"):
        load_bank(path, expect=other)


def test_truncated_or_missing_bank_files_give_clear_errors(tmp_path):
    bank = build_bank(dataset(2), ColourBackbone(), CFG)
    path = save_bank(bank, tmp_path / "b.npz")
    data = path.read_bytes()
    (tmp_path / "t.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(BankError, match="unreadable or truncated"):
        load_bank(tmp_path / "t.npz")
    with pytest.raises(BankError, match="does not exist"):
        load_bank(tmp_path / "nope.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(BankError):
        load_bank(tmp_path / "junk.npz")


def test_failed_save_leaves_no_file(tmp_path, monkeypatch):
    bank = build_bank(dataset(2), ColourBackbone(), CFG)
    def boom(*a, **k):
        raise RuntimeError("disk full")
    monkeypatch.setattr(np.lib.format, "write_array", boom)   # fails mid-write
    with pytest.raises(RuntimeError):
        save_bank(bank, tmp_path / "b.npz")
    assert list(tmp_path.iterdir()) == []


def _one(label, image=None):
    img = image if image is not None else np.zeros(label.shape + (3,), np.uint8)
    s = Sample("x", None, lambda: label)
    s.image = lambda: img
    return Dataset("bad", ["background", "a"], 0, [s])


def test_bad_datasets_are_refused_with_clear_messages():
    with pytest.raises(InputError, match="size"):
        build_bank(_one(np.zeros((10, 10), np.uint8), np.zeros((12, 10, 3), np.uint8)),
                   ColourBackbone(), CFG)
    with pytest.raises(InputError, match="outside"):
        build_bank(_one(np.full((10, 10), 7, np.uint8)), ColourBackbone(), CFG)
    with pytest.raises(InputError, match="no images"):
        build_bank(Dataset("empty", ["a"], None, []), ColourBackbone(), CFG)
    tiny = np.full((20, 20), 255, np.uint8)
    tiny[5:10, 5:10] = 1
    with pytest.raises(InputError, match="survived"):
        build_bank(_one(tiny), ColourBackbone(), CFG)


def test_nan_features_are_refused():
    class NaNBackbone(ColourBackbone):
        def __call__(self, image):
            f = super().__call__(image)
            f.features[0, 0, 0] = np.nan
            return f
    with pytest.raises(InputError, match="NaN"):
        build_bank(dataset(1), NaNBackbone(), CFG)


def test_patch_fallback_keeps_thin_regions_in_the_bank():
    from moduseg.bank.builder import image_vectors
    label = np.zeros((64, 64), np.uint8)
    label[:, 32:36] = 1                           # a 4-px pole: covers half of an 8-px patch column
    image = np.zeros((64, 64, 3), np.uint8)
    fmap = ColourBackbone()(image)
    strict = BankConfig(granularity="patch", purification="none", min_area=0, patch_purity=0.9)
    _, labels, _ = image_vectors(fmap, label, 2, strict)
    assert 1 not in labels
    loose = BankConfig(granularity="patch", purification="none", min_area=0, patch_purity=0.9,
                       patch_fallback_purity=0.4, patches_per_region=3)
    _, labels, _ = image_vectors(fmap, label, 2, loose)
    assert (labels == 1).sum() == 3


# --------------------------------------------------------------------------- #
# int8 storage, byte-for-byte saves, the size budget of the embedded bank


def _random_bank(n=500, d=32, seed=0, palette=None):
    from moduseg.smfa import l2_normalize
    from moduseg.types import Bank

    rng = np.random.default_rng(seed)
    v = l2_normalize(rng.standard_normal((n, d)).astype(np.float32)).astype(np.float16)
    ident = BackboneIdentity("rand", "pad-s360", 14, d, "0" * 64)
    return Bank(v, rng.integers(0, 3, n), ["a", "b", "c"], ident,
                np.array([f"img{i // 7}" for i in range(n)]), None,
                config={"preset": "default"}, stats={"images": n // 7}, palette=palette)


def test_saves_are_byte_for_byte_reproducible(tmp_path):
    import time

    bank = _random_bank()
    a = save_bank(bank, tmp_path / "a.npz").read_bytes()
    time.sleep(2.1)                                     # zip timestamps have 2 s resolution
    b = save_bank(bank, tmp_path / "b.npz").read_bytes()
    assert a == b
    qa = save_bank(bank, tmp_path / "qa.npz", quantize="int8", compress=True).read_bytes()
    qb = save_bank(bank, tmp_path / "qb.npz", quantize="int8", compress=True).read_bytes()
    assert qa == qb and len(qa) < len(a)


def test_int8_bank_round_trip_keeps_neighbours(tmp_path):
    from moduseg.runtime.index import build_index

    bank = _random_bank(palette=[[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    p = save_bank(bank, tmp_path / "q.npz", quantize="int8")
    with np.load(p) as z:
        assert z["vectors"].dtype == np.int8 and z["vector_scale"].shape == (bank.dim,)
    back = load_bank(p, expect=bank.backbone)
    assert back.quantization == "int8" and back.palette == bank.palette
    assert back.class_names == bank.class_names and (back.labels == bank.labels).all()
    np.testing.assert_allclose(np.linalg.norm(back.vectors, axis=1), 1.0, atol=1e-5)
    cos = np.sum(back.vectors * bank.vectors.astype(np.float32), axis=1)
    assert cos.min() > 0.995
    q = bank.vectors[:50].astype(np.float32)
    _, want = build_index(bank.vectors, "flat").search(q, 1)
    _, got = build_index(back.vectors, "flat").search(q, 1)
    assert (want == got).mean() >= 0.98


def test_bad_quantisation_is_refused(tmp_path):
    bank = _random_bank()
    with pytest.raises(BankError, match="quantisation"):
        save_bank(bank, tmp_path / "x.npz", quantize="int4")
    p = save_bank(bank, tmp_path / "q.npz", quantize="int8")
    import zipfile
    with zipfile.ZipFile(p) as z:                       # drop the scales, keep the rest
        entries = {n: z.read(n) for n in z.namelist() if n != "vector_scale.npy"}
    with zipfile.ZipFile(tmp_path / "broken.npz", "w") as z:
        for n, data in entries.items():
            z.writestr(n, data)
    with pytest.raises(BankError, match="broken.npz"):
        load_bank(tmp_path / "broken.npz")


def test_palette_must_match_the_classes():
    with pytest.raises(InputError, match="palette"):
        _random_bank(palette=[[0, 0, 0]])
    with pytest.raises(InputError, match="palette"):
        _random_bank(palette=[[0, 0, 0], [1, 1, 1], [300, 0, 0]])


def test_fit_to_budget_keeps_an_even_share_of_every_class(tmp_path):
    from moduseg.bank.embedded import fit_to_budget

    bank = _random_bank(n=3000, d=64)
    save = lambda b, p: save_bank(b, p, quantize="int8", compress=True)   # noqa: E731
    full = save(bank, tmp_path / "full.npz").stat().st_size
    small, size = fit_to_budget(bank, tmp_path / "fit.npz", save, max_bytes=full // 2)
    assert size <= full // 2 and size == (tmp_path / "fit.npz").stat().st_size
    assert len(small) < len(bank) and small.stats["subsampled"]["from"] == 3000
    share = np.bincount(small.labels, minlength=3) / len(small)
    np.testing.assert_allclose(share, np.bincount(bank.labels, minlength=3) / len(bank),
                               atol=0.03)
    same, size2 = fit_to_budget(bank, tmp_path / "big.npz", save, max_bytes=full)
    assert len(same) == len(bank) and size2 == full


@pytest.mark.parametrize("kw", [dict(limit=0), dict(limit=-1), dict(shots=0)])
def test_build_bank_refuses_non_positive_limits(kw):
    with pytest.raises(InputError, match="positive integer"):
        build_bank(dataset(2), ColourBackbone(), BankConfig(), **kw)


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
