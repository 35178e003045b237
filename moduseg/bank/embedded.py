"""The banks shipped inside the package (one per preset), and the one command that
rebuilds them.

A bank only serves the backbone settings that built it (blocks, normalisation,
pixel budget), so each preset gets its own street-scene bank: the preset over
every labelled CamVid frame (train + val), CamVid's class names and colours,
stored as int8 codes with per-dimension scales in a deflated ``.npz`` so the
wheel stays small. The rebuild is deterministic (no randomness, fixed zip
timestamps, CPU backend), so the same data and models give the same bytes.
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
from ..shipped import EMBEDDED_BANKS, NO_EMBEDDED_BANK

FILENAME = EMBEDDED_BANKS["default"]
MAX_BYTES = 10_000_000          # one bank
TOTAL_MAX_BYTES = 16_000_000    # every shipped bank together (the wheel's bank data)
QUANTIZATION = "int8"


def _check_preset(preset: str) -> str:
    if preset not in EMBEDDED_BANKS:
        raise BankError(f"no bank is shipped for preset {preset!r}; presets with an embedded "
                        f"bank: {', '.join(EMBEDDED_BANKS)}; pass --bank FILE")
    return preset


def rebuild_command(preset: str = "default") -> str:
    """The command that (re)builds the embedded bank of ``preset``."""
    tail = "" if preset == "default" else f" --preset {preset}"
    return f"moduseg bank build-default --root CAMVID{tail}"


def embedded_bank_path(preset: str = "default") -> Path:
    """Where the shipped bank of ``preset`` lives inside the installed package."""
    name = EMBEDDED_BANKS[_check_preset(preset)]
    return Path(str(resources.files("moduseg.bank") / "data" / name))


def default_bank_path(preset: str | None = None) -> Path:
    """The shipped bank of ``preset`` (``None``: the default preset's), or a clear error
    naming the command that rebuilds it when this installation lacks it."""
    preset = preset or "default"
    p = embedded_bank_path(preset)
    if not p.is_file():
        raise BankError(
            f"the embedded {preset} bank {p} is missing from this installation; reinstall "
            f"moduseg, pass --bank FILE, or rebuild it with '{rebuild_command(preset)}'")
    return p


def resolve_bank(bank_path, preset: str | None = None) -> Path:
    """``--bank`` if given, else the embedded bank of ``--preset`` (each preset ships
    one: a bank serves only the backbone settings that built it), else the default's."""
    if bank_path:
        return Path(bank_path)
    base = str(preset).split("+")[0] if preset else None
    if base in NO_EMBEDDED_BANK:
        raise BankError(
            f"preset {base!r} ships no embedded bank ({NO_EMBEDDED_BANK[base]}); build one with "
            f"'moduseg bank build --dataset LAYOUT --root DATA --preset {base} --out BANK.npz' "
            f"and pass --bank BANK.npz")
    return default_bank_path(preset if preset in EMBEDDED_BANKS else None)


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
                       log: Callable[[str], None] = print, progress: bool = True,
                       preset: str = "default"):
    """Rebuild the embedded bank of ``preset`` from CamVid at ``root``.

    Writes ``out`` (default: the package's own bank file for that preset) and
    returns (path, sha256, size in bytes, vectors, seconds).
    """
    from ..build import build_backbone
    from ..config import preset as named_preset
    from .builder import build_bank
    from .store import save_bank

    t0 = time.perf_counter()
    cfg = named_preset(_check_preset(preset))
    ds, palette = _camvid_all(root)
    log(f"building the {preset} bank from {len(ds)} CamVid frames in {root} "
        f"(preset {preset!r}, {backend} backend)")
    backbone = build_backbone(cfg, backend, home)
    b = build_bank(ds, backbone, cfg.bank, progress=progress, config_record=cfg.to_dict())
    b = dataclasses.replace(b, palette=[list(c) for c in palette])
    path = Path(out) if out else embedded_bank_path(preset)
    path.parent.mkdir(parents=True, exist_ok=True)
    b, size = fit_to_budget(
        b, path, lambda bank, p: save_bank(bank, p, quantize=QUANTIZATION, compress=True))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return path, digest, size, len(b), time.perf_counter() - t0
