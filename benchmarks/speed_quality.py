"""Proposer settings on CamVid val: mIoU of the default preset and time per frame.

For each ``--setting`` (proposer options as Python literals) this runs the
proposer on every val frame, labels val with the default preset through the
cached backbone features of ``benchmarks/ablation.py`` (so only the
proposals differ between rows), and times the whole ``Segmenter`` (backbone
and proposer side by side, search, refinement) on ``--frames`` val frames
with a bank built by ``moduseg bank build`` (``--bank``).

    python benchmarks/speed_quality.py --bank camvid.npz \\
        --setting "{}" --setting "{'padding_pool': 1, 'encoder_crop': False}"

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


def val_proposals(opts: dict):
    from moduseg.config import preset
    from moduseg.runtime.assemble import build_proposer

    cfg = preset("default").with_overrides(**{f"proposer.{k}": v for k, v in opts.items()})
    prop = build_proposer(cfg, "cpu")
    rows, ms = [], []
    for s in camvid(ablation.DATA, "val"):
        t = time.perf_counter()
        p = prop(s.image())
        ms.append((time.perf_counter() - t) * 1e3)
        rows.append(ablation.pack_proposals(p))
    return rows, float(np.median(ms))


def frame_ms(bank: str, opts: dict, frames: int) -> float:
    import moduseg

    seg = moduseg.load_segmenter(bank, **{f"proposer__{k}": v for k, v in opts.items()})
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
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "moduseg" / "ablation"))
    args = ap.parse_args(argv)
    inputs = ablation.cache_inputs(Path(args.cache))
    print("| proposer options | val mIoU | without refinement | proposer ms | frame ms |")
    print("|---|---|---|---|---|")
    for text in args.setting:
        opts = ast.literal_eval(text)
        props, prop_ms = val_proposals(opts)
        rows = dict(inputs)
        rows["val"] = [(f, g, lab, p) for (f, g, lab, _), p in zip(inputs["val"], props)]
        with_refine = ablation.evaluate_row(rows, "default", [])["mIoU"]
        without = ablation.evaluate_row(rows, "default", ["runtime.refine_radius=0"])["mIoU"]
        print(f"| `{opts}` | {with_refine:.2f} | {without:.2f} | {prop_ms:.0f} | "
              f"{frame_ms(args.bank, opts, args.frames):.0f} |", flush=True)


if __name__ == "__main__":
    main()
