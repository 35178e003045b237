"""``moduseg bank build`` and ``moduseg bank info``."""

from __future__ import annotations

import json

import click

from ..bank.datasets import LAYOUTS
from ..cli_options import backend_option, proposer_option
from ..scale.options import engine_options
from ..settings import preset_option


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
@preset_option("Configuration preset (default: default).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a setting, e.g. --set bank.erosion_iterations=5.")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Use at most N images (N >= 1).")
@click.option("--shots", type=click.IntRange(min=1), default=None,
              help="At most N images per class (N >= 1).")
@click.option("--home", default=None, type=click.Path(), help="Model home.")
@backend_option()
@proposer_option("Proposer recorded in the bank for segment/eval", "")
@click.option("--offline", is_flag=True,
              help="Never fetch the default models (they are fetched on first use otherwise).")
@engine_options
def build(layout, root, split, labels, classes, background, out, preset, overrides, limit,
          shots, home, backend, proposer, offline, **engine):
    """Build a bank from images with label maps (ground truth or pseudo-masks).

    With --shard i/N write a partial bank of share i (see 'bank merge').
    """
    from functools import partial

    from ..errors import InputError
    from ..io import check_output_file
    from ..scale import options
    from ..scale.work import run_task
    from ..settings import resolve_config
    from .builder import BankTask, finish_bank, select_indices
    from .datasets import open_dataset
    from .parts import save_part
    from .segmenter import ModelRecipe, build_for
    from .store import save_checked_bank

    check_output_file(out, "--out", suffix=".npz")     # before any work
    shard, ray_options = options.parse(**engine)
    cfg = resolve_config(preset, overrides, proposer=proposer)
    if backend != "tensorrt-native":
        from ..models import ensure_models
        ensure_models(home, offline=offline)
    ds = open_dataset(layout, root, split, labels, classes, background)
    order = select_indices(ds, limit, shots)
    if not order:
        raise InputError(f"dataset {ds.name!r} gave no images to build a bank from")
    positions = list(shard.positions(len(order))) if shard else list(range(len(order)))
    if not positions:
        raise InputError(f"--shard {shard}: the build has only {len(order)} images, so this "
                         f"shard is empty; use at most {len(order)} shards")
    recipe = ModelRecipe(backend, home, preset, tuple(overrides), None, proposer)
    task = BankTask(partial(open_dataset, layout, root, split, labels, classes, background),
                    partial(build_for, recipe, "backbone"), dict(cfg.bank.__dict__))
    results = run_task(task, [str(order[p]) for p in positions], ray_options, desc="bank")
    entries = [e for e, _ in results]
    identities = {i for _, i in results}
    if len(identities) != 1:
        raise InputError(f"the workers loaded different backbones ({len(identities)} "
                         f"identities); give every node the same model files")
    identity = identities.pop()
    if shard:
        path = save_part(out, entries, positions, shard, [ds.samples[i].image_id for i in order],
                         {"name": ds.name, "class_names": list(ds.class_names),
                          "background_index": ds.background_index}, identity, cfg.to_dict())
        n_vec = sum(len(e.labels) for e in entries)
        click.echo(f"wrote {path}: shard {shard}, {len(entries)} of {len(order)} images, "
                   f"{n_vec} vectors before outlier rejection; combine the parts with "
                   f"'moduseg bank merge PARTS... --out BANK'")
        _echo_failures([{"image": e.image_id, "error": e.error} for e in entries if e.error])
        return
    b = finish_bank(entries, ds.class_names, ds.background_index, identity, cfg.bank,
                    cfg.to_dict(), ds.name)
    _echo_bank(save_checked_bank(b, out), b)


@bank.command("merge")
@click.argument("parts", nargs=-1, required=True, type=click.Path())
@click.option("--out", required=True, type=click.Path(), help="Bank file to write (.npz).")
def merge(parts, out):
    """Merge the parts of 'bank build --shard i/N' into the bank one process would build."""
    from ..io import check_output_file
    from .parts import merge_parts
    from .store import save_checked_bank

    check_output_file(out, "--out", suffix=".npz")     # a folder, not DIR.npz
    b = merge_parts(parts)
    _echo_bank(save_checked_bank(b, out), b)


def _echo_failures(failed):
    if failed:
        click.echo(f"{len(failed)} image(s) failed and were left out (listed in the bank's "
                   f"stats.failed):", err=True)
        for f in failed[:20]:
            click.echo(f"  {f['image']}: {f['error']}", err=True)


def _echo_bank(path, b):
    s = b.stats
    click.echo(f"wrote {path}: {len(b)} vectors of dim {b.dim} from {s['images']} images "
               f"({s['skipped_small']} regions skipped below min_area, "
               f"{s['dropped_outliers']} outliers dropped)")
    click.echo("vectors per class: " + ", ".join(f"{k} {v}" for k, v in s["per_class"].items()))
    _echo_failures(s.get("failed", []))


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

    from ..text import printable
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
    pr = printable                      # names come from the file: no raw control characters
    click.echo(f"{pr(path)}{what}: {len(b)} vectors x {b.dim}, stored as {stored}"
               + (f" (per-dimension scales, loaded as {b.vectors.dtype})" if b.quantization
                  else "") + f", {rec['file_bytes'] / 1e6:.1f} MB")
    click.echo(f"backbone: {pr(b.backbone.name)} input {pr(b.backbone.input_size)} patch "
               f"{b.backbone.patch_size} sha256 {pr(b.backbone.weights_sha256[:12])}")
    click.echo("classes: " + ", ".join(f"{pr(k)} {v}" for k, v in b.class_counts().items()))
    if b.palette is not None:
        click.echo("colours: " + ", ".join(f"{pr(n)} #{r:02x}{g:02x}{bl:02x}"
                                           for n, (r, g, bl) in zip(b.class_names, b.palette)))
    sub = b.stats.get("subsampled")
    if isinstance(sub, dict):
        click.echo(f"kept {pr(sub.get('to', '?'))} of {pr(sub.get('from', '?'))} vectors "
                   f"(evenly spaced) to fit the size limit")
    click.echo(f"built from {pr(b.stats.get('images', '?'))} images; "
               f"preset: {pr(b.config.get('preset', '?'))}")
