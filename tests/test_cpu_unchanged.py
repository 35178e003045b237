"""CPU behaviour pinned: label maps byte-identical to those recorded before the
assembly refactor (#17), for the ``paper`` recipe and for the ``default`` preset
as it stood then, written out here as a frozen configuration (the preset's
values may move; this test pins the code path, not the preset).

A small bank (8 CamVid train frames) and 3 val frames, built and segmented
through ``moduseg.build`` with ``backend="cpu"``.
"""

import hashlib

import numpy as np
import pytest

from moduseg.config import BankConfig, ModuSegConfig, RuntimeConfig

# the default preset of commit bc42de1, frozen
FROZEN_DEFAULT = ModuSegConfig(
    bank=BankConfig(granularity="patch", purification="none", min_area=0,
                    outlier_fraction=0.0, patch_purity=0.75, patches_per_region=8,
                    patch_fallback_purity=0.4),
    runtime=RuntimeConfig(assignment="patch_vote", top_k=10, unassigned="nearest",
                          index="ivf", refine_radius=8),
    preset="frozen-default")

CONFIGS = {"paper": lambda: ModuSegConfig(preset="paper"), "frozen-default": lambda: FROZEN_DEFAULT}

# sha256 of the uint8 label maps of the 3 val frames, recorded at bc42de1
EXPECTED = {
    "paper": ['97102af2710acc32', '5f369084134036b3', '5b4d220a41dfe3cf'],
    "frozen-default": ['3c1bd5b6338bfc56', '0314ef507c91de46', 'e4cb67ce112c37ab'],
}


def _frames(shared_data):
    from moduseg.bank.datasets import camvid
    train = camvid(shared_data / "camvid", "train")
    train.samples = train.samples[::45][:8]
    val = camvid(shared_data / "camvid", "val")
    val.samples = val.samples[5::40][:3]
    return train, val


def label_map_hashes(shared_data, name: str) -> list[str]:
    from moduseg.bank.builder import build_bank
    cfg = CONFIGS[name]()
    train, val = _frames(shared_data)
    from moduseg.build import assemble, build_models
    backbone, proposer = build_models(cfg, backend="cpu")
    bank = build_bank(train, backbone, cfg.bank, config_record=cfg.to_dict())
    seg = assemble(cfg, bank, backend="cpu", backbone=backbone, proposer=proposer)
    out = []
    for s in val:
        lm = np.ascontiguousarray(seg(s.image()).label_map, np.uint8)
        out.append(hashlib.sha256(lm.tobytes() + str(lm.shape).encode()).hexdigest()[:16])
    return out


@pytest.mark.realdata
@pytest.mark.models
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_cpu_label_maps_unchanged(shared_data, name):
    from moduseg.errors import ModuSegError
    try:
        got = label_map_hashes(shared_data, name)
    except ModuSegError as e:
        pytest.skip(f"default models not installed ({e}); run 'moduseg models pull'")
    assert got == EXPECTED[name]


if __name__ == "__main__":
    from pathlib import Path
    data = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    for n in sorted(CONFIGS):
        print(n, label_map_hashes(data, n))
