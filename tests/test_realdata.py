"""Real-data regression gates: CamVid across sequences with the embedded default models.

A bank from 40 frames of sequences 0006R0 and 0016E5 (every eighth train
frame of them), then 10 frames of sequence 0001TP end to end (every sixth),
which the bank has never seen: the same question as the leave-one-sequence-out
protocol (python -m benchmarks cross-sequence), at CI cost. Floors sit a few points
under what was measured (docs/results.md, "Regression gates"); they catch a broken
pipeline, not noise.
"""

import numpy as np
import pytest

from moduseg.bank.builder import build_bank
from moduseg.bank.datasets import camvid
from moduseg.config import preset
from moduseg.evaluate import Evaluator
from moduseg.runtime.pipeline import Segmenter

# fast and accurate measured 2026-12-07 (issue 27): 42.3 and 42.7 (IVF search) on this set
FLOORS = {"paper": 12.0, "default": 39.0, "fast": 37.0, "accurate": 37.0}


def _models():
    from moduseg.errors import ModuSegError
    from moduseg.build import load_default_backbone, load_default_proposer
    try:
        return load_default_backbone, load_default_proposer
    except ModuSegError as e:  # pragma: no cover - import-time only
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def camvid_data(shared_data):
    train = camvid(shared_data / "camvid", "train")
    held_out = [s for s in train.samples if s.image_id.startswith("0001TP")]
    others = [s for s in train.samples if not s.image_id.startswith("0001TP")]
    # consecutive frames repeat one scene: spread both sets over their sequences
    train.samples = others[::8][:40]
    val = camvid(shared_data / "camvid", "train")
    val.samples = held_out[::6][:10]
    return train, val


@pytest.mark.realdata
@pytest.mark.models
@pytest.mark.parametrize("name", ["paper", "default", "fast", "accurate"])
def test_camvid_miou_stays_above_its_floor(camvid_data, name):
    from moduseg.errors import ModuSegError
    from moduseg.build import load_default_backbone, load_default_proposer

    cfg = preset(name)
    try:
        backbone = load_default_backbone(**cfg.backbone_options())
        proposer = load_default_proposer(**cfg.proposer_options()) \
            if cfg.needs_proposer else None
    except ModuSegError as e:
        pytest.skip(f"default models not installed ({e}); run 'moduseg models pull'")
    train, val = camvid_data
    bank = build_bank(train, backbone, cfg.bank, config_record=cfg.to_dict())
    seg = Segmenter(backbone, proposer, bank, cfg)
    ev = Evaluator(bank.class_names)
    for s in val:
        ev.add(seg(s.image()).label_map, s.label())
    miou = ev.scores().miou
    print(f"{name}: CamVid 40 frames of 0006R0+0016E5 -> 10 of 0001TP mIoU {miou:.1f}")
    assert miou >= FLOORS[name], f"{name} preset fell to {miou:.1f} mIoU (floor {FLOORS[name]})"
