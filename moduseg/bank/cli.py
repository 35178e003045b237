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
@click.option("--limit", type=int, default=None, help="Use at most N images.")
@click.option("--shots", type=int, default=None, help="At most N images per class.")
@click.option("--home", default=None, type=click.Path(), help="Model home.")
@click.option("--backend", default="auto",
              help="auto, cpu, cuda, tensorrt (ONNX Runtime providers) or tensorrt-native.")
@click.option("--offline", is_flag=True,
              help="Never fetch the default models (they are fetched on first use otherwise).")
def build(layout, root, split, labels, classes, background, out, preset, overrides, limit,
          shots, home, backend, offline):
    """Build a bank from images with label maps (ground truth or pseudo-masks)."""
    from ..runtime.cli import load_backbone
    from ..settings import resolve_config
    from .builder import build_bank
    from .datasets import open_dataset
    from .store import save_bank

    from ..models import ensure_models

    cfg = resolve_config(preset, overrides)
    ds = open_dataset(layout, root, split, labels, classes, background)
    if backend != "tensorrt-native":
        ensure_models(home, offline=offline)
    backbone = load_backbone(backend, home, cfg)
    b = build_bank(ds, backbone, cfg.bank, limit=limit, shots=shots, progress=True,
                   config_record=cfg.to_dict())
    path = save_bank(b, out)
    s = b.stats
    click.echo(f"wrote {path}: {len(b)} vectors of dim {b.dim} from {s['images']} images "
               f"({s['skipped_small']} regions skipped below min_area, "
               f"{s['dropped_outliers']} outliers dropped)")
    click.echo("vectors per class: " + ", ".join(f"{k} {v}" for k, v in s["per_class"].items()))


@bank.command("build-default")
@click.option("--root", required=True, type=click.Path(),
              help="CamVid root (train/, val/, *annot/, train.txt, val.txt).")
@click.option("--out", default=None, type=click.Path(),
              help="Bank file to write (default: the package's embedded bank).")
@click.option("--home", default=None, type=click.Path(), help="Model home.")
@click.option("--offline", is_flag=True, help="Never fetch the default models.")
def build_default(root, out, home, offline):
    """Rebuild the embedded default bank (byte-for-byte) from CamVid train + val."""
    from ..models import ensure_models
    from .embedded import MAX_BYTES, build_default_bank

    ensure_models(home, offline=offline)
    path, digest, size, n, secs = build_default_bank(root, out, home, log=click.echo)
    click.echo(f"wrote {path}: {n} vectors, {size} bytes (limit {MAX_BYTES}), "
               f"sha256 {digest}, {secs:.0f} s")


@bank.command("info")
@click.argument("path", type=click.Path(), required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(path, as_json):
    """Show a bank's backbone, configuration and class counts (default: the embedded bank)."""
    from pathlib import Path

    from .embedded import default_bank_path
    from .store import load_bank

    embedded = path is None
    path = default_bank_path() if embedded else path
    b = load_bank(path)
    stored = b.quantization or str(b.vectors.dtype)
    rec = {"path": str(path), "embedded": embedded, "file_bytes": Path(path).stat().st_size,
           "vectors": len(b), "dim": b.dim, "stored_as": stored,
           "dtype": str(b.vectors.dtype), "class_names": b.class_names, "palette": b.palette,
           "backbone": b.backbone.to_dict(), "class_counts": b.class_counts(),
           "background_index": b.background_index, "config": b.config, "stats": b.stats}
    if as_json:
        click.echo(json.dumps(rec, indent=2))
        return
    what = " (the embedded default bank)" if embedded else ""
    click.echo(f"{path}{what}: {len(b)} vectors x {b.dim}, stored as {stored}"
               + (f" (per-dimension scales, loaded as {b.vectors.dtype})" if b.quantization
                  else "") + f", {rec['file_bytes'] / 1e6:.1f} MB")
    click.echo(f"backbone: {b.backbone.name} input {b.backbone.input_size} patch "
               f"{b.backbone.patch_size} sha256 {b.backbone.weights_sha256[:12]}")
    click.echo("classes: " + ", ".join(f"{k} {v}" for k, v in b.class_counts().items()))
    if b.palette is not None:
        click.echo("colours: " + ", ".join(f"{n} #{r:02x}{g:02x}{bl:02x}"
                                           for n, (r, g, bl) in zip(b.class_names, b.palette)))
    sub = b.stats.get("subsampled")
    if sub:
        click.echo(f"kept {sub['to']} of {sub['from']} vectors (evenly spaced) to fit the size "
                   f"limit")
    click.echo(f"built from {b.stats.get('images', '?')} images; "
               f"preset: {b.config.get('preset', '?')}")
