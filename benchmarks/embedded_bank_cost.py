"""What shrinking the embedded default bank costs, on a quick cross-sequence fold.

The embedded bank (``moduseg bank build-default``) stores int8 codes and, when
the file would still exceed its size limit, keeps an evenly spaced subset of
the vectors. This script measures both against the plain float16 bank on one
fold: the bank is built (default preset) from every CamVid frame *not* in the
held-out sequence and evaluated on the held-out sequence's frames (default
``0001TP``: 62 train frames), all variants on the same cached backbone
features and proposals. It is a quick single fold, not the leave-one-sequence-
out protocol.

    python benchmarks/embedded_bank_cost.py --cache CACHE_DIR --keep 0.8
"""

from __future__ import annotations

import argparse
import json
import pickle
import tempfile
import time
from pathlib import Path

import numpy as np

from moduseg.bank.builder import image_vectors, spread
from moduseg.bank.datasets import camvid
from moduseg.bank.quantize import dequantize_int8, quantize_int8
from moduseg.bank.store import save_bank
from moduseg.config import preset
from moduseg.evaluate import Evaluator
from moduseg.io import atomic_path
from moduseg.runtime.index import build_index
from moduseg.runtime.pipeline import assign, class_prior
from moduseg.types import Bank, FeatureMap, Proposals

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "camvid"


def pack(p: Proposals):
    return np.packbits(p.masks, axis=-1), p.mask_hw, p.scores


def unpack(packed, image_hw) -> Proposals:
    bits, hw, scores = packed
    masks = np.unpackbits(bits, axis=-1, count=hw[1]).astype(bool)
    return Proposals(masks.reshape(len(scores), *hw), scores, image_hw)


def cache_inputs(cache: Path, holdout: str, root: Path, home=None) -> dict:
    """Features of every frame, proposals of the held-out frames (default preset's models)."""
    from moduseg.models import load_default_backbone, load_default_proposer

    path = cache / f"inputs-{holdout}.pkl"
    if path.is_file():
        return pickle.loads(path.read_bytes())
    cfg = preset("default")
    backbone = load_default_backbone(home=home, providers="cpu", **cfg.backbone_options())
    proposer = load_default_proposer(home=home, providers="cpu", **cfg.proposer_options())
    rows = []
    samples = [s for split in ("train", "val") for s in camvid(root, split)]
    for i, s in enumerate(samples):
        image = s.image()
        f = backbone(image)
        p = pack(proposer(image)) if s.image_id.startswith(holdout) else None
        rows.append((s.image_id, s.image_path, f.features.astype(np.float16), f.geometry,
                     s.label(), p))
        if i % 50 == 0:
            print(f"  features {i}/{len(samples)}", flush=True)
    out = {"identity": backbone.identity, "rows": rows}
    cache.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_bytes(pickle.dumps(out))
    return out


def fold_bank(inputs, holdout: str, cfg) -> Bank:
    names = camvid(DATA, "val").class_names
    vecs, labs, ids = [], [], []
    for image_id, _, feats, geo, label, _ in inputs["rows"]:
        if image_id.startswith(holdout):
            continue
        v, lab, _ = image_vectors(FeatureMap(feats.astype(np.float32), geo), label, len(names),
                                  cfg.bank)
        vecs.append(v)
        labs.append(lab)
        ids += [image_id] * len(lab)
    return Bank(np.concatenate(vecs).astype(np.float16), np.concatenate(labs), names,
                inputs["identity"], np.asarray(ids), None, config=cfg.to_dict())


def evaluate(inputs, holdout: str, bank: Bank, cfg) -> float:
    from moduseg.io import read_image

    index = build_index(bank.vectors, cfg.runtime.index, cfg.runtime.nprobe)
    prior = class_prior(bank)
    ev = Evaluator(bank.class_names)
    for image_id, image_path, feats, geo, label, packed in inputs["rows"]:
        if not image_id.startswith(holdout):
            continue
        res = assign(FeatureMap(feats.astype(np.float32), geo), unpack(packed, geo.image_hw),
                     bank, index, cfg.runtime, prior=prior,
                     image=read_image(image_path) if cfg.runtime.refine_radius > 0 else None)
        ev.add(res.label_map, label)
    return ev.scores().miou


def variant(bank: Bank, int8: bool, keep: float) -> Bank:
    idx = spread(np.arange(len(bank)), int(round(len(bank) * keep)))
    v = bank.vectors[idx]
    if int8:
        v = dequantize_int8(*quantize_int8(v))
    return Bank(v, bank.labels[idx], bank.class_names, bank.backbone, bank.image_ids[idx],
                None, config=bank.config)


def file_bytes(bank: Bank, int8: bool) -> int:
    with tempfile.TemporaryDirectory() as d:
        p = save_bank(bank, Path(d) / "b.npz", quantize="int8" if int8 else None,
                      compress=int8)
        return p.stat().st_size


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", required=True, help="folder for cached features and proposals")
    ap.add_argument("--holdout", default="0001TP", help="held-out sequence (file-name prefix)")
    ap.add_argument("--keep", type=float, action="append", default=[],
                    help="also measure int8 keeping this fraction of the vectors")
    ap.add_argument("--root", default=str(DATA), help="CamVid root")
    ap.add_argument("--home", default=None, help="model home")
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    inputs = cache_inputs(Path(args.cache), args.holdout, Path(args.root), args.home)
    print(f"inputs ready in {time.perf_counter() - t0:.0f} s", flush=True)
    cfg = preset("default")
    full = fold_bank(inputs, args.holdout, cfg)
    rows = [("float16 (as `bank build` writes)", False, 1.0), ("int8", True, 1.0)]
    rows += [(f"int8, {k:.0%} of the vectors", True, k) for k in args.keep]
    rows += [(f"float16, {k:.0%} of the vectors", False, k) for k in args.keep]
    results = []
    n_eval = sum(r[0].startswith(args.holdout) for r in inputs["rows"])
    print(f"bank from every frame but {args.holdout} ({len(full)} vectors); "
          f"evaluated on the {n_eval} {args.holdout} frames")
    print("| bank | vectors | file MB | mIoU |\n|---|---|---|---|")
    for name, int8, keep in rows:
        b = variant(full, int8, keep)
        r = {"bank": name, "vectors": len(b), "file_bytes": file_bytes(b, int8),
             "mIoU": round(evaluate(inputs, args.holdout, b, cfg), 2)}
        results.append(r)
        print(f"| {name} | {r['vectors']} | {r['file_bytes'] / 1e6:.2f} | {r['mIoU']:.2f} |",
              flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
