"""Image-level labels: which classes each image contains.

Two interchangeable file formats, chosen by suffix:

``.jsonl`` (JSON lines), one image per line::

    {"image": "2007_000032", "labels": ["aeroplane", "person"]}

anything else (plain text), one image per line, ``#`` starts a comment::

    2007_000032: aeroplane, person
    2007_000039: tvmonitor
    2007_000063:                      <- no foreground class (background only)

``image`` is the image file stem. Names are class names from the class-names
file (one per line, the same file the ``folder`` dataset layout reads). The
background class never needs listing: it is always allowed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ...errors import InputError
from ...io import read_label_map
from ...owned import atomic_path
from ...types import IGNORE

ImageLabels = dict[str, list[str]]


def write_class_names(path: str | Path, names: list[str]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f"{n}\n" for n in names))


def find_background(class_names: list[str], name: str | None = "background") -> int | None:
    """Index of the background class by name (case-insensitive), or ``None``."""
    if not name:
        return None
    low = [c.lower() for c in class_names]
    return low.index(name.lower()) if name.lower() in low else None


def read_image_labels(path: str | Path) -> ImageLabels:
    """A labels file -> ``{image stem: [class names]}`` (order as written)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image-labels file {path} does not exist; create it with "
                         f"'moduseg pseudo labels-from-masks' or by hand (see "
                         f"moduseg.bank.pseudo.labels for the format)")
    out: ImageLabels = {}
    jsonl = path.suffix.lower() == ".jsonl"
    for ln_no, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if jsonl:
            try:
                rec = json.loads(line)
                image, names = str(rec["image"]), rec["labels"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise InputError(f"{path}:{ln_no}: expected "
                                 f'{{"image": "<stem>", "labels": ["name", ...]}}') from None
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise InputError(f"{path}:{ln_no}: 'labels' must be a list of class names")
        else:
            image, sep, rest = line.partition(":")
            if not sep or not image.strip():
                raise InputError(f"{path}:{ln_no}: expected '<image stem>: name, name, ...'")
            image = image.strip()
            names = [n.strip() for n in rest.split(",") if n.strip()]
        if image in out:
            raise InputError(f"{path}:{ln_no}: image {image!r} is listed twice")
        out[image] = list(dict.fromkeys(names))
    return out


def write_image_labels(path: str | Path, labels: ImageLabels) -> None:
    """Write in the format the suffix selects (``.jsonl`` or text), atomically."""
    path = Path(path)
    if path.suffix.lower() == ".jsonl":
        text = "".join(json.dumps({"image": k, "labels": v}) + "\n" for k, v in labels.items())
    else:
        bad = [n for v in labels.values() for n in v if "," in n or ":" in n]
        if bad:
            raise InputError(f"class names {bad} contain ',' or ':'; write a .jsonl file")
        text = "".join(f"{k}: {', '.join(v)}\n" for k, v in labels.items())
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def presence_vector(names: list[str], class_names: list[str], background_index: int | None,
                    image: str = "?") -> np.ndarray:
    """Class names present in an image -> ``bool[C]`` (background always True)."""
    index = {n: i for i, n in enumerate(class_names)}
    present = np.zeros(len(class_names), bool)
    unknown = [n for n in names if n not in index]
    if unknown:
        raise InputError(f"image {image}: labels {unknown} are not in the class names "
                         f"{class_names}; fix the labels file or the class-names file")
    present[[index[n] for n in names]] = True
    if background_index is not None:
        present[background_index] = True
    return present


def labels_from_mask(mask: np.ndarray, class_names: list[str],
                     background_index: int | None, min_pixels: int = 1) -> list[str]:
    """Classes with at least ``min_pixels`` pixels in a label map (background, ignore left out)."""
    counts = np.bincount(np.asarray(mask, np.uint8).reshape(-1), minlength=256)
    counts[IGNORE] = 0
    if counts[len(class_names):].any():
        bad = np.nonzero(counts[len(class_names):])[0] + len(class_names)
        raise InputError(f"label values {bad.tolist()} are outside the {len(class_names)} "
                         f"class names; fix the class-names file")
    if background_index is not None:
        counts[background_index] = 0
    return [class_names[i] for i in np.nonzero(counts >= max(1, min_pixels))[0]]


def labels_from_masks(masks_dir: str | Path, class_names: list[str],
                      background_index: int | None, min_pixels: int = 1) -> ImageLabels:
    """Image-level labels of every ``*.png`` label map in a folder (for benchmarking)."""
    masks_dir = Path(masks_dir)
    if not masks_dir.is_dir():
        raise InputError(f"masks folder {masks_dir} does not exist")
    paths = sorted(masks_dir.glob("*.png"))
    if not paths:
        raise InputError(f"masks folder {masks_dir} has no .png label maps")
    return {p.stem: labels_from_mask(read_label_map(p), class_names, background_index,
                                     min_pixels) for p in paths}

