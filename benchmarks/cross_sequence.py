"""Leave-one-sequence-out quality on CamVid train + val (the headline protocol).

CamVid val is one sequence (``0016E5``) that also fills 204 of the 367 train
frames, so val mostly measures how well a bank finds near-duplicates of
itself. This protocol pools train + val (468 frames), and for each sequence
(file-name prefix ``0001TP``, ``0006R0``, ``0016E5``) builds the bank from
the other two and labels the held-out one. It reports each fold's mIoU and
per-class IoU, the mean of the three fold mIoUs (the headline) and the mIoU
of the pooled confusion matrix.

Backbone features and proposals of every frame are cached on disk (one file
per frame, in a folder keyed by the model files and the settings that change
them: backbone identity and options, proposer settings), so a second row or
a repeat costs only bank building and retrieval. Banks are built and frames
labelled through the package's own ``image_vectors`` / ``assign`` (via
``python -m benchmarks ablation``), exactly what ``moduseg bank build`` + ``moduseg
eval`` with the same ``--preset`` / ``--set`` flags do.

    python -m benchmarks cross-sequence                          # default preset
    python -m benchmarks cross-sequence --preset paper
    python -m benchmarks cross-sequence --row "k=20" --set runtime.top_k=20
    python -m benchmarks cross-sequence --preset default --out loso.json --md loso.md
    python -m benchmarks cross-sequence --every 3 --set bank.augment_flip=True   # screening

``--every N`` keeps every n-th frame (bank and evaluation alike) to screen a
setting cheaply; the extra views of ``bank.augment_*`` are cached per view.

``--dataset coco128`` runs the coco128-seg 4-fold check instead (bank from 96
images, 32 evaluated per fold, 80 classes + background).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import numpy as np

from . import ablation
from moduseg.bank.datasets import camvid, yolo_seg
from moduseg.config import preset
from moduseg.evaluate import Evaluator
from moduseg.owned import atomic_path
from moduseg.settings import parse_overrides

DATA = ablation.DATA.parent
SEQUENCES = ("0001TP", "0006R0", "0016E5")
PROPOSER_FREE = ("fast",)


def samples(dataset: str):
    """(class names, background index, samples, fold of each sample)."""
    if dataset == "camvid":
        ss = list(camvid(DATA / "camvid", "train")) + list(camvid(DATA / "camvid", "val"))
        names, bg = camvid(DATA / "camvid", "val").class_names, None
        folds = [SEQUENCES.index(s.image_id.split("_")[0]) for s in ss]
        return names, bg, ss, folds, list(SEQUENCES)
    ds = yolo_seg(DATA / "coco128-seg", "train2017")
    ss = sorted(ds.samples, key=lambda s: s.image_id)
    return ds.class_names, ds.background_index, ss, [i % 4 for i in range(len(ss))], \
        [f"fold{i}" for i in range(4)]


def stored_as(bank, quantize: str | None):
    """The bank as a file stored with ``quantize`` would load (int8: the embedded bank's
    storage, codes with per-dimension scales, dequantised and re-normalised)."""
    if quantize is None:
        return bank
    import dataclasses

    from moduseg.bank.quantize import dequantize_int8, quantize_int8
    return dataclasses.replace(bank, vectors=dequantize_int8(*quantize_int8(bank.vectors)))


def run(dataset: str, preset_name: str, sets: list[str], cache: Path, home=None,
        save_bank_to: str | None = None, folds_too: bool = True,
        quantize: str | None = None, every: int = 1) -> dict:
    cfg = preset(preset_name).with_overrides(**parse_overrides(sets))
    names, bg, ss, folds, fold_names = samples(dataset)
    if every > 1:       # a screening subset: every n-th frame, for bank and evaluation alike
        ss, folds = ss[::every], folds[::every]
    rows, identity = ablation.cached_frames(ss, cfg, cache, cfg.needs_proposer, home)
    views = ablation.cached_views(ss, cfg, cache, home)
    pooled = Evaluator(names)
    out = {"dataset": dataset, "preset": preset_name, "sets": sets, "quantize": quantize,
           "every": every, "folds": []}
    for k, fold in enumerate(fold_names if folds_too else []):
        train = [r for r, f in zip(rows, folds) if f != k]
        train += [v for vs, f in zip(views, folds) if f != k for v in vs]
        test = [(r, s) for r, s, f in zip(rows, ss, folds) if f == k]
        bank, build_s = ablation.bank_from_rows(train, cfg, names, bg, identity)
        bank = stored_as(bank, quantize)
        ev, ms = ablation.label_rows(test, bank, cfg)
        pooled.cm += ev.cm
        pooled.missed += ev.missed
        sc = ev.scores()
        out["folds"].append({"held_out": fold, "bank_frames": len(train),
                             "eval_frames": len(test), "bank_vectors": len(bank),
                             "bank_build_s": round(build_s, 1),
                             "post_backbone_ms": round(float(np.median(ms)), 1),
                             "mIoU": round(sc.miou, 2),
                             "per_class_iou": {n: (None if np.isnan(v) else round(100 * v, 2))
                                               for n, v in zip(names, sc.iou)}})
        print(f"  held out {fold}: mIoU {sc.miou:.2f} (bank {len(bank)} vectors "
              f"from {len(train)} frames)", flush=True)
    if save_bank_to:
        # the bank of every frame, as 'moduseg bank build' with these flags makes it
        from moduseg.bank.store import save_bank
        bank, _ = ablation.bank_from_rows(
            rows + [v for vs in views for v in vs], cfg, names, bg, identity,
            [s.image_id for s in ss] + [s.image_id for s, vs in zip(ss, views) for _ in vs])
        bank.config = cfg.to_dict()
        path = save_bank(bank, save_bank_to)
        out["full_bank"] = {"path": str(path), "vectors": len(bank), "dim": bank.dim,
                            "file_mb": round(path.stat().st_size / 1e6, 2)}
        print(f"  bank of all {len(rows)} frames: {len(bank)} x {bank.dim} "
              f"-> {path} ({out['full_bank']['file_mb']} MB)", flush=True)
    if not folds_too:
        return out
    ps = pooled.scores()
    out["mean_fold_mIoU"] = round(float(np.mean([f["mIoU"] for f in out["folds"]])), 2)
    out["pooled_mIoU"] = round(ps.miou, 2)
    out["pooled_per_class_iou"] = {n: (None if np.isnan(v) else round(100 * v, 2))
                                   for n, v in zip(names, ps.iou)}
    return out


def markdown(results: list[dict]) -> str:
    if not results:
        return ""
    folds = [f["held_out"] for f in results[0]["folds"]]
    lines = ["| row | flags | " + " | ".join(folds) + " | **mean** | pooled | bank vectors |",
             "|---" * (len(folds) + 5) + "|"]
    for r in results:
        flags = " ".join([f"--preset {r['preset']}"] + [f'--set "{s}"' for s in r["sets"]])
        lines.append(f"| {r['row']} | `{flags}` | "
                     + " | ".join(f"{f['mIoU']:.1f}" for f in r["folds"])
                     + f" | **{r['mean_fold_mIoU']:.1f}** | {r['pooled_mIoU']:.1f} | "
                     + "/".join(str(f["bank_vectors"]) for f in r["folds"]) + " |")
    names = list(results[0]["pooled_per_class_iou"])
    if len(names) <= 12:
        lines += ["", "| row | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for r in results:
            lines.append(f"| {r['row']} (pooled) | " + " | ".join(
                "-" if r["pooled_per_class_iou"][n] is None
                else f"{r['pooled_per_class_iou'][n]:.1f}" for n in names) + " |")
    return "\n".join(lines) + "\n"


@click.command("cross-sequence")
@click.option("--dataset", type=click.Choice(["camvid", "coco128"]), default="camvid", show_default=True)
@click.option("--preset", "preset_name", default="default", show_default=True)
@click.option("--set", "sets", multiple=True, help="A setting as for 'moduseg bank build --set' (repeatable).")
@click.option("--row", default=None, help="Row name in the table.")
@click.option("--cache", type=click.Path(path_type=Path), default=ablation.CACHE, show_default=True,
              help="Per-frame feature and proposal cache.")
@click.option("--home", default=None, help="Model home.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Append the result to this JSON list.")
@click.option("--md", type=click.Path(path_type=Path), default=None, help="Write the markdown tables of --out here.")
@click.option("--quantize", type=click.Choice(["int8"]), default=None,
              help="Label with each fold's bank as stored int8 (the embedded bank's storage).")
@click.option("--save-bank", type=click.Path(path_type=Path), default=None,
              help="Also save the bank of all frames here (for 'moduseg bench video').")
@click.option("--bank-only", is_flag=True, help="With --save-bank: only build and save the bank, no folds.")
@click.option("--threads", type=int, default=1, show_default=True,
              help="BLAS/OpenMP/OpenCV threads (1: spinning workers stall on a shared CPU).")
@click.option("--every", type=click.IntRange(1, 100), default=1, show_default=True,
              help="Screening: use every n-th frame only (bank and evaluation; the headline "
                   "number is --every 1).")
def command(dataset, preset_name, sets, row, cache, home, out, md, quantize, save_bank, bank_only,
            threads, every):
    """Leave one CamVid sequence out (the quality protocol): per-fold, mean and pooled mIoU."""
    if not (DATA / "camvid").is_dir():
        raise click.ClickException(f"data not found at {DATA}")
    from moduseg.bench.stats import set_threads
    set_threads(threads)
    sets = list(sets)
    t0 = time.perf_counter()
    r = run(dataset, preset_name, sets, Path(cache), home, str(save_bank) if save_bank else None,
            not bank_only, quantize, every)
    if bank_only:
        return
    r["row"] = row or " ".join([preset_name] + sets + (["int8"] if quantize else [])
                               + ([f"every {every}"] if every > 1 else []))
    r["seconds"] = round(time.perf_counter() - t0, 1)
    results = [r]
    if out:
        p = Path(out)
        prev = json.loads(p.read_text()) if p.is_file() else []
        results = [x for x in prev if x["row"] != r["row"] or x["dataset"] != r["dataset"]] + [r]
        with atomic_path(p) as tmp:
            tmp.write_text(json.dumps(results, indent=1))
    table = markdown([x for x in results if x["dataset"] == dataset])
    if md:
        with atomic_path(Path(md)) as tmp:
            tmp.write_text(table)
    click.echo(markdown([r]))
    click.echo(f"mean of fold mIoUs {r['mean_fold_mIoU']:.2f}, pooled {r['pooled_mIoU']:.2f} "
               f"({r['seconds']:.0f} s)")
