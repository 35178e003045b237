"""``unknown``, ``--save-uncertain`` and hot-swap through the segment app (run_segment)."""

import json

import numpy as np

from moduseg.app.loop import run_segment
from moduseg.app.uncertain import UncertainFrames
from moduseg.bank.builder import build_bank
from moduseg.bank.edit import drop_class
from moduseg.bank.store import save_bank
from moduseg.config import BankConfig, ModuSegConfig, RuntimeConfig
from moduseg.io import read_label_map, write_image
from moduseg.render import UNKNOWN_COLOUR
from moduseg.app.hotswap import BankWatcher
from moduseg.runtime.pipeline import Segmenter
from moduseg.types import UNKNOWN

from synthetic import PALETTE, ColourBackbone, dataset, gt_proposals, scene

CFG = BankConfig(min_area=0, erosion_iterations=0, outlier_fraction=0.0)


class LabelProposer:
    """Ground-truth regions of whichever frame comes (looked up by its colours)."""

    name = "gt"

    def __call__(self, image):
        label = np.zeros(image.shape[:2], np.uint8)
        for c in range(1, len(PALETTE)):
            label[(image == PALETTE[c]).all(-1)] = c
        return gt_proposals(label)


def _frames(folder):
    folder.mkdir()
    _, with_stranger = scene(100, n_classes=4)
    for q in range(4):
        y0, x0 = (q // 2) * 48, (q % 2) * 64
        if not with_stranger[y0:y0 + 48, x0:x0 + 64].any():
            with_stranger[y0 + 8:y0 + 40, x0 + 10:x0 + 54] = 4
            break
    plain = scene(101, n_classes=4)[1]
    write_image(folder / "a.png", PALETTE[with_stranger])
    write_image(folder / "b.png", PALETTE[plain])
    return with_stranger, plain


def _segmenter(bank, unknown):
    rt = RuntimeConfig(min_area=0, min_objectness=0.0, top_k=3, unknown=unknown)
    return Segmenter(ColourBackbone(), LabelProposer(), bank,
                     ModuSegConfig(runtime=rt, preset="custom"), parallel=False)


def test_unknown_in_labels_segments_json_overlay_and_index(tmp_path):
    bank = build_bank(dataset(20, n_classes=4), ColourBackbone(n_classes=5), CFG)
    stranger, plain = _frames(tmp_path / "in")
    sink = UncertainFrames(tmp_path / "hard")
    out = tmp_path / "out"
    run_segment(_segmenter(bank, 0.02), str(tmp_path / "in"), out, progress=False,
                extra_sinks=[sink])
    lm = read_label_map(out / "labels" / "a.png")
    assert (lm[stranger == 4] == UNKNOWN).mean() > 0.9
    rec = json.loads((out / "segments.json").read_text())
    frame = rec["frames"][0]
    assert frame["unknown_pixels"] > 0 and rec["unknown_pixels"] == frame["unknown_pixels"]
    assert any(s["class_name"] == "unknown" and s["class_id"] == UNKNOWN
               for s in frame["segments"])
    assert rec["frames"][1]["unknown_pixels"] == 0
    html = (out / "index.html").read_text()
    assert "of the run was <b>unknown</b>" in html
    # the overlay shows unknown in its own colour
    import cv2
    ov = cv2.cvtColor(cv2.imread(str(out / "overlays" / "a.jpg")), cv2.COLOR_BGR2RGB)
    legend = ov[stranger.shape[0]:]
    close = np.abs(legend.astype(int) - np.array(UNKNOWN_COLOUR)).sum(-1) < 40
    assert close.sum() > 20                                      # the legend swatch
    assert sink.kept == 1 and (tmp_path / "hard" / "images" / "a.png").is_file()


def test_unknown_off_writes_what_it_wrote_before(tmp_path):
    bank = build_bank(dataset(20, n_classes=4), ColourBackbone(n_classes=5), CFG)
    _frames(tmp_path / "in")
    run_segment(_segmenter(bank, 0.0), str(tmp_path / "in"), tmp_path / "out", progress=False)
    rec = json.loads((tmp_path / "out" / "segments.json").read_text())
    assert "unknown_pixels" not in rec and "unknown_pixels" not in rec["frames"][0]
    assert "unknown" not in (tmp_path / "out" / "index.html").read_text()
    assert UNKNOWN not in read_label_map(tmp_path / "out" / "labels" / "a.png")


def test_a_bank_swapped_mid_run_is_used_from_the_next_frame(tmp_path):
    bank = build_bank(dataset(20, n_classes=4), ColourBackbone(n_classes=5), CFG)
    path = save_bank(bank, tmp_path / "bank.npz")
    _frames(tmp_path / "in")
    seg = _segmenter(bank, 0.0)
    msgs = []
    watcher = BankWatcher(path, seg, interval=0.0, report=msgs.append)
    real_poll, polls = watcher.poll, []

    def poll():                          # the file changes after the first frame
        if len(polls) == 1:
            save_bank(drop_class(bank, "class2"), tmp_path / "next.npz").replace(path)
        polls.append(1)
        return real_poll()
    watcher.poll = poll
    out = tmp_path / "out"
    run_segment(seg, str(tmp_path / "in"), out, progress=False, watcher=watcher)
    assert watcher.swaps == 1 and "now using it" in msgs[0]
    rec = json.loads((out / "segments.json").read_text())
    assert "class_names" not in rec["frames"][0]
    assert rec["frames"][1]["class_names"] == ["background", "class1", "class3"]
    assert rec["class_names"] == ["background", "class1", "class2", "class3"]
