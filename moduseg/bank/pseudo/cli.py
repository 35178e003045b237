"""``moduseg pseudo ...``: pseudo label maps from image-level labels."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import click

from ...cli_options import backend_option
from ...errors import InputError


@click.group("pseudo")
def pseudo():
    """Pseudo masks from image-level labels (dense CLIP + label filtering)."""


def _background(class_names: list[str], name: str) -> int | None:
    from .labels import find_background

    idx = find_background(class_names, name) if name.lower() != "none" else None
    if name.lower() != "none" and idx is None:
        raise InputError(f"no class named {name!r} in the class names {class_names}; pass "
                         f"--background NAME, or --background none if there is no background")
    return idx


def load_proposer(spec: str, home: str | None, backend="auto"):
    """``default`` -> the runtime's default proposer on ``backend`` (a name or a resolved
    ``build.Backend``); ``module:callable`` -> callable()."""
    if spec == "default":
        try:
            from ...config import preset
            from ...build import build_proposer
        except ImportError as e:
            raise InputError(f"the default proposer is unavailable here ({e}); pass "
                             f"--proposer module:factory") from None
        return build_proposer(preset("default"), backend, home)
    module, sep, attr = spec.partition(":")
    if not sep:
        raise InputError(f"--proposer {spec!r}: expected 'default' or 'module:factory'")
    try:
        factory = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise InputError(f"--proposer {spec!r} cannot be imported: {e}") from None
    proposer = factory()
    if not callable(proposer):
        raise InputError(f"--proposer {spec!r} did not return a callable Proposer")
    return proposer


@pseudo.command("generate")
@click.option("--clip", "clip_dir", required=True, type=click.Path(file_okay=False),
              help="Folder written by 'moduseg export clip' (clip.json, image/text ONNX).")
@click.option("--images", required=True, type=click.Path(file_okay=False),
              help="Folder of images.")
@click.option("--classes", required=True, type=click.Path(dir_okay=False),
              help="Class-name file, one per line, in label-index order.")
@click.option("--labels", "labels_file", default=None, type=click.Path(dir_okay=False),
              help="Image-level labels (.jsonl or 'stem: a, b' text); required unless --no-filter.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder: <stem>.png label maps, classes.txt, pseudo.json.")
@click.option("--background", default="background", show_default=True,
              help="Name of the background class ('none' if the classes have none).")
@click.option("--no-filter", is_flag=True, help="Do not restrict classes to the image labels.")
@click.option("--stride", type=int, default=None, help="Window stride (default crop/3).")
@click.option("--crop", type=int, default=None,
              help="Window crop (must equal the exported size; default: the export's).")
@click.option("--short-side", type=int, default=None,
              help="Resize the short image side to this first (default: the crop; 0 = none).")
@click.option("--batch", type=int, default=4, show_default=True, help="Windows per ONNX run.")
@click.option("--prompts", default=None, type=click.Path(dir_okay=False),
              help='JSON {"class": ["query", ...]} to replace the default queries.')
@click.option("--background-words", default=None,
              help="Comma-separated background queries (default: a built-in stuff list).")
@click.option("--proposer", "proposer_spec", default=None,
              help="Correct maps with proposals: 'default' or module:factory.")
@click.option("--min-proposal-score", type=float, default=0.5, show_default=True)
@click.option("--min-confidence", type=float, default=0.0, show_default=True,
              help="Pixels whose softmax confidence is below this become 255 (ignore).")
@click.option("--cache-dir", default=None, type=click.Path(file_okay=False),
              help="Text-embedding cache (default <model home>/cache/clip-text).")
@backend_option(extra=" Runs the CLIP graphs (and --proposer default).")
@click.option("--threads", type=int, default=None, help="ONNX Runtime intra-op threads.")
@click.option("--home", default=None, type=click.Path(), help="Model home (for --proposer default).")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Only the first N images (N >= 1).")
def generate(clip_dir, images, classes, labels_file, out_dir, background, no_filter, stride,
             crop, short_side, batch, prompts, background_words, proposer_spec,
             min_proposal_score, min_confidence, cache_dir, backend, threads, home, limit):
    """Write pseudo label maps for a folder of images."""
    from ...build import resolve_backend
    from .dense import SlidingWindow
    from .generate import build_generator, generate_folder
    from ..datasets import read_class_names
    from .labels import read_image_labels
    from .model import load_clip_model
    from .text import BACKGROUND_WORDS, read_synonyms

    be = resolve_backend(backend)                       # an unknown name: one line, first
    class_names = read_class_names(classes)
    bg = _background(class_names, background)
    # --no-filter runs plain open-vocabulary CLIP on every image; labels are not used
    image_labels = read_image_labels(labels_file) if labels_file and not no_filter else None
    if image_labels is None and not no_filter:
        raise click.UsageError("give --labels FILE (image-level labels) or --no-filter")
    model = load_clip_model(clip_dir)
    c = crop or model.crop
    window = SlidingWindow(crop=c, stride=stride or max(1, c // 3),
                           short_side=c if short_side is None else (short_side or None),
                           batch=batch)
    words = BACKGROUND_WORDS if background_words is None else \
        [w.strip() for w in background_words.split(",") if w.strip()]
    proposer = load_proposer(proposer_spec, home, be) if proposer_spec else None
    gen, info = build_generator(clip_dir, class_names, bg, window,
                                read_synonyms(prompts) if prompts else None, words, cache_dir,
                                threads=threads, proposer=proposer,
                                min_proposal_score=min_proposal_score,
                                filter_labels=not no_filter, min_confidence=min_confidence,
                                runners=be.runner_factory())
    summary = generate_folder(gen, images, out_dir, image_labels, limit, info, progress=True)
    click.echo(f"wrote {summary.written} label maps to {out_dir} "
               f"({summary.ms_per_image:.0f} ms/image)")
    if summary.skipped_no_labels:
        click.echo(f"skipped {len(summary.skipped_no_labels)} images without labels "
                   f"(e.g. {summary.skipped_no_labels[:3]})", err=True)


@pseudo.command("labels-from-masks")
@click.option("--masks", required=True, type=click.Path(file_okay=False),
              help="Folder of ground-truth label PNGs (<stem>.png).")
@click.option("--classes", required=True, type=click.Path(dir_okay=False),
              help="Class-name file, one per line.")
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False),
              help="Labels file to write (.jsonl, or text for any other suffix).")
@click.option("--background", default="background", show_default=True,
              help="Background class name, left out of the labels ('none' = no background).")
@click.option("--min-pixels", type=int, default=1, show_default=True,
              help="A class counts as present from this many pixels.")
def labels_from_masks_cmd(masks, classes, out_file, background, min_pixels):
    """Derive image-level labels from label maps (to benchmark pseudo masks)."""
    from ..datasets import read_class_names
    from .labels import labels_from_masks, write_image_labels

    class_names = read_class_names(classes)
    labels = labels_from_masks(masks, class_names, _background(class_names, background),
                               min_pixels)
    write_image_labels(out_file, labels)
    n = sum(len(v) for v in labels.values())
    click.echo(f"wrote image-level labels of {len(labels)} images ({n} labels) to {out_file}")


@pseudo.command("show-labels")
@click.argument("labels_file", type=click.Path(dir_okay=False))
def show_labels(labels_file):
    """Print a labels file as JSON (checks that it parses)."""
    from .labels import read_image_labels

    click.echo(json.dumps(read_image_labels(Path(labels_file)), indent=1))
