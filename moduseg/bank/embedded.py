"""The default bank shipped inside the package, and the one command that rebuilds it.

A street-scene bank: the ``default`` preset over every labelled CamVid frame
(train + val), CamVid's class names and colours, stored as int8 codes with
per-dimension scales in a deflated ``.npz`` so the wheel stays small. The
rebuild is deterministic (no randomness, fixed zip timestamps, CPU backend),
so the same data and models give the same bytes.
"""

from __future__ import annotations

import dataclasses

import hashlib
import time
from importlib import resources
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import BankError
from .builder import spread

FILENAME = "camvid-default.npz"
MAX_BYTES = 10_000_000
QUANTIZATION = "int8"


def embedded_bank_path() -> Path:
    """Where the shipped bank lives inside the installed package."""
    return Path(str(resources.files("moduseg.bank") / "data" / FILENAME))


def default_bank_path() -> Path:
    """The shipped bank, or a clear error when this installation lacks it."""
    p = embedded_bank_path()
    if not p.is_file():
        raise BankError(
            f"the embedded default bank {p} is missing from this installation; reinstall "
            f"moduseg, pass --bank FILE, or rebuild it with "
            f"'moduseg bank build-default --root CAMVID'")
    return p


def resolve_bank(bank_path) -> Path:
    """``--bank`` if given, else the embedded default bank."""
    return Path(bank_path) if bank_path else default_bank_path()


def _camvid_all(root):
    """Every labelled CamVid frame: train then val, in file order."""
    from .datasets import CAMVID_PALETTE, Dataset, camvid

    parts = [camvid(root, split) for split in ("train", "val")]
    samples = [s for ds in parts for s in ds]
    return Dataset("camvid-train+val", parts[0].class_names, None, samples), CAMVID_PALETTE


def fit_to_budget(bank, path: Path, save: Callable, max_bytes: int = MAX_BYTES):
    """Save ``bank``; while the file exceeds ``max_bytes``, keep fewer vectors.

    The kept vectors are evenly spaced over the bank's order (image by image,
    region by region), so every class keeps its share. Returns (bank, size).
    """

    full = bank
    save(bank, path)
    size = path.stat().st_size
    while size > max_bytes:
        keep = spread(np.arange(len(full)), int(len(bank) * max_bytes / size * 0.99))
        bank = dataclasses.replace(
            full, vectors=full.vectors[keep], labels=full.labels[keep],
            image_ids=full.image_ids[keep],
            stats=dict(full.stats, subsampled={"from": len(full), "to": len(keep)}))
        save(bank, path)
        size = path.stat().st_size
    return bank, size


def build_default_bank(root, out=None, home=None, backend: str = "cpu",
                       log: Callable[[str], None] = print, progress: bool = True):
    """Rebuild the embedded bank from CamVid at ``root`` with ``preset("default")``.

    Writes ``out`` (default: the package's own bank file) and returns
    (path, sha256, size in bytes, seconds).
    """
    from ..config import preset
    from ..build import build_backbone
    from .builder import build_bank
    from .store import save_bank

    t0 = time.perf_counter()
    cfg = preset("default")
    ds, palette = _camvid_all(root)
    log(f"building the default bank from {len(ds)} CamVid frames in {root} "
        f"(preset 'default', {backend} backend)")
    backbone = build_backbone(cfg, backend, home)
    b = build_bank(ds, backbone, cfg.bank, progress=progress, config_record=cfg.to_dict())
    b = dataclasses.replace(b, palette=[list(c) for c in palette])
    path = Path(out) if out else embedded_bank_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    b, size = fit_to_budget(
        b, path, lambda bank, p: save_bank(bank, p, quantize=QUANTIZATION, compress=True))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return path, digest, size, len(b), time.perf_counter() - t0
