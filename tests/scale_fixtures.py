"""Synthetic folder datasets and fake models for the scale-out tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from moduseg.io import write_image
from moduseg.types import Proposals

from synthetic import PALETTE, ColourBackbone

CLASSES = ["background", "class1", "class2", "class3", "class4"]


def scene(seed: int, H: int = 256, W: int = 320):
    """Large rectangles (they survive the paper preset's erosion) with colour speckles.

    The speckles make each region's pooled vector a little different, so the
    paper preset's outlier rejection has something to choose between.
    """
    rng = np.random.default_rng(seed)
    label = np.zeros((H, W), np.uint8)
    qh, qw = H // 2, W // 2
    for q in range(4):
        c = int(rng.integers(1, len(CLASSES)))
        h, w = int(rng.integers(64, qh - 8)), int(rng.integers(80, qw - 8))
        y0 = (q // 2) * qh + int(rng.integers(0, qh - h))
        x0 = (q % 2) * qw + int(rng.integers(0, qw - w))
        label[y0:y0 + h, x0:x0 + w] = c
    image = PALETTE[label].copy()
    speckle = rng.random((H, W)) < rng.uniform(0.01, 0.08)
    image[speckle] = PALETTE[rng.integers(0, len(PALETTE), int(speckle.sum()))]
    return image, label


def write_folder_dataset(root: Path, n: int = 9, bad: int | None = None) -> dict:
    """``n`` synthetic scenes as a folder layout; ``bad``: that image's label map is broken."""
    images, labels = root / "images", root / "labels"
    images.mkdir(parents=True)
    labels.mkdir()
    for i in range(n):
        img, lab = scene(i)
        write_image(images / f"img{i:02d}.png", img)
        if i == bad:
            lab = np.full_like(lab, 9)            # class 9 does not exist
        Image.fromarray(lab, mode="L").save(labels / f"img{i:02d}.png")
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return {"images": images, "labels": labels, "classes": root / "classes.txt"}


def bank_args(d: dict, out, *extra) -> list[str]:
    # the default preset projects the bank onto its 128 principal axes: the 5-dim stand-in
    # backbone gets 3 (the projection is fitted in the global step, after the merge)
    pca = [] if "paper" in extra else ["--set", "bank.pca_dim=3"]
    return ["bank", "build", "--dataset", "folder", "--root", str(d["images"]),
            "--labels", str(d["labels"]), "--classes", str(d["classes"]), "--background", "0",
            "--out", str(out), *extra, *pca]


class ColourProposer:
    """One proposal per palette colour present: exact masks for the synthetic scenes."""

    name = "colour"

    def __call__(self, image):
        masks = [(image == c).all(-1) for c in PALETTE]
        masks = [m for m in masks if m.any()]
        return Proposals(np.stack(masks), np.ones(len(masks)), image.shape[:2])


def fake_assemble(spec, what):
    """Stand-in for ``moduseg.bank.segmenter.build_for`` with the synthetic models."""
    if what == "backbone":
        return ColourBackbone()
    from moduseg.bank.store import load_bank
    from moduseg.runtime.pipeline import Segmenter
    from moduseg.settings import resolve_config
    bank = load_bank(spec.bank_path)
    cfg = resolve_config(spec.preset, spec.overrides, bank.config)
    return Segmenter(ColourBackbone(), ColourProposer(), bank, cfg, parallel=False)
