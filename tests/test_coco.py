"""``segments.json`` masks are the frame-resolution masks their ``area`` counts, and the
painted ones are exactly the segments' pixels of the label map (issue 29, item 8)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from pycocotools import mask as mask_utils

from moduseg.bank.builder import build_bank
from moduseg.coco import segment_records
from moduseg.config import BankConfig, RuntimeConfig
from moduseg.runtime.index import build_index
from moduseg.runtime.masks import full_resolution_areas
from moduseg.runtime.pipeline import assign
from moduseg.types import IGNORE, Proposals
from synthetic import ColourBackbone, dataset, scene


def _decode(rec) -> np.ndarray:
    rle = dict(rec["rle"], counts=rec["rle"]["counts"].encode())
    return mask_utils.decode(rle).astype(bool)


def check_records(recs, label_map, proposals=None):
    """The contract of segments.json's masks, against the label map it was written with."""
    H, W = label_map.shape
    masks = {}
    for r in recs:
        m = _decode(r)
        assert m.shape == (H, W)
        assert int(m.sum()) == r["area"], r                    # area counts the RLE's pixels
        x, y, w, h = r["bbox"]
        if r["area"]:
            ys, xs = np.nonzero(m)
            assert [x, y, w, h] == [xs.min(), ys.min(), xs.max() - xs.min() + 1,
                                    ys.max() - ys.min() + 1]
        if r["painted"]:
            assert r["class_id"] is not None
            assert (label_map[m] == r["class_id"]).all(), r   # its pixels carry its class
            masks.setdefault(r["class_id"], []).append(m)
        else:
            assert r["area"] == r["proposal_area"]
            if proposals is not None:
                want = cv2.resize(proposals.masks[r["proposal"]].view(np.uint8), (W, H),
                                  interpolation=cv2.INTER_NEAREST).astype(bool)
                assert (m == want).all()
    painted = [m for ms in masks.values() for m in ms]
    if painted:
        assert (np.sum(painted, axis=0) <= 1).all()               # painted masks never overlap
    for c, ms in masks.items():                                   # and cover their class
        assert (np.any(ms, axis=0) == (label_map == c)).all(), c
    return masks


@pytest.fixture(scope="module")
def bank():
    return build_bank(dataset(6), ColourBackbone(), BankConfig(erosion_iterations=3, min_area=50))


@pytest.mark.parametrize("grid", [(25, 33), (48, 64), (96, 128)])
def test_rle_masks_are_the_painted_masks_area_counts(bank, grid):
    """Proposals on a coarser grid than the frame (SAM's), filled and edge-refined."""
    image, label = scene(5)
    cs = [int(c) for c in np.unique(label)]
    h, w = grid
    small = np.stack([cv2.resize((label == c).view(np.uint8), (w, h),
                                 interpolation=cv2.INTER_NEAREST) for c in cs]).astype(bool)
    # an overlapping, lower-scored duplicate of the first object mask: suppressed
    small = np.concatenate([small, small[1:2]])
    props = Proposals(small, np.r_[np.ones(len(cs)), 0.9], label.shape)
    cfg = RuntimeConfig(min_area=50, top_k=5, unassigned="nearest", refine_radius=4)
    res = assign(ColourBackbone()(image), props, bank, build_index(bank.vectors), cfg,
                 image=image)
    recs = segment_records(res)
    assert len(recs) == len(res.segments) and any(r["painted"] for r in recs)
    assert not all(r["painted"] for r in recs)
    masks = check_records(recs, res.label_map, props)
    # the proposal's own full-resolution area, exact (as the label map scales the grid)
    exact = full_resolution_areas(props.masks[[r["proposal"] for r in recs]], label.shape)
    assert [r["proposal_area"] for r in recs] == exact.tolist()
    assert [s.area for s in res.segments] == exact.tolist()
    # every labelled pixel of a class some segment painted is in one of its masks
    assert sum(int(m.sum()) for ms in masks.values() for m in ms) == int(
        np.isin(res.label_map, list(masks)).sum())


def test_full_resolution_areas_match_a_nearest_resize():
    rng = np.random.default_rng(0)
    m = rng.random((4, 7, 9)) > 0.5
    for hw in [(7, 9), (20, 31), (360, 480), (5, 4)]:
        want = [int(cv2.resize(x.view(np.uint8), hw[::-1], interpolation=cv2.INTER_NEAREST)
                    .sum()) for x in m]
        assert full_resolution_areas(m, hw).tolist() == want


@pytest.mark.realdata
@pytest.mark.models
def test_segments_json_of_a_camvid_frame(shared_data, tmp_path):
    """End to end with SAM (default preset, embedded bank): every RLE of segments.json
    decoded and compared with ``area`` and with the written label PNG."""
    from moduseg.cli import cli
    from moduseg.io import read_label_map

    frame = shared_data / "camvid" / "val" / "0016E5_07959.png"
    r = CliRunner().invoke(cli, ["segment", str(frame), "--offline", "--backend", "cpu",
                                 "--out", str(tmp_path / "out"), "--no-overlay"])
    if r.exit_code != 0 and "not installed" in r.output:
        pytest.skip(r.output)
    assert r.exit_code == 0, r.output
    run = json.loads((tmp_path / "out" / "segments.json").read_text())
    lm = read_label_map(tmp_path / "out" / "labels" / f"{frame.stem}.png")
    recs = run["frames"][0]["segments"]
    assert len(recs) > 10
    masks = check_records(recs, lm)
    assert masks and sum(len(v) for v in masks.values()) > 5
    # nearly every labelled pixel belongs to one segment's mask (the rest: regions of a
    # class no proposal of that class painted, labelled from the patches)
    covered = sum(int(m.sum()) for ms in masks.values() for m in ms)
    assert covered >= 0.5 * int((lm != IGNORE).sum())
