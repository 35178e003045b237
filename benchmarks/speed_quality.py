"""Proposer settings on CamVid val: mIoU of the default preset and time per frame.

Same-sequence val (bank from train; the headline protocol is
``benchmarks/cross_sequence.py``). For each ``--setting`` (proposer options
as Python literals) this runs the proposer on every val frame (``--val-frames``
to take fewer, evenly spaced), labels those frames with the default preset
through the cached backbone features of ``benchmarks/ablation.py`` (so only
the proposals differ between rows), and times the whole ``Segmenter``
(backbone and proposer side by side, search, refinement) on ``--frames`` val
frames with a bank built by ``moduseg bank build`` or ``cross_sequence.py
--save-bank`` (``--bank``, made with the default preset and the same
``--set`` flags). ``--set`` changes the default preset's other settings for
every row (e.g. the previous default: ``--set bank.pca_dim=0 --set
bank.whiten=False --set backbone.layers=None``).

    python benchmarks/speed_quality.py --bank camvid.npz \\
        --setting "{}" --setting "{'padding_pool': 1, 'encoder_crop': False}"
    python benchmarks/speed_quality.py --bank camvid.npz --setting "{}" \\
        --val-frames 6 --frames 3                      # a quick look

The slow reference setting (the default preset with every proposer speed
lever off) is ``{'points_per_side': 16, 'point_sampler': 'grid',
'refine_points': 0, 'mask_stride': 1, 'quantize_encoder': False,
'padding_pool': 1, 'encoder_crop': False}`` (~7 s a frame here).
"""

from __future__ import annotations

import argparse
import ast
import time
from pathlib import Path

import numpy as np

import ablation
from moduseg.bank.datasets import camvid


def val_proposals(opts: dict, keep, sets=()):
    from moduseg.config import preset
    from moduseg.runtime.assemble import build_proposer
    from moduseg.settings import parse_overrides

    cfg = preset("default").with_overrides(**parse_overrides(list(sets))).with_overrides(
        **{f"proposer.{k}": v for k, v in opts.items()})
    prop = build_proposer(cfg, "cpu")
    rows, ms = [], []
    for s in (x for i, x in enumerate(camvid(ablation.DATA, "val")) if i in keep):
        t = time.perf_counter()
        p = prop(s.image())
        ms.append((time.perf_counter() - t) * 1e3)
        rows.append(ablation.pack_proposals(p))
    return rows, float(np.median(ms))


def frame_ms(bank: str, opts: dict, frames: int, sets=()) -> float:
    from moduseg.runtime.assemble import load_segmenter

    seg = load_segmenter(bank, preset="default", overrides=list(sets) + [
        f"proposer.{k}={v!r}" for k, v in opts.items()])
    paths = sorted((ablation.DATA / "val").glob("*.png"))[::5][:frames]
    from moduseg.io import read_image
    images = [read_image(p) for p in paths]
    seg(images[0])
    return float(np.median([seg(im).timings_ms["total"] for im in images]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setting", action="append", required=True,
                    help="proposer options as a Python dict literal")
    ap.add_argument("--bank", required=True, help="default-preset CamVid train bank")
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--set", action="append", default=[], dest="sets",
                    help="a setting on top of the default preset for every row (repeatable)")
    ap.add_argument("--val-frames", type=int, default=0,
                    help="label only this many val frames, evenly spaced (0: all 101)")
    ap.add_argument("--cache", default=str(ablation.CACHE))
    ap.add_argument("--threads", type=int, default=1,
                    help="BLAS/OpenMP/OpenCV threads (see benchmarks/README.md)")
    args = ap.parse_args(argv)
    from moduseg.bench.stats import set_threads
    set_threads(args.threads)
    n = len(camvid(ablation.DATA, "val"))
    keep = set(range(n)) if args.val_frames <= 0 else \
        set(np.linspace(0, n - 1, min(args.val_frames, n)).round().astype(int).tolist())
    print("| proposer options | val mIoU | without refinement | proposer ms | frame ms |")
    print("|---|---|---|---|---|")
    for text in args.setting:
        opts = ast.literal_eval(text)
        props, prop_ms = val_proposals(opts, keep, args.sets)
        scores = [ablation.evaluate_row("default", args.sets + extra, Path(args.cache),
                                        proposals=props, keep=keep)["mIoU"]
                  for extra in ([], ["runtime.refine_radius=0"])]
        with_refine, without = scores
        print(f"| `{opts}` | {with_refine:.2f} | {without:.2f} | {prop_ms:.0f} | "
              f"{frame_ms(args.bank, opts, args.frames, args.sets):.0f} |", flush=True)


if __name__ == "__main__":
    main()
