"""Extra views of a bank image: mirrored, re-exposed, zoomed in.

Each view is one more backbone pass over a transformed copy of a labelled image,
with its label map transformed the same way, so the bank holds the same pixels
as the camera might also have seen them: from the other side, darker or
brighter, or closer. Pure functions of (image, label, ``BankConfig``); the bank
builder and the cached-feature benchmarks both call ``bank_views``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ..config import BankConfig
from ..errors import InputError


@dataclass(frozen=True)
class View:
    """One transformed copy of a labelled image; ``tag`` names the transform
    (``""`` is the image itself), unique within the image's views."""

    tag: str
    image: np.ndarray        # [H', W', 3] uint8
    label: np.ndarray        # [H', W'] label map, same transform


def view_tags(cfg: BankConfig, hw: tuple[int, int] | None = None) -> list[str]:
    """The tags ``bank_views`` gives for ``cfg`` (zoom tiles need the image size ``hw``
    only to be counted, not named: their tags are ``zoom<z>-<i>``)."""
    tags = [""]
    if cfg.augment_flip:
        tags.append("flip")
    tags += [f"gamma{g:g}" for g in cfg.augment_gamma]
    for z in cfg.augment_zoom:
        n = math.ceil(z) ** 2
        tags += [f"zoom{z:g}-{i}" for i in range(n)]
    return tags


def gamma_lut(gamma: float) -> np.ndarray:
    """uint8 -> uint8 table of ``255 * (x / 255) ** gamma`` (gamma < 1 brightens)."""
    x = np.arange(256, dtype=np.float64) / 255.0
    return np.clip(np.round(255.0 * x ** gamma), 0, 255).astype(np.uint8)


def zoom_boxes(hw: tuple[int, int], zoom: float) -> list[tuple[int, int, int, int]]:
    """``ceil(zoom)`` x ``ceil(zoom)`` crops of ``1/zoom`` of each side, evenly spaced
    from edge to edge so together they cover the image: (top, left, height, width)."""
    h, w = hw
    ch, cw = max(1, round(h / zoom)), max(1, round(w / zoom))
    n = math.ceil(zoom)
    tops = np.linspace(0, h - ch, n).round().astype(int) if n > 1 else [0]
    lefts = np.linspace(0, w - cw, n).round().astype(int) if n > 1 else [0]
    return [(int(t), int(left), ch, cw) for t in tops for left in lefts]


def bank_views(image: np.ndarray, label: np.ndarray, cfg: BankConfig) -> Iterator[View]:
    """The image itself, then each augmentation ``cfg`` asks for, in ``view_tags`` order.

    The backbone fits every view to its own pixel budget, so a zoom crop is seen
    ``zoom`` times larger than in the full frame: thin things cover more patches.
    """
    yield View("", image, label)
    if cfg.augment_flip:
        yield View("flip", np.ascontiguousarray(image[:, ::-1]),
                   np.ascontiguousarray(label[:, ::-1]))
    for g in cfg.augment_gamma:
        yield View(f"gamma{g:g}", gamma_lut(g)[image], label)
    for z in cfg.augment_zoom:
        for i, (t, left, ch, cw) in enumerate(zoom_boxes(label.shape[:2], z)):
            yield View(f"zoom{z:g}-{i}",
                       np.ascontiguousarray(image[t:t + ch, left:left + cw]),
                       np.ascontiguousarray(label[t:t + ch, left:left + cw]))


def augmented(cfg: BankConfig) -> bool:
    """Whether ``cfg`` asks for any view beyond the image itself."""
    return bool(cfg.augment_flip or cfg.augment_gamma or cfg.augment_zoom)


def zoom_factors(values) -> tuple[float, ...]:
    """``--zoom`` values (repeated, or comma-separated) as sorted unique factors in (1, 4]."""
    out = set()
    for value in values:
        for part in str(value).split(","):
            try:
                z = float(part)
            except ValueError:
                z = math.nan
            if not (math.isfinite(z) and 1.0 < z <= 4.0):
                raise InputError(f"--zoom {part.strip()!r} is not a zoom factor: give a number "
                                 f"above 1 and at most 4 (e.g. --zoom 2)")
            out.add(z)
    return tuple(sorted(out))
