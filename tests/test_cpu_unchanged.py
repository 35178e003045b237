"""CPU behaviour pinned: label maps byte-identical to those recorded before the
assembly refactor (#17), for the ``paper`` recipe and for the ``default`` preset
as it stood then, written out here as a frozen configuration (the preset's
values may move; this test pins the code path, not the preset), and for every
shipped preset file as main gave them before the options rewrite (#26).

A small bank (8 CamVid train frames) and 3 val frames, built and segmented
through ``moduseg.build`` with ``backend="cpu"``.
"""

import hashlib

import numpy as np
import pytest

from moduseg.config import BankConfig, ModuSegConfig, RuntimeConfig, preset

# the default preset of commit bc42de1, frozen
FROZEN_DEFAULT = ModuSegConfig(
    bank=BankConfig(granularity="patch", purification="none", min_area=0,
                    outlier_fraction=0.0, patch_purity=0.75, patches_per_region=8,
                    patch_fallback_purity=0.4),
    runtime=RuntimeConfig(assignment="patch_vote", top_k=10, unassigned="nearest",
                          index="ivf", refine_radius=8),
    preset="frozen-default")

CONFIGS = {"paper": lambda: ModuSegConfig(preset="paper"), "frozen-default": lambda: FROZEN_DEFAULT,
           "preset:paper": lambda: preset("paper"), "preset:default": lambda: preset("default"),
           "preset:fast": lambda: preset("fast"), "preset:accurate": lambda: preset("accurate")}

# sha256 of the uint8 label maps of the 3 val frames. paper and frozen-default were
# recorded at bc42de1 and no longer matched on main at 845ff69 (before #26: the v4
# normalisation and backbone commits moved them); all five re-recorded with the code of
# 845ff69, which the options rewrite (#26) reproduces byte for byte.
EXPECTED = {
    "paper": ['d4f08c76f1d4030c', 'c5f86a179ae2f235', 'c746d75b5df3deca'],
    "frozen-default": ['d99cb897b4c1e9b3', 'f321fb6ae216392a', 'd030a9a4ea08e4c7'],
    "preset:paper": ['d4f08c76f1d4030c', 'c5f86a179ae2f235', 'c746d75b5df3deca'],
    "preset:default": ['e8b37a1167a62967', 'b4a205cd5059dbe2', '83e8c9a95cf22588'],
    # fast re-recorded 2026-12-07 when its bank went to 16 patches a region (issue 27)
    "preset:fast": ['66fe551073eac8cc', '2fa8e0f080410911', '03c8182a643a48ef'],
    # accurate recorded 2026-12-07 when the preset was added (issue 27), re-recorded the
    # same day when its search went from exact ('flat') to IVF
    "preset:accurate": ['aba00597cae2491b', '63ff768b054f1dcc', '82faa9b48440da16'],
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
@pytest.mark.slow
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
