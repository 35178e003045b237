"""Proposer settings on CamVid val: mIoU of the default preset and time per frame.

Same-sequence val (bank from train; the headline protocol is
``python -m benchmarks cross-sequence``). For each ``--setting`` (proposer options
as Python literals) this runs the proposer on every val frame (``--val-frames``
to take fewer, evenly spaced), labels those frames with the default preset
through the cached backbone features of ``python -m benchmarks ablation`` (so only
the proposals differ between rows), and times the whole ``Segmenter``
(backbone and proposer side by side, search, refinement) on ``--frames`` val
frames with a bank built by ``moduseg bank build`` or ``cross-sequence
--save-bank`` (``--bank``, made with the default preset and the same
``--set`` flags). ``--set`` changes the default preset's other settings for
every row (e.g. the previous default: ``--set bank.pca_dim=0 --set
bank.whiten=False --set backbone.layers=None``).

    python -m benchmarks speed-quality --bank camvid.npz \\
        --setting "{}" --setting "{'padding_pool': 1, 'encoder_crop': False}"
    python -m benchmarks speed-quality --bank camvid.npz --setting "{}" \\
        --val-frames 6 --frames 3                      # a quick look

The slow reference setting (the default preset with every proposer speed
lever off) is ``{'points_per_side': 16, 'point_sampler': 'grid',
'refine_points': 0, 'mask_stride': 1, 'quantize_encoder': False,
'padding_pool': 1, 'encoder_crop': False}`` (~7 s a frame here).
"""

from __future__ import annotations

import ast
import time
from pathlib import Path

import click
import numpy as np

from . import ablation
from moduseg.bank.datasets import camvid


def val_proposals(opts: dict, keep, sets=()):
    from moduseg.config import preset
    from moduseg.build import build_proposer
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
    from moduseg.bank.segmenter import segmenter_from_bank as load_segmenter

    seg = load_segmenter(bank, preset="default", overrides=list(sets) + [
        f"proposer.{k}={v!r}" for k, v in opts.items()])
    paths = sorted((ablation.DATA / "val").glob("*.png"))[::5][:frames]
    from moduseg.io import read_image
    images = [read_image(p) for p in paths]
    seg(images[0])
    return float(np.median([seg(im).timings_ms["total"] for im in images]))


@click.command("speed-quality")
@click.option("--setting", "settings", multiple=True, required=True,
              help="Proposer options as a Python dict literal (repeatable: one row each).")
@click.option("--bank", required=True, type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="Default-preset CamVid train bank.")
@click.option("--frames", type=int, default=20, show_default=True, help="Timed val frames.")
@click.option("--set", "sets", multiple=True,
              help="A setting on top of the default preset for every row (repeatable).")
@click.option("--val-frames", type=int, default=0, show_default=True,
              help="Label only this many val frames, evenly spaced (0: all 101).")
@click.option("--cache", type=click.Path(path_type=Path), default=ablation.CACHE, show_default=True,
              help="Per-frame feature and proposal cache.")
@click.option("--threads", type=int, default=1, show_default=True, help="BLAS/OpenMP/OpenCV threads.")
def command(settings, bank, frames, sets, val_frames, cache, threads):
    """Proposer settings on CamVid val: mIoU of the default preset and time per frame."""
    from moduseg.bench.stats import set_threads
    set_threads(threads)
    sets = list(sets)
    n = len(camvid(ablation.DATA, "val"))
    keep = set(range(n)) if val_frames <= 0 else \
        set(np.linspace(0, n - 1, min(val_frames, n)).round().astype(int).tolist())
    click.echo("| proposer options | val mIoU | without refinement | proposer ms | frame ms |")
    click.echo("|---|---|---|---|---|")
    for text in settings:
        opts = ast.literal_eval(text)
        props, prop_ms = val_proposals(opts, keep, sets)
        scores = [ablation.evaluate_row("default", sets + extra, Path(cache),
                                        proposals=props, keep=keep)["mIoU"]
                  for extra in ([], ["runtime.refine_radius=0"])]
        with_refine, without = scores
        click.echo(f"| `{opts}` | {with_refine:.2f} | {without:.2f} | {prop_ms:.0f} | "
                   f"{frame_ms(str(bank), opts, frames, sets):.0f} |")
