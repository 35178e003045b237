"""``moduseg bank build`` and ``moduseg bank info``."""

from __future__ import annotations

import json

import click

from ..bank.datasets import LAYOUTS
from ..cli_options import backend_option, proposer_option
from ..registry import BACKENDS
from ..scale.options import engine_options
from ..settings import preset_option
from ..text import printable
from .embedded import EMBEDDED_BANKS


def _option_group(*decorators):
    """One decorator applying ``decorators`` in the order written (shared option groups)."""
    def apply(f):
        for d in reversed(decorators):
            f = d(f)
        return f
    return apply


# the options of the commands that read a labelled dataset (build, add), declared once
_SPLIT = click.option("--split", default=None,
                      help="Split (camvid: train/val; voc: train; yolo: train2017).")
_CLASSES = click.option("--classes", default=None, type=click.Path(),
                        help="Class-name file, one per line.")
_BACKGROUND = click.option("--background", type=int, default=None,
                           help="folder: index of the background class, if any.")
_SELECTION = _option_group(
    click.option("--limit", type=click.IntRange(min=1), default=None,
                 help="Use at most N images (N >= 1)."),
    click.option("--shots", type=click.IntRange(min=1), default=None,
                 help="At most N images per class (N >= 1)."))


@click.group()
def bank():
    """Build and inspect prototype banks."""


@bank.command("build")
@click.option("--dataset", "layout", required=True, type=click.Choice(LAYOUTS),
              help="Dataset layout of the images and label maps.")
@click.option("--root", required=True, type=click.Path(), help="Dataset root (folder: images).")
@_SPLIT
@click.option("--labels", default=None, type=click.Path(),
              help="folder: label-PNG folder (e.g. pseudo-masks); coco: annotation JSON.")
@_CLASSES
@_BACKGROUND
@click.option("--out", required=True, type=click.Path(), help="Bank file to write (.npz).")
@preset_option("Configuration preset (default: default).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a setting, e.g. --set bank.erosion_iterations=5.")
@_SELECTION
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
    ds = open_dataset(layout, root, split, labels, classes, background)   # before the models
    if not BACKENDS[backend].native_trt:     # engines need no model pull
        from ..models import ensure_models
        ensure_models(home, offline=offline)
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
        click.echo(f"wrote {printable(path)}: shard {shard}, {len(entries)} of {len(order)} images, "
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
            click.echo(f"  {printable(f['image'])}: {printable(f['error'])}", err=True)


def _echo_bank(path, b):
    s = b.stats
    click.echo(f"wrote {printable(path)}: {len(b)} vectors of dim {b.dim} from {s['images']} images "
               f"({s['skipped_small']} regions skipped below min_area, "
               f"{s['dropped_outliers']} outliers dropped)")
    click.echo("vectors per class: " + ", ".join(f"{printable(k)} {v}"
                                                 for k, v in s["per_class"].items()))
    _echo_failures(s.get("failed", []))


@bank.command("build-default")
@click.option("--root", required=True, type=click.Path(),
              help="CamVid root (train/, val/, *annot/, train.txt, val.txt).")
@click.option("--out", default=None, type=click.Path(),
              help="Bank file to write (default: the package's embedded bank).")
@click.option("--home", default=None, type=click.Path(), help="Model home.")
@click.option("--offline", is_flag=True, help="Never fetch the default models.")
@click.option("--preset", "preset_name", default="default", show_default=True,
              type=click.Choice(list(EMBEDDED_BANKS)),
              help="Which preset's embedded bank to rebuild (each preset ships its own).")
def build_default(root, out, home, offline, preset_name):
    """Rebuild an embedded bank (byte-for-byte) from CamVid train + val."""
    from ..models import ensure_models
    from .embedded import MAX_BYTES, build_default_bank

    ensure_models(home, offline=offline)
    path, digest, size, n, secs = build_default_bank(root, out, home, log=click.echo,
                                                     preset=preset_name)
    click.echo(f"wrote {path}: {n} vectors, {size} bytes (limit {MAX_BYTES}), "
               f"sha256 {digest}, {secs:.0f} s")


@bank.command("info")
@click.argument("path", type=click.Path(), required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(path, as_json):
    """Show a bank's backbone, configuration, per-class counts, where each class came
    from and whether added vectors drift from its projection (default: the embedded bank)."""
    from pathlib import Path

    from ..text import printable
    from .edit import drift
    from .embedded import default_bank_path
    from .store import load_bank

    embedded = path is None
    path = default_bank_path() if embedded else path
    b = load_bank(path)
    stored = b.quantization or str(b.vectors.dtype)
    dr = drift(b)
    rec = {"path": str(path), "embedded": embedded, "file_bytes": Path(path).stat().st_size,
           "vectors": len(b), "dim": b.dim, "stored_as": stored,
           "dtype": str(b.vectors.dtype), "class_names": b.class_names, "palette": b.palette,
           "backbone": b.backbone.to_dict(), "class_counts": b.class_counts(),
           "provenance": b.provenance, "drift": dr,
           "unknown_calibrated": b.calibration is not None,
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
    click.echo("classes (vectors, where from):")
    width = max(len(pr(n)) for n in b.class_names)
    for n, c in b.class_counts().items():
        src = "; ".join(pr(_source(e)) for e in b.provenance.get(n, [])) or "not recorded"
        click.echo(f"  {pr(n):<{width}} {c:>7}  {src}")
    if b.palette is not None:
        click.echo("colours: " + ", ".join(f"{pr(n)} #{r:02x}{g:02x}{bl:02x}"
                                           for n, (r, g, bl) in zip(b.class_names, b.palette)))
    sub = b.stats.get("subsampled")
    if isinstance(sub, dict):
        click.echo(f"kept {pr(sub.get('to', '?'))} of {pr(sub.get('from', '?'))} vectors "
                   f"(evenly spaced) to fit the size limit")
    click.echo(f"built from {pr(b.stats.get('images', '?'))} images; "
               f"preset: {pr(b.config.get('preset', '?'))}")
    click.echo("unknown: " + ("calibrated in the bank" if b.calibration is not None else
                              "not calibrated in the file (calibrated when a run loads it)"))
    if dr is None:
        click.echo("projection: none (nothing can drift)")
    elif dr["score"] is None:
        click.echo(f"projection drift: unknown ({dr['note']})")
    else:
        click.echo(f"projection drift: {dr['score']:.3f} after {dr['added']} added vectors "
                   f"(fitted on {dr['fit_vectors']})"
                   + (f"; DRIFTED: the added vectors no longer match the projection's "
                      f"whitening: run 'moduseg bank refit {pr(path)} --out NEW.npz'"
                      if dr["flagged"] else "; within tolerance"))


def _source(e: dict) -> str:
    return (f"{e.get('op', '?')} {e.get('source', '?')}: {e.get('vectors', '?')} vectors from "
            f"{e.get('images', '?')} image(s)")


def _edit_out(bank_path, out):
    """``--out`` must be a new file, never the bank being edited (that stays as it was)."""
    from pathlib import Path

    from ..errors import InputError
    from ..io import check_output_file

    check_output_file(out, "--out", suffix=".npz")
    if Path(out).resolve() == Path(bank_path).resolve():
        raise InputError(f"--out {out} is the bank being edited; write a new file (the "
                         f"original stays untouched), then swap it in")


def _zoom_top_up(vecs, labs, ids, samples, backbone, n_classes, bank_cfg, zooms, gaps):
    """``bank add --zoom``: the classes short of the target (``gaps``) topped up from the
    zoom tiles of the images that gave vectors; a tile without a short class costs no pass."""
    import numpy as np

    from ..errors import ModuSegError
    from .builder import image_vectors
    from .datasets import check_label_map
    from .edit import fill_gaps, zoom_views

    if not gaps:
        return vecs, labs, ids
    more_v, more_l, more_i = [], [], []
    for sample in samples:
        got_v, got_l = [], []
        try:
            image, label = sample.image(), sample.label()
            check_label_map(sample.image_id, image.shape[:2], label, n_classes)
            for view in zoom_views(image, label, zooms, gaps):
                fmap = backbone(view.image)
                fmap.check_finite(f"backbone features of {sample.image_id} ({view.tag})")
                v, lab, _ = image_vectors(fmap, view.label, n_classes, bank_cfg)
                got_v.append(v)
                got_l.append(np.asarray(lab, np.int32))
            more_v += got_v
            more_l += got_l
            more_i += [sample.image_id] * sum(len(x) for x in got_l)
        except ModuSegError as err:     # the image itself was embedded: only its tiles go
            click.echo(f"{printable(sample.image_id)}: zoomed views left out: "
                       f"{printable(str(err))}", err=True)
    if not more_v:
        return vecs, labs, ids
    v, lab, i = np.concatenate(more_v), np.concatenate(more_l), np.asarray(more_i, str)
    keep = fill_gaps(lab, gaps)
    return (np.concatenate([vecs, v[keep].astype(vecs.dtype)]), np.concatenate([labs, lab[keep]]),
            np.concatenate([ids, i[keep]]))


@bank.command("add")
@click.argument("bank_path", metavar="BANK", type=click.Path())
@click.option("--dataset", "layout", required=True, type=click.Choice(LAYOUTS),
              help="Layout of the labelled images: pairs (an image + mask PNG or YOLO .txt, "
                   "or folders of them named alike), coco, yolo, folder, camvid, voc.")
@click.option("--root", required=True, type=click.Path(),
              help="Dataset root, images folder, or one image (pairs, coco).")
@_SPLIT
@click.option("--labels", default=None, type=click.Path(),
              help="pairs: mask PNG / YOLO .txt or their folder; folder: label-PNG folder; "
                   "coco: annotation JSON.")
@_CLASSES
@click.option("--class", "class_name", default=None,
              help="pairs: the class a binary mask marks (non-zero pixels).")
@click.option("--only", multiple=True, metavar="NAME",
              help="Add only these classes (repeatable); default: every labelled class "
                   "except a dataset's background (unless the bank has it).")
@_BACKGROUND
@_SELECTION
@click.option("--flip/--no-flip", default=False, show_default=True,
              help="Also embed each image mirrored left-right (one more backbone pass an "
                   "image): a class taught from a few frames is seen from both sides.")
@click.option("--zoom", "zoom", multiple=True, metavar="F",
              help="Also embed each image zoomed in by F (above 1, at most 4; repeatable or "
                   "comma-separated): ceil(F)^2 crops of 1/F of each side tiled over it (the "
                   "bank.augment_zoom views), one backbone pass each, so small and thin "
                   "objects of a few images give more, purer patches. Zoomed vectors only "
                   "top up a class short of the sampling target, never beyond its own-scale "
                   "count; a tile without such a class costs no pass.")
@click.option("--out", required=True, type=click.Path(), help="New bank file (.npz).")
@click.option("--home", default=None, type=click.Path(), help="Model home.")
@backend_option()
@click.option("--offline", is_flag=True, help="Never fetch the default models.")
def add(bank_path, layout, root, split, labels, classes, class_name, only, background, limit,
        shots, flip, zoom, out, home, backend, offline):
    """Add labelled images to BANK (new classes or more examples) and write --out.

    The images go through the bank's own stored configuration and projection;
    a backbone other than the bank's is refused.
    """
    import time

    import numpy as np

    from ..errors import InputError
    from ..build import build_backbone, check_bank_options
    from ..settings import resolve_config
    from .builder import image_entries, select_indices
    from .datasets import open_dataset
    from .augment import zoom_factors
    from .edit import add_sampling, add_target, add_vectors, zoom_gaps
    from .store import check_identity, load_bank, save_bank

    t0 = time.perf_counter()
    zooms = zoom_factors(zoom)
    _edit_out(bank_path, out)
    b = load_bank(bank_path)
    cfg = resolve_config(None, (), b.config)
    ds = open_dataset(layout, root, split, labels, classes, background, class_name)
    unknown = [n for n in only if n not in ds.class_names]
    if unknown:
        raise InputError(f"--only {unknown[0]!r} is not a class of the dataset (its classes: "
                         f"{', '.join(ds.class_names[:20])})")
    skip = {n for n in ds.class_names if only and n not in only}
    if (not only and ds.background_index is not None
            and ds.class_names[ds.background_index] not in b.class_names):
        skip.add(ds.class_names[ds.background_index])
    order = select_indices(ds, limit, shots)
    check_bank_options(cfg, b, home)
    if not BACKENDS[backend].native_trt:     # engines need no model pull
        from ..models import ensure_models
        ensure_models(home, offline=offline)
    backbone = build_backbone(cfg, backend, home)
    check_identity(b.backbone, backbone.identity, f"bank {bank_path}")
    bcfg = add_sampling(cfg.bank, b, len(order), flip=flip)
    entries = [image_entries(ds.samples[i], backbone, len(ds.class_names), bcfg) for i in order]
    ok = [e for e in entries if e.error is None]
    _echo_failures([{"image": e.image_id, "error": e.error} for e in entries if e.error])
    if not ok:
        raise InputError(f"no image of {root} could be used ({len(entries)} failed)")
    vecs = np.concatenate([e.vectors for e in ok])
    labs = np.concatenate([e.labels for e in ok])
    ids = np.asarray([e.image_id for e in ok for _ in range(len(e.labels))], dtype=str)
    zooms = tuple(z for z in zooms if z not in bcfg.augment_zoom)   # the bank's own: done
    if zooms:
        adding = [c for c, n in enumerate(ds.class_names) if n not in skip]
        used = [ds.samples[i] for i, e in zip(order, entries) if e.error is None]
        vecs, labs, ids = _zoom_top_up(vecs, labs, ids, used, backbone, len(ds.class_names),
                                       bcfg, zooms, zoom_gaps(labs, adding, add_target(b)))
    source = f"{layout}:{root}" + (f" ({labels})" if labels else "")
    new, report = add_vectors(b, vecs, labs, ids, ds.class_names, source, skip_names=skip)
    path = save_bank(new, out)
    created = f"; new classes: {', '.join(report['created'])}" if report["created"] else ""
    click.echo(f"wrote {path}: added " + ", ".join(f"{n} {c}" for n, c in
                                                    report["added"].items())
               + f" vectors from {report['images']} image(s){created} "
               f"({len(new)} vectors in all, {time.perf_counter() - t0:.1f} s)")
    from .edit import drift
    dr = drift(new)
    if dr and dr["flagged"]:
        click.echo(f"the added vectors drift from the bank's projection (score {dr['score']:.3f}"
                   f"): run 'moduseg bank refit {path} --out NEW.npz'", err=True)


@bank.command("drop")
@click.argument("bank_path", metavar="BANK", type=click.Path())
@click.option("--class", "names", multiple=True, required=True, metavar="NAME",
              help="Class to drop (repeatable).")
@click.option("--out", required=True, type=click.Path(), help="New bank file (.npz).")
def drop(bank_path, names, out):
    """Drop classes (their vectors, names, colours, provenance) from BANK into --out."""
    from .edit import drop_class
    from .store import load_bank, save_bank

    _edit_out(bank_path, out)
    b = load_bank(bank_path)
    n0 = len(b)
    for n in names:
        b = drop_class(b, n)
    path = save_bank(b, out)
    click.echo(f"wrote {path}: dropped {', '.join(names)} ({n0 - len(b)} vectors); "
               f"{len(b)} vectors of {len(b.class_names)} classes left")


@bank.command("refit")
@click.argument("bank_path", metavar="BANK", type=click.Path())
@click.option("--out", required=True, type=click.Path(), help="New bank file (.npz).")
def refit_cmd(bank_path, out):
    """Recompute a whitened bank's projection from its current vectors (after 'bank add')."""
    from .edit import drift, refit
    from .store import load_bank, save_bank

    _edit_out(bank_path, out)
    b = load_bank(bank_path)
    before = drift(b)
    new = refit(b)
    path = save_bank(new, out)
    was = (f" (drift was {before['score']:.3f})" if before and before["score"] is not None
           else "")
    click.echo(f"wrote {path}: projection re-whitened on its {len(new)} vectors{was}")
