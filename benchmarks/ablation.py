"""Quality ablation on CamVid val: the paper preset, each change on its own, the default.

Backbone features of every train and val frame and the proposer's masks of
every val frame are computed once with the embedded default models (cached
in ``--cache``); each row then builds its bank and labels val through the
package's own ``image_vectors`` / ``assign``, exactly as ``moduseg bank
build`` + ``moduseg eval`` with the row's ``--preset``/``--set`` flags would.

    python benchmarks/ablation.py                     # every row, markdown table
    python benchmarks/ablation.py --row "paper"       # one row
"""

from __future__ import annotations

import argparse
import json
import pickle
import time
from pathlib import Path

import numpy as np

from moduseg.bank.builder import finish_vectors, image_vectors
from moduseg.bank.datasets import camvid
from moduseg.config import preset
from moduseg.evaluate import Evaluator
from moduseg.io import atomic_path
from moduseg.runtime.assemble import build_index
from moduseg.runtime.pipeline import assign, class_prior
from moduseg.settings import parse_overrides
from moduseg.types import FeatureMap, Proposals

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "camvid"

# (row name, preset, --set overrides); each row changes one thing against its base
ROWS = [
    ("paper", "paper", []),
    ("paper + unassigned=nearest", "paper", ["runtime.unassigned='nearest'"]),
    ("paper + adaptive purification", "paper", ["bank.purification='adaptive'"]),
    ("paper + no purification", "paper", ["bank.purification='none'"]),
    ("paper + no outlier rejection", "paper", ["bank.outlier_fraction=0.0"]),
    ("paper + one vector per component", "paper",
     ["bank.granularity='component'", "bank.purification='adaptive'", "bank.min_area=100",
      "bank.component_min_area=100"]),
    ("paper + similarity-weighted, class-balanced vote", "paper", ["runtime.voting='weighted'"]),
    ("paper + patch vote", "paper", ["runtime.assignment='patch_vote'", "runtime.top_k=10"]),
    ("paper + patch bank (pooled queries)", "paper",
     ["bank.granularity='patch'", "bank.purification='none'", "bank.min_area=0",
      "bank.outlier_fraction=0.0", "bank.patch_purity=0.75"]),
    ("default - patch vote (pooled queries)", "default", ["runtime.assignment='pooled'"]),
    ("default - nearest fill", "default", ["runtime.unassigned='ignore'"]),
    ("default - thin-region fallback", "default", ["bank.patch_fallback_purity=1.0"]),
    ("default - guided refinement", "default", ["runtime.refine_radius=0"]),
    ("default, exact search", "default", ["runtime.index='flat'"]),
    ("default", "default", []),
]


def cache_inputs(cache: Path, home=None):
    """Features of train + val and proposals of val, computed once.

    The val proposals are recomputed (features kept) when the default
    proposer's settings differ from those they were made with.
    """
    from moduseg.runtime.assemble import build_backbone, build_proposer

    cache.mkdir(parents=True, exist_ok=True)
    path = cache / "camvid_inputs.pkl"
    proposer = build_proposer(preset("default"), "cpu", home)
    if path.is_file():
        out = pickle.loads(path.read_bytes())
        if out.get("proposer") == proposer.settings:
            return out
        print("  default proposer changed: recomputing the val proposals", flush=True)
        out["val"] = [(f, g, lab, pack_proposals(proposer(s.image())))
                      for (f, g, lab, _), s in zip(out["val"], camvid(DATA, "val"))]
    else:
        backbone = build_backbone(preset("default"), "cpu", home)
        out = {"identity": backbone.identity}
        for split in ("train", "val"):
            ds = camvid(DATA, split)
            rows = []
            for i, s in enumerate(ds):
                image = s.image()
                f = backbone(image)
                p = pack_proposals(proposer(image)) if split == "val" else None
                rows.append((f.features.astype(np.float16), f.geometry, s.label(), p))
                if i % 50 == 0:
                    print(f"  {split} {i}/{len(ds)}", flush=True)
            out[split] = rows
    out["proposer"] = proposer.settings
    with atomic_path(path) as tmp:
        tmp.write_bytes(pickle.dumps(out))
    return out


def pack_proposals(p: Proposals):
    """Proposals as cached: masks bit-packed along rows, their grid size, scores."""
    return np.packbits(p.masks, axis=-1), p.mask_hw, p.scores


def proposals_of(packed, image_hw) -> Proposals:
    bits, hw, scores = packed
    masks = np.unpackbits(bits, axis=-1, count=hw[1]).astype(bool)
    return Proposals(masks.reshape(len(scores), *hw), scores, image_hw)


def bank_from_rows(rows, cfg, names, background_index, identity, image_ids=None):
    """A bank from cached (features, geometry, label, _) rows, as ``bank build`` makes it."""
    t0 = time.perf_counter()
    vecs, labs = [], []
    image_ids = image_ids or [""] * len(rows)
    for feats, geo, label, _ in rows:
        v, l, _ = image_vectors(FeatureMap(feats.astype(np.float32), geo), label, len(names),
                                cfg.bank)
        vecs.append(v)
        labs.append(l)
    v, l = np.concatenate(vecs), np.concatenate(labs)
    ids = np.repeat(np.asarray(image_ids), [len(x) for x in labs])
    bank = finish_vectors(v, l, ids, names, identity, background_index, cfg.bank)
    return bank, time.perf_counter() - t0


def label_rows(rows, bank, cfg):
    """Label cached (row, sample) pairs through ``assign``, as ``eval`` does.

    Returns the Evaluator and the post-backbone milliseconds per frame.
    """
    index = build_index(bank, cfg, "cpu")
    prior = class_prior(bank)
    ev = Evaluator(bank.class_names)
    ms = []
    rt = cfg.runtime
    for (feats, geo, label, packed), sample in rows:
        fmap = FeatureMap(feats.astype(np.float32), geo)
        t = time.perf_counter()
        props = None if packed is None else proposals_of(packed, geo.image_hw)
        res = assign(fmap, props, bank, index, rt, prior=prior,
                     image=sample.image() if rt.refine_radius > 0 else None)
        ms.append((time.perf_counter() - t) * 1e3)
        ev.add(res.label_map, label)
    return ev, ms


def evaluate_row(inputs, preset_name: str, sets: list[str]) -> dict:
    cfg = preset(preset_name).with_overrides(**parse_overrides(sets))
    if cfg.backbone_options() or not cfg.needs_proposer:
        # the val cache holds final-block features at the default size and SAM proposals only
        raise SystemExit(f"{preset_name} {sets}: backbone options or the proposer-free mode "
                         f"need benchmarks/cross_sequence.py (it caches per setting)")
    names = camvid(DATA, "val").class_names
    bank, build_s = bank_from_rows(inputs["train"], cfg, names, None, inputs["identity"])
    ev, ms = label_rows(list(zip(inputs["val"], camvid(DATA, "val"))), bank, cfg)
    sc = ev.scores()
    return {"mIoU": round(sc.miou, 2), "bank_vectors": len(bank),
            "post_backbone_ms": round(float(np.median(ms)), 1), "bank_build_s": round(build_s, 1),
            "per_class_iou": sc.to_json()["per_class_iou"]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--row", action="append", help="only these rows (by name)")
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "moduseg" / "ablation"))
    ap.add_argument("--home", default=None)
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    args = ap.parse_args(argv)
    if not DATA.is_dir():
        raise SystemExit(f"CamVid not found at {DATA}")
    inputs = cache_inputs(Path(args.cache), args.home)
    rows = [r for r in ROWS if not args.row or r[0] in args.row]
    results = []
    print("| configuration | flags | val mIoU | bank vectors | post-backbone ms |")
    print("|---|---|---|---|---|")
    for name, base, sets in rows:
        r = evaluate_row(inputs, base, sets)
        flags = " ".join([f"--preset {base}"] + [f'--set "{s}"' for s in sets])
        results.append({"row": name, "flags": flags, **r})
        print(f"| {name} | `{flags}` | {r['mIoU']:.1f} | {r['bank_vectors']} | "
              f"{r['post_backbone_ms']:.0f} |", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
