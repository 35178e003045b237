"""``moduseg bank build`` and ``moduseg bank info``."""

from __future__ import annotations

import json

import click

from ..bank.datasets import LAYOUTS


@click.group()
def bank():
    """Build and inspect prototype banks."""


@bank.command("build")
@click.option("--dataset", "layout", required=True, type=click.Choice(LAYOUTS),
              help="Dataset layout of the images and label maps.")
@click.option("--root", required=True, type=click.Path(), help="Dataset root (folder: images).")
@click.option("--split", default=None, help="Split (camvid: train/val; voc: train; yolo: train2017).")
@click.option("--labels", default=None, type=click.Path(),
              help="folder: label-PNG folder (e.g. pseudo-masks); coco: annotation JSON.")
@click.option("--classes", default=None, type=click.Path(), help="Class-name file, one per line.")
@click.option("--background", type=int, default=None,
              help="folder: index of the background class, if any.")
@click.option("--out", required=True, type=click.Path(), help="Bank file to write (.npz).")
@click.option("--preset", default=None, help="Configuration preset: paper or default.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a setting, e.g. --set bank.erosion_iterations=5.")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Use at most N images (N >= 1).")
@click.option("--shots", type=click.IntRange(min=1), default=None,
              help="At most N images per class (N >= 1).")
@click.option("--home", default=None, type=click.Path(), help="Model home.")
@click.option("--backend", default="auto",
              help="auto, cpu, cuda, tensorrt (ONNX Runtime providers) or tensorrt-native.")
@click.option("--proposer", default=None, type=click.Choice(["sam", "entityseg"]),
              help="Proposer recorded in the bank for segment/eval: sam or entityseg "
                   "(--set proposer.model=PATH).")
def build(layout, root, split, labels, classes, background, out, preset, overrides, limit,
          shots, home, backend, proposer):
    """Build a bank from images with label maps (ground truth or pseudo-masks)."""
    from ..runtime.assemble import build_backbone, resolve_backend
    from ..settings import resolve_config
    from .builder import build_bank
    from .datasets import open_dataset
    from ..io import check_output_file
    from .store import save_bank

    check_output_file(out, "--out", suffix=".npz")     # before any work
    be = resolve_backend(backend)
    cfg = resolve_config(preset, overrides, proposer=proposer)
    ds = open_dataset(layout, root, split, labels, classes, background)
    backbone = build_backbone(cfg, be, home)
    b = build_bank(ds, backbone, cfg.bank, limit=limit, shots=shots, progress=True,
                   config_record=cfg.to_dict())
    path = save_bank(b, out)
    s = b.stats
    click.echo(f"wrote {path}: {len(b)} vectors of dim {b.dim} from {s['images']} images "
               f"({s['skipped_small']} regions skipped below min_area, "
               f"{s['dropped_outliers']} outliers dropped)")
    click.echo("vectors per class: " + ", ".join(f"{k} {v}" for k, v in s["per_class"].items()))


@bank.command("info")
@click.argument("path", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(path, as_json):
    """Show a bank's backbone, configuration and class counts."""
    from .store import load_bank

    b = load_bank(path)
    rec = {"vectors": len(b), "dim": b.dim, "dtype": str(b.vectors.dtype),
           "backbone": b.backbone.to_dict(), "class_counts": b.class_counts(),
           "background_index": b.background_index, "config": b.config, "stats": b.stats}
    if as_json:
        click.echo(json.dumps(rec, indent=2))
        return
    click.echo(f"{path}: {len(b)} vectors x {b.dim} ({b.vectors.dtype})")
    click.echo(f"backbone: {b.backbone.name} input {b.backbone.input_size} patch "
               f"{b.backbone.patch_size} sha256 {b.backbone.weights_sha256[:12]}")
    click.echo("classes: " + ", ".join(f"{k} {v}" for k, v in b.class_counts().items()))
    click.echo(f"preset: {b.config.get('preset', '?')}")
