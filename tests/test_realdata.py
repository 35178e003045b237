"""Real-data regression gates: CamVid with the embedded default models.

A bank from 40 train frames (every ninth), then 10 val frames end to end (every
tenth frame, so the scenes differ). Floors sit a few points under what was
measured (README, "Regression gates"); they catch a broken pipeline, not
noise.
"""

import numpy as np
import pytest

from moduseg.bank.builder import build_bank
from moduseg.bank.datasets import camvid
from moduseg.config import preset
from moduseg.evaluate import Evaluator
from moduseg.runtime.pipeline import Segmenter

FLOORS = {"paper": 17.0, "default": 37.0}


def _models():
    from moduseg.errors import ModuSegError
    from moduseg.models import load_default_backbone, load_default_proposer
    try:
        return load_default_backbone, load_default_proposer
    except ModuSegError as e:  # pragma: no cover - import-time only
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def camvid_data(shared_data):
    train = camvid(shared_data / "camvid", "train")
    train.samples = train.samples[::9][:40]      # consecutive frames repeat one scene
    val = camvid(shared_data / "camvid", "val")
    val.samples = val.samples[::10][:10]
    return train, val


@pytest.mark.realdata
@pytest.mark.models
@pytest.mark.parametrize("name", ["paper", "default"])
def test_camvid_miou_stays_above_its_floor(camvid_data, name):
    from moduseg.errors import ModuSegError
    from moduseg.models import load_default_backbone, load_default_proposer

    cfg = preset(name)
    try:
        backbone = load_default_backbone(**cfg.backbone_options())
        proposer = load_default_proposer(**cfg.proposer_options())
    except ModuSegError as e:
        pytest.skip(f"default models not installed ({e}); run 'moduseg models pull'")
    train, val = camvid_data
    bank = build_bank(train, backbone, cfg.bank, config_record=cfg.to_dict())
    seg = Segmenter(backbone, proposer, bank, cfg)
    ev = Evaluator(bank.class_names)
    for s in val:
        ev.add(seg(s.image()).label_map, s.label())
    miou = ev.scores().miou
    print(f"{name}: CamVid 40 train -> 10 val mIoU {miou:.1f}")
    assert miou >= FLOORS[name], f"{name} preset fell to {miou:.1f} mIoU (floor {FLOORS[name]})"
