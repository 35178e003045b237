"""Inputs that share a stem get distinct, predictable output names (issue 29 item 3).

On today's main a folder with ``a.png`` and ``a.jpg`` (or ``anim.png`` and
``anim.webp``) gets one ``labels/a.png``, and segments.json lists both frames
pointing at it.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from moduseg.app.loop import run_segment
from moduseg.app.sources import frame_names, image_paths
from moduseg.config import ModuSegConfig
from moduseg.scale.shard import Shard
from moduseg.types import Proposals, Segment, SegmentationResult

NAMES = ("dark", "bright")


class BrightnessSeg:
    """Class 1 where the image is bright, 0 elsewhere: each frame's label map
    shows which input it came from."""

    def __init__(self):
        self.bank = SimpleNamespace(class_names=list(NAMES), background_index=None)
        self.full_config = ModuSegConfig()

    def __call__(self, image, timer=None):
        H, W = image.shape[:2]
        lm = (image.mean(-1) > 127).astype(np.uint8)
        masks = np.stack([lm == 0, lm == 1])
        props = Proposals(masks, np.ones(2), (H, W))
        segs = [Segment(i, i, NAMES[i], 1.0, 1.0, int(m.sum()), int(m.sum()))
                for i, m in enumerate(masks)]
        return SegmentationResult(lm, segs, {"total": 1.0}, list(NAMES), props)


def _write(path: Path, bright_rows: int, hw=(20, 24)):
    img = np.zeros((*hw, 3), np.uint8)
    img[:bright_rows] = 255
    if path.suffix == ".webp":
        Image.fromarray(img).save(path, lossless=True)
    else:
        cv2.imwrite(str(path), img)


def _check_run(out: Path, expected: dict[str, tuple[str, int]]):
    """``expected``: input file -> (output name, bright rows)."""
    d = json.loads((out / "segments.json").read_text())
    by_file = {f["file"]: f for f in d["frames"]}
    assert sorted(by_file) == sorted(expected)
    for file, (name, rows) in expected.items():
        f = by_file[file]
        assert f["name"] == name and f["label_png"] == f"labels/{name}.png", f
        lm = np.array(Image.open(out / f["label_png"]))
        assert int(lm[:, 0].sum()) == rows, (file, name)          # the right input's labels
        assert (out / "overlays" / f"{name}.jpg").is_file()
    assert len(list((out / "labels").iterdir())) == len(expected)


@pytest.mark.parametrize("files", [
    {"a.png": 3, "a.jpg": 11},
    {"anim.png": 5, "anim.webp": 9},
    {"a.png": 2, "a.jpg": 4, "a.png.png": 6, "b.png": 8},
])
def test_same_stem_inputs_get_distinct_outputs_and_segments_json_points_right(tmp_path, files):
    src = tmp_path / "in"
    src.mkdir()
    for name, rows in files.items():
        _write(src / name, rows)
    out = tmp_path / "out"
    s = run_segment(BrightnessSeg(), str(src), out, progress=False)
    assert s.frames == len(files)
    names = dict(zip(sorted(files), frame_names(sorted(src / f for f in files))))
    _check_run(out, {f: (names[f], rows) for f, rows in files.items()})


def test_the_naming_rule():
    assert frame_names(["a.png", "b.jpg"]) == ["a", "b"]                   # no clash: stems
    assert frame_names(["a.jpg", "a.png", "b.png"]) == ["a.jpg", "a.png", "b"]
    assert frame_names(["A.png", "a.jpg"]) == ["A.png", "a.jpg"]           # case-blind disks
    # a clash left after the full names: numbered in folder order
    assert frame_names(["a.jpg", "a.png", "a.png.png"]) == ["a.jpg", "a.png", "a.png~2"]
    assert frame_names(["x/anim.png", "x/anim.webp"]) == ["anim.png", "anim.webp"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "A", "a.png", "a.jpg", "b", "a~2", "x.y"]),
                          st.sampled_from([".png", ".jpg", ".PNG", ".webp"])),
                min_size=1, max_size=8, unique=True))
def test_names_are_distinct_even_on_a_case_blind_disk(parts):
    files = sorted(stem + ext for stem, ext in parts)
    if len({f.casefold() for f in files}) < len(files):
        return                                  # two such files cannot coexist there anyway
    names = frame_names(files)
    assert len({n.casefold() for n in names}) == len(names)
    assert frame_names(files) == names                                     # deterministic


def test_shards_and_max_frames_give_every_file_the_names_of_the_whole_folder(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.jpg", "a.png", "b.png", "c.png", "c.webp"):
        _write(src / name, 2)
    whole = {p.name: n for _, p, n in image_paths(str(src))}
    assert whole == {"a.jpg": "a.jpg", "a.png": "a.png", "b.png": "b", "c.png": "c.png",
                     "c.webp": "c.webp"}
    for i in range(3):
        for _, p, n in image_paths(str(src), shard=Shard(i, 3)):
            assert whole[p.name] == n
    assert [n for _, _, n in image_paths(str(src), max_frames=1)] == ["a.jpg"]
