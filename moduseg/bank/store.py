"""The bank file: one self-describing ``.npz`` artefact.

It holds the vectors, labels, per-vector provenance, class names, the
backbone identity and the build configuration. Writes go to a temporary
file first; reads turn every kind of damage into a ``BankError``.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from ..errors import BankError
from ..io import atomic_path
from ..types import BackboneIdentity, Bank

FORMAT = "moduseg-bank"
VERSION = 1


def save_bank(bank: Bank, path: str | Path) -> Path:
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_suffix(path.suffix + ".npz") if path.suffix else path.with_suffix(".npz")
    meta = {
        "format": FORMAT, "version": VERSION,
        "class_names": list(bank.class_names),
        "background_index": bank.background_index,
        "backbone": bank.backbone.to_dict(),
        "config": bank.config,
        "stats": bank.stats,
    }
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            write_npz(f, {"vectors": bank.vectors, "labels": bank.labels.astype(np.int32),
                          "image_ids": bank.image_ids.astype(str),
                          "meta": np.array(json.dumps(meta))})
    return path


def write_npz(f, arrays: dict) -> None:
    """``np.savez`` with fixed member timestamps, so equal arrays give equal file bytes.

    ``np.load`` reads it like any ``.npz``; a merged bank and a single-process
    bank can then be compared with ``cmp``.
    """
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as z:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            with z.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(arr), allow_pickle=False)


def load_bank(path: str | Path, expect: BackboneIdentity | None = None) -> Bank:
    """Read a bank; with ``expect``, refuse one built with another backbone."""
    path = Path(path)
    if not path.is_file():
        raise BankError(f"bank file {path} does not exist; build one with 'moduseg bank build'")
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            vectors, labels, ids = z["vectors"], z["labels"], z["image_ids"]
    except (zipfile.BadZipFile, EOFError, OSError, KeyError, ValueError) as e:
        raise BankError(
            f"bank file {path} is unreadable or truncated ({type(e).__name__}: {e}); "
            f"rebuild it with 'moduseg bank build'") from None
    if meta.get("format") != FORMAT:
        raise BankError(f"{path} is not a moduseg bank (format {meta.get('format')!r})")
    if meta.get("version", 0) > VERSION:
        raise BankError(f"bank {path} has format version {meta['version']}; this moduseg "
                        f"reads up to {VERSION}: upgrade moduseg")
    try:
        bank = Bank(vectors=vectors, labels=labels, class_names=meta["class_names"],
                    backbone=BackboneIdentity.from_dict(meta["backbone"]), image_ids=ids,
                    background_index=meta.get("background_index"),
                    config=meta.get("config", {}), stats=meta.get("stats", {}))
    except (KeyError, ValueError, TypeError) as e:
        raise BankError(f"bank file {path} is inconsistent: {e}") from None
    if expect is not None:
        check_identity(bank.backbone, expect, path)
    return bank


def check_identity(have: BackboneIdentity, want: BackboneIdentity, where="bank") -> None:
    """A bank only matches the backbone (and input policy) that built it."""
    diffs = [f"{k}: bank has {getattr(have, k)!r}, backbone is {getattr(want, k)!r}"
             for k in ("name", "input_size", "patch_size", "feature_dim", "weights_sha256")
             if getattr(have, k) != getattr(want, k)]
    if diffs:
        raise BankError(
            f"{where} was built with a different backbone ({'; '.join(diffs)}); rebuild the "
            f"bank with this backbone or load the backbone the bank was built with")
