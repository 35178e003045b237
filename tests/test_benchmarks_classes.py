"""The classes study's pure parts: AUROC and operating point from histograms, the table
with and without the open-set part, and the added vectors sampled as ``bank add`` does."""

import numpy as np
import pytest

from benchmarks import classes as study
from moduseg.bank.edit import add_sampling
from moduseg.config import BankConfig
from moduseg.types import FeatureMap, GridGeometry


def test_auroc_and_operating_point_have_the_known_answers():
    pos = np.zeros(study.BINS)
    neg = np.zeros(study.BINS)
    pos[:10] = 1          # the dropped class: low p-values
    neg[500:] = 1         # the others: high
    assert study.auroc(pos, neg) == pytest.approx(1.0)
    assert study.auroc(neg, pos) == pytest.approx(0.0)
    op = study.at_false_alarm(pos, neg, 0.05)
    assert op["recall"] == 100.0 and op["false_alarm"] <= 5.0


def _result(openset: bool, fewshot: bool = True):
    hist = [0] * study.BINS
    o = {"recall": 50.0, "false_alarm": 4.0, "auroc": 0.9, "pixels": 10 if openset else 0,
         "hist_pos": [1] + hist[1:] if openset else hist,
         "hist_neg": hist[:-1] + [1] if openset else hist}
    c = {"full_iou": 80.0, "k1_iou": 10.0, "k5_iou": 64.0, "k10_iou": 72.0, "open_set": o,
         "known_mIoU_dropped_off": 50.0, "known_mIoU_dropped_on": 49.5}
    if fewshot:
        c.update({"k5_add_ms": 12.0, "k5_others_mIoU": 49.0, "full_others_mIoU": 50.0})
    qs = {"0001TP": {"q": 0.05, "inner_false_alarm": 4.9, "inner_pixels": 100}} \
        if openset else {}
    return {"classes": {"sky": c}, "unknown_q": qs, "full_mIoU_off": 49.0,
            "full_mIoU_on": 48.5, "eval_frames": 60, "seconds": 10.0,
            "full_open_set": {"false_alarm": 1.0, "pixels": 0,
                              "hist_neg": [0] * (study.BINS - 1) + [5] if openset else hist}}


def test_the_tables_with_and_without_each_part():
    both = study.markdown(_result(True))
    assert "| sky | 80.0 | 10.0 | 64.0 | 72.0 | 80 % |" in both
    assert "| sky | 50.0 % | 4.0 % | 1.000 | 100.0 % (0.0 %) | 50.0 | 49.5 | -0.5 |" in both
    assert "mIoU 49.0 with unknown off, 48.5 on (-0.5)" in both
    assert "0001TP 0.0500 (false alarm 4.9 % on the bank's own sequences)" in both
    assert "mIoU 49.0 against 50.0" in both and "worst -1.0" in both
    few = study.markdown(_result(False))
    assert "| sky | 80.0 | 10.0 | 64.0 | 72.0 | 80 % |" in few
    assert "nan" not in few and "unknown" not in few and "AUROC" not in few
    only_open = study.markdown(_result(True, fewshot=False))
    assert "k=5 / full" not in only_open and "| sky | 50.0 % |" in only_open


def _one_image_rows(seed):
    """One cached row of a 56 x 56 image on a 4 x 4 grid, class 1 in its lower 3 rows."""
    geo = GridGeometry((56, 56), (56, 56), (4, 4), 14)
    feats = np.random.default_rng(seed).normal(size=(8, 4, 4)).astype(np.float16)
    label = np.zeros((56, 56), np.uint8)
    label[14:, :] = 1
    return [(feats, geo, label, None)]


def test_added_vectors_are_sampled_densely_as_bank_add_does():
    """A 4 x 4 grid, class 1 covering 12 cells: the build's 2 patches per region, the
    add's sampling of one image all 12."""
    rows = _one_image_rows(0)
    feats, geo = rows[0][:2]
    build = BankConfig(granularity="patch", patches_per_region=2, patch_purity=0.75,
                       purification="none", min_area=0, outlier_fraction=0.0)
    v, ids = study.added_vectors(rows, ["img"], [0], 1, 2, build)
    assert len(v) == 2 and list(ids) == ["img", "img"]

    class Counts:              # classes of 40 and 60 vectors: a typical vector's class 60
        labels = np.repeat([0, 1], [40, 60])
        class_names = ["a", "b"]

        def __len__(self):
            return 100

    dense = add_sampling(build, Counts(), 1)
    assert dense.patches_per_region == 60
    v, _ = study.added_vectors(rows, ["img"], [0], 1, 2, dense)
    assert len(v) == 12
    assert isinstance(FeatureMap(feats.astype(np.float32), geo).dim, int)


def test_coco128_needs_named_classes_and_parts_are_checked():
    from click.testing import CliRunner

    r = CliRunner().invoke(study.command, ["--dataset", "coco128"])
    assert r.exit_code == 2 and "name a few" in r.output
    r = CliRunner().invoke(study.command, ["--parts", "fewshot,nope"])
    assert r.exit_code == 2 and "unknown part 'nope'" in r.output


def test_area_selection_picks_among_frames_where_the_class_covers_the_median_share():
    """Frames 0..5 show class 1 (vectors) on shares 0.01, 0.5, 0.02, 0.4, 0.03, 0.3; frame
    6 does not show it. Even spread: frames 0 and 5; area: only frames at or above the
    median share (0.165): 1, 3, 5, spread -> 1 and 5."""
    raw = [(None, np.array([1]))] * 6 + [(None, np.array([0]))]
    areas = [0.01, 0.5, 0.02, 0.4, 0.03, 0.3, 0.0]
    assert study.shots(raw, 1, 2) == [0, 5]
    assert study.shots(raw, 1, 2, areas) == [1, 5]
    assert study.shots(raw, 1, 3, areas) == [1, 3, 5]
    assert study.shots(raw, 2, 3, areas) == []


def test_added_views_are_embedded_under_the_frames_id():
    """The mirrored view of a frame gives its own vectors, all under the frame's id."""
    rows = _one_image_rows(1)
    feats, geo, label = rows[0][:3]
    cfg = BankConfig(granularity="patch", patches_per_region=100, patch_purity=0.75,
                     purification="none", min_area=0, outlier_fraction=0.0)
    mirror = [(feats[:, :, ::-1].copy(), geo, label[:, ::-1].copy(), None)]
    v, ids = study.added_vectors(rows, ["img"], [0], 1, 2, cfg, views=lambda i: mirror)
    assert len(v) == 24 and set(ids) == {"img"}


@pytest.mark.parametrize("target, added", [(100, 12), (18, 6), (12, 0), (5, 0)])
def test_zoom_tiles_top_up_a_short_class_as_bank_add_zoom_does(target, added):
    """Class 1 gives 12 vectors of its own; a zoom tile showing it gives 12 more, a tile
    without it none. Known answers: target 100 -> gap 12 (capped at
    the own 12), 18 -> 6, 12 or 5 -> no gap; every vector under the frame's id."""
    rows = _one_image_rows(1)
    feats, geo, label = rows[0][:3]
    cfg = BankConfig(granularity="patch", patches_per_region=100, patch_purity=0.75,
                     purification="none", min_area=0, outlier_fraction=0.0)
    sv, sid = study.added_vectors(rows, ["img"], [0], 1, 2, cfg)
    assert len(sv) == 12
    empty = np.zeros_like(label)
    zoomed = {7: [(feats, geo, label, None), (feats, geo, empty, None)]}
    v, ids = study.zoom_topped(sv, sid, [7], ["img"], zoomed, 1, 2, cfg, target)
    assert len(v) == 12 + added and set(ids) == {"img"}
    assert np.array_equal(v[:12], sv)


@pytest.mark.parametrize("bad", ["1", "9", "x", "nan"])
def test_a_bad_zoom_is_one_line_and_exit_2(bad):
    from click.testing import CliRunner

    from benchmarks.__main__ import cli as studies

    r = CliRunner().invoke(studies, ["classes", "--parts", "fewshot", f"--zoom={bad}"])
    assert r.exit_code == 2 and "--zoom" in r.output and "above 1 and at most 4" in r.output
    assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output
