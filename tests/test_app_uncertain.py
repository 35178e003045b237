"""``segment --save-uncertain``: which frames are kept, and that ``bank add`` loads them."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

from moduseg.app.uncertain import MARKER, UncertainFrames, UncertainRule
from moduseg.bank.builder import build_bank
from moduseg.bank.store import load_bank, save_bank
from moduseg.cli import cli
from moduseg.config import BankConfig, RuntimeConfig
from moduseg.errors import InputError, OutputError
from moduseg.io import read_label_map
from moduseg.runtime.index import bank_index
from moduseg.runtime.pipeline import assign
from moduseg.types import UNKNOWN

from synthetic import PALETTE, ColourBackbone, dataset, gt_proposals, scene
from test_bank_edit import colour_models  # noqa: F401 - fixture

CFG = BankConfig(min_area=0, erosion_iterations=0, outlier_fraction=0.0)


def _stranger_frame():
    _, label = scene(100, n_classes=4)
    label[52:84, 74:118] = 4            # colour 4: no class of the bank
    return PALETTE[label], label


def test_uncertain_frames_are_kept_and_bank_add_loads_them(tmp_path, colour_models):
    bank = build_bank(dataset(20, n_classes=4), ColourBackbone(n_classes=5), CFG)
    save_bank(bank, tmp_path / "bank.npz")
    rt = RuntimeConfig(min_area=0, min_objectness=0.0, top_k=3, unknown=0.02)
    sink = UncertainFrames(tmp_path / "hard", UncertainRule(unknown_share=0.05))
    kept_frame, label = _stranger_frame()
    plain = PALETTE[scene(101, n_classes=4)[1]]
    for i, (img, lab) in enumerate([(kept_frame, label), (plain, scene(101, n_classes=4)[1])]):
        res = assign(ColourBackbone()(img), gt_proposals(lab), bank, bank_index(bank, "flat"),
                     rt)
        sink.add(None, SimpleNamespace(name=f"f{i}", index=i, image=img), res)
    sink.finish(None)
    hard = tmp_path / "hard"
    assert sink.kept == 1 and (hard / "images" / "f0.png").is_file()
    assert not (hard / "images" / "f1.png").exists()
    why = json.loads((hard / "f0.json").read_text())
    assert why["reasons"] == ["unknown"] and why["unknown_share"] >= 0.05
    unknown = read_label_map(hard / "unknown" / "f0.png") == 255
    assert unknown[label == 4].mean() > 0.9
    labels = read_label_map(hard / "labels" / "f0.png")
    assert UNKNOWN not in labels and (labels[unknown] == 255).all()
    # a person paints the unknown pixels with a new class and adds the frame
    labels[unknown] = 4
    from moduseg.io import write_label_png
    write_label_png(hard / "labels" / "f0.png", labels)
    (hard / "classes.txt").write_text((hard / "classes.txt").read_text() + "kite\n")
    r = CliRunner().invoke(cli, ["bank", "add", str(tmp_path / "bank.npz"), "--dataset",
                                 "folder", "--root", str(hard / "images"), "--labels",
                                 str(hard / "labels"), "--classes", str(hard / "classes.txt"),
                                 "--out", str(tmp_path / "new.npz")])
    assert r.exit_code == 0, r.output
    new = load_bank(tmp_path / "new.npz")
    assert new.class_names[-1] == "kite" and new.class_counts()["kite"] >= 1
    res = assign(ColourBackbone()(kept_frame), gt_proposals(label), new,
                 bank_index(new, "flat"), RuntimeConfig(min_area=0, min_objectness=0.0, top_k=1))
    assert (res.label_map[label == 4] == new.class_names.index("kite")).mean() > 0.9


def test_low_confidence_frames_are_kept_too():
    from moduseg.types import Segment, SegmentationResult
    lm = np.zeros((10, 10), np.uint8)
    segs = [Segment(0, 1, "a", 0.3, 1.0, 60, painted_pixels=60),
            Segment(1, 2, "b", 0.9, 1.0, 40, painted_pixels=40)]
    res = SegmentationResult(lm, segs, {}, ["a", "b", "c"])
    why = UncertainRule(unknown_share=0.05, low_confidence_share=0.5).why(res)
    assert why["reasons"] == ["low_confidence"] and why["low_confidence_share"] == 0.6
    assert UncertainRule(low_confidence_share=0.7).why(res) is None
    with pytest.raises(InputError, match="unknown share"):
        UncertainRule(unknown_share=2.0)


def test_a_folder_of_someone_elses_files_is_refused(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(OutputError, match="not empty"):
        UncertainFrames(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    UncertainFrames(tmp_path / "ours")
    assert (tmp_path / "ours" / MARKER).is_file()
    UncertainFrames(tmp_path / "ours")                    # ours: reused
