"""Editing banks: add / drop / refit / info, provenance, one-image classes, identity."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings, strategies as st

from moduseg.bank.augment import zoom_factors
from moduseg.bank.builder import build_bank
from moduseg.bank.edit import (add_sampling, add_target, add_vectors, drift, drop_class,
                               fill_gaps, refit, zoom_gaps, zoom_tile_wanted)
from moduseg.bank.store import load_bank, save_bank
from moduseg.cli import cli
from moduseg.config import BankConfig
from moduseg.errors import InputError
from moduseg.io import write_image, write_label_png
from moduseg.runtime.index import bank_index, project_queries
from moduseg.runtime.pipeline import assign
from moduseg.config import RuntimeConfig
from moduseg.types import BackboneIdentity, Bank

from synthetic import PALETTE, ColourBackbone, dataset, gt_proposals, scene

CFG = BankConfig(min_area=0, erosion_iterations=0, outlier_fraction=0.0)


def _bank(n_classes=4):
    """A bank of background + class1..3 (colour 4 is never shown to it)."""
    return build_bank(dataset(6, n_classes=n_classes), ColourBackbone(n_classes=5), CFG)


@pytest.fixture
def colour_models(monkeypatch):
    """``bank add`` embeds with the colour stand-in instead of DINOv2."""
    import moduseg.models as models
    import moduseg.build as assembly
    monkeypatch.setattr(assembly, "build_backbone", lambda cfg, be, home=None: ColourBackbone())
    monkeypatch.setattr(models, "ensure_models", lambda *a, **k: None)


def _one_image_of_class4(tmp_path):
    """An image with a class-4 rectangle and its binary mask PNG."""
    label = np.zeros((96, 128), np.uint8)
    label[20:60, 30:90] = 4
    write_image(tmp_path / "new.png", PALETTE[label])
    write_label_png(tmp_path / "new_mask.png", (label == 4).astype(np.uint8))
    return label


def test_add_then_drop_gives_back_the_banks_vectors():
    b = _bank()
    rng = np.random.default_rng(0)
    v = rng.normal(size=(7, 5)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    added, report = add_vectors(b, v, np.zeros(7, int), [f"i{i}" for i in range(7)],
                                ["newcls"], "test")
    assert report == {"added": {"newcls": 7}, "created": ["newcls"], "images": 7}
    assert added.class_names == b.class_names + ["newcls"] and len(added) == len(b) + 7
    back = drop_class(added, "newcls")
    assert back.class_names == b.class_names
    np.testing.assert_array_equal(back.vectors, b.vectors)
    np.testing.assert_array_equal(back.labels, b.labels)
    np.testing.assert_array_equal(back.image_ids, b.image_ids)
    assert back.calibration["per_class"] == b.calibration["per_class"]
    assert back.provenance == b.provenance


def test_drop_relabels_the_classes_after_it():
    b = _bank()
    d = drop_class(b, "class1")
    assert d.class_names == ["background", "class2", "class3"]
    assert sorted(np.unique(d.labels).tolist()) == [0, 1, 2]
    np.testing.assert_array_equal(d.vectors, b.vectors[b.labels != 1])
    assert "class1" not in d.provenance and "class1" not in d.calibration["per_class"]
    with pytest.raises(InputError, match="no class 'nope'"):
        drop_class(b, "nope")


def test_more_examples_of_a_known_class_join_it():
    b = _bank()
    v = np.eye(5, dtype=np.float32)[[1, 1]]
    added, report = add_vectors(b, v, [0, 0], ["x", "y"], ["class1"], "more")
    assert report["created"] == [] and added.class_counts()["class1"] == \
        b.class_counts()["class1"] + 2
    assert [e["op"] for e in added.provenance["class1"]] == ["build", "add"]


def _counted_bank(counts):
    """A patch bank whose classes hold ``counts`` vectors (values do not matter here)."""
    labels = np.repeat(np.arange(len(counts)), counts)
    v = np.ones((len(labels), 5), np.float32) / np.sqrt(5)
    return Bank(vectors=v, labels=labels, class_names=[f"c{i}" for i in range(len(counts))],
                backbone=BackboneIdentity("colour", "64x64", 8, 5, "0" * 64),
                image_ids=np.array(["x"] * len(labels)))


@pytest.mark.parametrize("images, per_region", [(1, 400), (5, 80), (7, 58), (13, 31), (100, 8)])
def test_add_samples_a_few_images_densely_up_to_a_typical_vectors_class(images, per_region):
    """Known answer: counts 30, 100, 400; half the bank's vectors are in a class of 400
    (the count-weighted median), spread over the added images, never below the build's
    patches_per_region (8)."""
    cfg = BankConfig(granularity="patch", patches_per_region=8)
    got = add_sampling(cfg, _counted_bank([30, 100, 400]), images)
    assert got.patches_per_region == per_region
    assert got.patch_purity == cfg.patch_purity and got.granularity == "patch"


def test_add_sampling_is_not_starved_by_many_rare_classes():
    """coco128-like: 20 classes of 5 vectors beside 300 and 700 (median class 5): 5 added
    images still take up to 700 vectors, 140 each."""
    cfg = BankConfig(granularity="patch", patches_per_region=8)
    got = add_sampling(cfg, _counted_bank([5] * 20 + [300, 700]), 5)
    assert got.patches_per_region == 140


def test_add_sampling_leaves_pooled_banks_and_empty_adds_alone():
    b = _counted_bank([30, 100, 400])
    pooled = BankConfig(granularity="class", patches_per_region=8)
    assert add_sampling(pooled, b, 1) is pooled
    cfg = BankConfig(granularity="patch", patches_per_region=8)
    assert add_sampling(cfg, b, 0) is cfg


def test_one_image_class_is_found_in_its_own_image(tmp_path, colour_models):
    b = _bank()
    save_bank(b, tmp_path / "bank.npz")
    label = _one_image_of_class4(tmp_path)
    r = CliRunner().invoke(cli, ["bank", "add", str(tmp_path / "bank.npz"), "--dataset", "pairs",
                                 "--root", str(tmp_path / "new.png"), "--labels",
                                 str(tmp_path / "new_mask.png"), "--class", "kite",
                                 "--out", str(tmp_path / "new.npz")])
    assert r.exit_code == 0, r.output
    assert "kite" in r.output and "new classes: kite" in r.output
    nb = load_bank(tmp_path / "new.npz")
    assert nb.class_names[-1] == "kite" and nb.class_counts()["kite"] >= 1
    assert nb.provenance["kite"][0]["op"] == "add" and nb.provenance["kite"][0]["images"] == 1
    # the class is found in the image it came from
    img = PALETTE[label]
    fmap = ColourBackbone()(img)
    res = assign(fmap, gt_proposals(label), nb, bank_index(nb, "flat"),
                 RuntimeConfig(min_area=0, min_objectness=0.0, top_k=1))
    kite = nb.class_names.index("kite")
    assert (res.label_map[label == 4] == kite).mean() > 0.95
    assert (res.label_map[label == 0] == 0).mean() > 0.95
    # info shows per-class counts and provenance; the original bank is untouched
    r = CliRunner().invoke(cli, ["bank", "info", str(tmp_path / "new.npz")])
    assert r.exit_code == 0 and "kite" in r.output and "add pairs:" in r.output
    assert load_bank(tmp_path / "bank.npz").class_names == b.class_names


def test_add_refuses_another_backbone_in_one_line(tmp_path, colour_models):
    b = _bank()
    other = Bank(b.vectors, b.labels, b.class_names,
                 BackboneIdentity("colour-test", "native", 8, 5, "f" * 64), b.image_ids,
                 b.background_index, b.config)
    save_bank(other, tmp_path / "bank.npz")
    _one_image_of_class4(tmp_path)
    r = CliRunner().invoke(cli, ["bank", "add", str(tmp_path / "bank.npz"), "--dataset", "pairs",
                                 "--root", str(tmp_path / "new.png"), "--labels",
                                 str(tmp_path / "new_mask.png"), "--class", "kite",
                                 "--out", str(tmp_path / "new.npz")])
    assert r.exit_code == 2
    assert "different backbone" in r.output and "weights_sha256" in r.output
    assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output
    assert not (tmp_path / "new.npz").exists()


def test_add_never_overwrites_the_bank_it_edits(tmp_path, colour_models):
    save_bank(_bank(), tmp_path / "bank.npz")
    before = (tmp_path / "bank.npz").read_bytes()
    _one_image_of_class4(tmp_path)
    r = CliRunner().invoke(cli, ["bank", "add", str(tmp_path / "bank.npz"), "--dataset", "pairs",
                                 "--root", str(tmp_path / "new.png"), "--labels",
                                 str(tmp_path / "new_mask.png"), "--class", "kite",
                                 "--out", str(tmp_path / "bank.npz")])
    assert r.exit_code == 2 and "being edited" in r.output
    assert (tmp_path / "bank.npz").read_bytes() == before


def test_drop_cli_and_add_back_round_trip(tmp_path, colour_models):
    save_bank(_bank(), tmp_path / "bank.npz")
    _one_image_of_class4(tmp_path)
    run = CliRunner().invoke
    r = run(cli, ["bank", "add", str(tmp_path / "bank.npz"), "--dataset", "pairs", "--root",
                  str(tmp_path / "new.png"), "--labels", str(tmp_path / "new_mask.png"),
                  "--class", "kite", "--out", str(tmp_path / "added.npz")])
    assert r.exit_code == 0, r.output
    r = run(cli, ["bank", "drop", str(tmp_path / "added.npz"), "--class", "kite", "--out",
                  str(tmp_path / "dropped.npz")])
    assert r.exit_code == 0, r.output
    a, d = load_bank(tmp_path / "bank.npz"), load_bank(tmp_path / "dropped.npz")
    np.testing.assert_array_equal(a.vectors, d.vectors)
    assert a.class_names == d.class_names
    r = run(cli, ["bank", "drop", str(tmp_path / "bank.npz"), "--class", "kite", "--out",
                  str(tmp_path / "x.npz")])
    assert r.exit_code == 2 and "no class 'kite'" in r.output


def test_old_banks_without_provenance_still_load(tmp_path):
    b = _bank()
    b.provenance, b.calibration = {}, None
    save_bank(b, tmp_path / "old.npz")
    old = load_bank(tmp_path / "old.npz")
    assert old.provenance == {} and old.calibration is None
    r = CliRunner().invoke(cli, ["bank", "info", str(tmp_path / "old.npz")])
    assert r.exit_code == 0 and "not recorded" in r.output


def _projected_bank(n=600, D=24, d=8, seed=0):
    from moduseg.bank.builder import finish_vectors
    from moduseg.runtime.calibrate import calibrate
    from moduseg.bank.edit import axis_moments
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, D))
    labels = rng.integers(0, 3, n)
    x = centres[labels] + 0.6 * rng.normal(size=(n, D))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    cfg = BankConfig(pca_dim=d, whiten=True, outlier_fraction=0.0, dtype="float32")
    b = finish_vectors(x.astype(np.float32), labels, [f"im{i % 50}" for i in range(n)],
                       ["a", "b", "c"], BackboneIdentity("t", "n", 1, D, "0" * 64), None, cfg)
    b.stats["projection_fit"] = {"vectors": n, "moments": axis_moments(b.vectors), "added": 0}
    b.calibration = calibrate(b.vectors, b.labels, b.image_ids, b.class_names)
    return b, rng


def test_drift_is_flagged_and_refit_recomputes_the_projection():
    b, rng = _projected_bank()
    assert drift(b)["score"] == 0.0 and not drift(b)["flagged"]
    D = b.backbone.feature_dim
    # more of the same distribution: little drift
    same = rng.normal(size=(60, D)) * 0.01 + b.projection_mean
    same /= np.linalg.norm(same, axis=1, keepdims=True)
    # a new class far along one direction: the whitening no longer fits
    far = np.tile(rng.normal(size=(1, D)) * 3, (400, 1)) + 0.05 * rng.normal(size=(400, D))
    far /= np.linalg.norm(far, axis=1, keepdims=True)
    drifted, _ = add_vectors(b, far.astype(np.float32), np.zeros(400, int),
                             [f"n{i}" for i in range(400)], ["new"], "far")
    assert drift(drifted)["flagged"] and drift(drifted)["added"] == 400
    fixed = refit(drifted)
    assert drift(fixed)["score"] < drift(drifted)["score"] and not drift(fixed)["flagged"]
    # exact: a query projected by the refitted projection meets the refitted vectors as
    # the old projection followed by the same re-whitening would
    q = rng.normal(size=(5, D)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    new_q = project_queries(q, (fixed.projection, fixed.projection_mean))
    W = np.linalg.lstsq(drifted.projection.astype(np.float64),
                        fixed.projection.astype(np.float64), rcond=None)[0]
    old_then_w = project_queries(q, (drifted.projection, drifted.projection_mean)) @ W
    old_then_w /= np.linalg.norm(old_then_w, axis=1, keepdims=True)
    np.testing.assert_allclose(new_q, old_then_w, atol=1e-4)
    np.testing.assert_array_equal(fixed.labels, drifted.labels)


def test_refit_info_and_cli(tmp_path):
    b, rng = _projected_bank()
    D = b.backbone.feature_dim
    far = np.tile(rng.normal(size=(1, D)) * 3, (400, 1)) + 0.05 * rng.normal(size=(400, D))
    far /= np.linalg.norm(far, axis=1, keepdims=True)
    drifted, _ = add_vectors(b, far.astype(np.float32), np.zeros(400, int),
                             [f"n{i}" for i in range(400)], ["new"], "far")
    save_bank(drifted, tmp_path / "d.npz")
    r = CliRunner().invoke(cli, ["bank", "info", str(tmp_path / "d.npz")])
    assert r.exit_code == 0 and "DRIFTED" in r.output and "bank refit" in r.output
    r = CliRunner().invoke(cli, ["bank", "refit", str(tmp_path / "d.npz"), "--out",
                                 str(tmp_path / "r.npz")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["bank", "info", str(tmp_path / "r.npz"), "--json"])
    assert not json.loads(r.output)["drift"]["flagged"]
    r = CliRunner().invoke(cli, ["bank", "refit", str(tmp_path / "r.npz"), "--out",
                                 str(tmp_path / "r.npz")])
    assert r.exit_code == 2


def test_refit_of_an_unprojected_bank_is_one_line(tmp_path):
    save_bank(_bank(), tmp_path / "b.npz")
    r = CliRunner().invoke(cli, ["bank", "refit", str(tmp_path / "b.npz"), "--out",
                                 str(tmp_path / "r.npz")])
    assert r.exit_code == 2 and "no projection" in r.output


def test_crafted_provenance_calibration_and_drift_records_never_crash(tmp_path):
    """Property: whatever JSON sits in a bank's provenance, calibration or drift reference,
    the bank loads (bad records ignored), bank info and a run's calibration work."""
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from moduseg.runtime.unknown import unknown_rule

    b, _ = _projected_bank(n=60)
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers(-10, 10**12) | st.floats(allow_nan=False)
        | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4),
                                                                     inner, max_size=4),
        max_leaves=12)
    runner = CliRunner()

    @settings(max_examples=25, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(prov=json_values, cal=json_values, fit=json_values)
    def check(prov, cal, fit):
        import zipfile
        path = tmp_path / "b.npz"
        save_bank(b, path)
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(str(arrays["meta"]))
        meta["provenance"], meta["calibration"] = prov, cal
        meta["stats"]["projection_fit"] = fit
        arrays["meta"] = np.array(json.dumps(meta))
        from moduseg.bank.store import write_npz
        with open(path, "wb") as f:
            write_npz(f, arrays)
        assert zipfile.is_zipfile(path)
        loaded = load_bank(path)
        assert isinstance(loaded.provenance, dict)
        drift(loaded)
        assert unknown_rule(loaded, 0.05).thresholds.shape == (3,)
        r = runner.invoke(cli, ["bank", "info", str(path)])
        assert r.exit_code == 0, r.output
        r = runner.invoke(cli, ["bank", "info", str(path), "--json"])
        assert r.exit_code == 0, r.output

    check()


def _bank_from_images(per_class_images):
    """A bank whose class c has one vector in each of ``per_class_images[c]`` images."""
    labels, ids = [], []
    for c, n in enumerate(per_class_images):
        labels += [c] * n
        ids += [f"img{i}" for i in range(n)]
    v = np.eye(4, dtype=np.float32)[np.arange(len(labels)) % 4]
    return Bank(vectors=v, labels=np.asarray(labels, np.int32), image_ids=np.asarray(ids),
                class_names=[f"c{c}" for c in range(len(per_class_images))],
                backbone=BackboneIdentity("colour", "64x64", 8, 4, "0" * 64))


def test_few_image_balance_makes_only_classes_from_few_images_rarer():
    """Classes from 100, 2, 50 and 60 images (median 55): with few_image_balance=0.1 only
    the 2-image class (under 5.5 images) has its share scaled, by 2 / 5.5."""
    from moduseg.runtime.pipeline import class_image_counts, class_prior

    b = _bank_from_images([100, 2, 50, 60])
    np.testing.assert_array_equal(class_image_counts(b), [100, 2, 50, 60])
    plain = np.array([100, 2, 50, 60]) / 212
    np.testing.assert_allclose(class_prior(b), plain)
    np.testing.assert_allclose(class_prior(b, 0.0), plain)
    np.testing.assert_allclose(class_prior(b, 0.1), plain * [1, 2 / 5.5, 1, 1])
    # a share of 1: every class under the median image count scales
    np.testing.assert_allclose(class_prior(b, 1.0), plain * [1, 2 / 55, 50 / 55, 1])


def test_few_image_balance_lets_a_class_taught_from_few_images_win_a_close_vote():
    """Two neighbours of the 1-image class against three of a 40-image class, equally
    similar: the balanced vote (balance 0.5) gives the patch to the many-image class by
    vectors alone and to the few-image class once its share counts images."""
    from moduseg.runtime.pipeline import class_prior
    from moduseg.runtime.vote import vote

    b = _bank_from_images([40, 40, 40])
    # the few-image class: 40 vectors (dense sampling), all from one image
    b = Bank(vectors=np.concatenate([b.vectors, b.vectors[:40]]),
             labels=np.concatenate([b.labels, np.full(40, 3, np.int32)]),
             image_ids=np.concatenate([b.image_ids, np.asarray(["one"] * 40)]),
             class_names=b.class_names + ["taught"], backbone=b.backbone)
    sims = np.full((1, 5), 0.8)
    nbr = np.array([[0, 0, 0, 3, 3]])
    off, _ = vote(sims, nbr, 4, "weighted", class_prior(b), 0.5)
    on, _ = vote(sims, nbr, 4, "weighted", class_prior(b, 0.5), 0.5)
    assert off[0] == 0 and on[0] == 3


def test_add_sampling_with_flip_spreads_the_target_over_both_views():
    """Known answer: counts 30, 100, 400 (target 400); 5 images mirrored are 10 views: 40
    patches a view, and the mirror is asked for."""
    cfg = BankConfig(granularity="patch", patches_per_region=8)
    got = add_sampling(cfg, _counted_bank([30, 100, 400]), 5, flip=True)
    assert got.augment_flip and got.patches_per_region == 40
    assert not add_sampling(cfg, _counted_bank([30, 100, 400]), 5).augment_flip


def test_bank_add_flip_embeds_each_image_mirrored_too(tmp_path, colour_models):
    """--flip: the mirrored view of the one added image gives more vectors of the class,
    all under the image's id, and the bank's stored configuration is not changed."""
    b = _bank()
    save_bank(b, tmp_path / "bank.npz")
    _one_image_of_class4(tmp_path)
    counts = {}
    for flag in ("--no-flip", "--flip"):
        out = tmp_path / f"new{flag}.npz"
        r = CliRunner().invoke(cli, ["bank", "add", str(tmp_path / "bank.npz"), "--dataset",
                                     "pairs", "--root", str(tmp_path / "new.png"), "--labels",
                                     str(tmp_path / "new_mask.png"), "--class", "kite",
                                     "--out", str(out), flag])
        assert r.exit_code == 0, r.output
        nb = load_bank(out)
        counts[flag] = nb.class_counts()["kite"]
        kite = nb.labels == nb.class_names.index("kite")
        assert set(nb.image_ids[kite].tolist()) == {"new"}
        assert nb.config == load_bank(tmp_path / "bank.npz").config
    assert counts["--flip"] > counts["--no-flip"]


def test_zoom_tops_up_only_the_classes_short_of_the_target():
    """Known answer: target 10; of the added classes 1-4 (class 0 is not added), class 1
    has 12 vectors from the images themselves (no gap), class 2 has 7 (gap 3), class 3 has
    4 (gap 6, but zoomed vectors never outnumber its own 4), class 4 none (none). A tile
    is embedded only when it shows a short class; of the zoomed vectors a short class
    keeps at most its gap, evenly spread, the others none."""
    labels = np.array([1] * 12 + [2] * 7 + [3] * 4 + [0] * 3)
    assert zoom_gaps(labels, [1, 2, 3, 4], 10) == {2: 3, 3: 4}
    gaps = {2: 6, 3: 10}
    assert zoom_tile_wanted(np.array([[0, 3], [1, 1]]), gaps)
    assert not zoom_tile_wanted(np.array([[0, 1], [1, 1]]), gaps)
    assert not zoom_tile_wanted(np.array([[2]]), {})
    zl = np.array([2] * 11 + [1] * 5 + [3] * 2 + [0])
    keep = fill_gaps(zl, gaps)
    assert (zl[keep] == 2).sum() == 6 and (zl[keep] == 3).sum() == 2
    assert not np.isin(zl[keep], [0, 1]).any()
    assert keep[zl[keep] == 2].tolist() == [0, 2, 4, 6, 8, 10]     # evenly spread
    assert fill_gaps(zl, {}).tolist() == []
    assert add_target(_counted_bank([30, 100, 400])) == 400


class _RecordingBackbone(ColourBackbone):
    """The colour stand-in, recording the size of every image it embeds."""

    def __init__(self, seen):
        super().__init__()
        self.seen = seen

    def __call__(self, image):
        self.seen.append(image.shape[:2])
        return super().__call__(image)


def test_bank_add_zoom_embeds_each_zoom_tile_of_the_image(tmp_path, monkeypatch):
    """--zoom 2: the 96 x 128 image and its four 48 x 64 tiles are embedded (5 passes); the
    class rectangle lies in every tile (4 zoomed region vectors), but zoomed vectors never
    outnumber the class's own-scale ones: 1 + 1 (2 + 2 with the mirror), all under the
    image's id; the bank's stored configuration is not changed."""
    import moduseg.build as assembly
    import moduseg.models as models

    seen = []
    monkeypatch.setattr(assembly, "build_backbone",
                        lambda cfg, be, home=None: _RecordingBackbone(seen))
    monkeypatch.setattr(models, "ensure_models", lambda *a, **k: None)
    b = _bank()
    save_bank(b, tmp_path / "bank.npz")
    _one_image_of_class4(tmp_path)
    counts, passes = {}, {}
    for flags in ((), ("--zoom", "2"), ("--zoom", "2", "--flip")):
        seen.clear()
        out = tmp_path / f"new{len(flags)}.npz"
        r = CliRunner().invoke(cli, ["bank", "add", str(tmp_path / "bank.npz"), "--dataset",
                                     "pairs", "--root", str(tmp_path / "new.png"), "--labels",
                                     str(tmp_path / "new_mask.png"), "--class", "kite",
                                     "--out", str(out), *flags])
        assert r.exit_code == 0, r.output
        nb = load_bank(out)
        counts[flags], passes[flags] = nb.class_counts()["kite"], list(seen)
        kite = nb.labels == nb.class_names.index("kite")
        assert set(nb.image_ids[kite].tolist()) == {"new"}
        assert nb.config == load_bank(tmp_path / "bank.npz").config
    assert passes[()] == [(96, 128)]
    assert passes[("--zoom", "2")] == [(96, 128)] + [(48, 64)] * 4
    assert passes[("--zoom", "2", "--flip")] == [(96, 128)] * 2 + [(48, 64)] * 4
    assert counts[()] == 1 and counts[("--zoom", "2")] == 2
    assert counts[("--zoom", "2", "--flip")] == 4


def test_bank_add_zoom_skips_the_tiles_without_a_short_class(tmp_path, monkeypatch):
    """A kite in the top-left quarter only, added with --only kite: of the four zoom-2
    tiles only the top-left one shows it, so only that one costs a backbone pass."""
    import moduseg.build as assembly
    import moduseg.models as models

    seen = []
    monkeypatch.setattr(assembly, "build_backbone",
                        lambda cfg, be, home=None: _RecordingBackbone(seen))
    monkeypatch.setattr(models, "ensure_models", lambda *a, **k: None)
    save_bank(_bank(), tmp_path / "bank.npz")
    label = np.zeros((96, 128), np.uint8)
    label[8:40, 8:56] = 4
    write_image(tmp_path / "new.png", PALETTE[label])
    write_label_png(tmp_path / "new_mask.png", (label == 4).astype(np.uint8))
    r = CliRunner().invoke(cli, ["bank", "add", str(tmp_path / "bank.npz"), "--dataset", "pairs",
                                 "--root", str(tmp_path / "new.png"), "--labels",
                                 str(tmp_path / "new_mask.png"), "--class", "kite",
                                 "--only", "kite", "--zoom", "2", "--out",
                                 str(tmp_path / "new.npz")])
    assert r.exit_code == 0, r.output
    assert seen == [(96, 128), (48, 64)]
    assert load_bank(tmp_path / "new.npz").class_counts()["kite"] == 2


@pytest.mark.parametrize("bad", ["1", "0.5", "5", "abc", "nan", "inf", "2,", "-2"])
def test_bank_add_refuses_a_bad_zoom_in_one_line(tmp_path, colour_models, bad):
    b = _bank()
    save_bank(b, tmp_path / "bank.npz")
    _one_image_of_class4(tmp_path)
    r = CliRunner().invoke(cli, ["bank", "add", str(tmp_path / "bank.npz"), "--dataset", "pairs",
                                 "--root", str(tmp_path / "new.png"), "--labels",
                                 str(tmp_path / "new_mask.png"), "--class", "kite",
                                 "--out", str(tmp_path / "new.npz"), f"--zoom={bad}"])
    assert r.exit_code == 2, r.output
    assert "--zoom" in r.output and "above 1 and at most 4" in r.output
    assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output
    assert not (tmp_path / "new.npz").exists()


@given(st.lists(st.text(max_size=8), max_size=3))
@settings(max_examples=200, deadline=None)
def test_zoom_factors_parse_or_refuse_with_input_error(values):
    """Any --zoom text gives sorted unique factors in (1, 4] or an InputError, nothing else."""
    try:
        got = zoom_factors(values)
    except InputError as e:
        assert "--zoom" in str(e)
        return
    assert list(got) == sorted(set(got)) and all(1 < z <= 4 for z in got)
