"""The bank file: one self-describing ``.npz`` artefact.

It holds the vectors, labels, per-vector provenance, class names (and
optionally their colours), the backbone identity and the build
configuration. Vectors are float16/float32, or int8 codes with per-dimension
scales (``quantize="int8"``: a quarter of float32, for banks shipped inside
the package). Writes go to a temporary file first and are byte-for-byte
reproducible (fixed zip timestamps, no randomness); reads turn every kind of
damage into a ``BankError``.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np

from ..errors import BankError
from ..io import atomic_path
from ..types import BackboneIdentity, Bank
from .quantize import INT8, dequantize_int8, quantize_int8

FORMAT = "moduseg-bank"
VERSION = 1
QUANTIZATIONS = (INT8,)
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed entry timestamps: same bank, same bytes


def _write_npz(f, arrays: dict[str, np.ndarray], compress: bool) -> None:
    """``np.savez`` without the wall-clock timestamps in the zip entries."""
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(f, "w", compression=method) as z:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME)
            info.compress_type = method
            info.external_attr = 0o644 << 16
            z.writestr(info, buf.getvalue(), compresslevel=9 if compress else None)


def save_bank(bank: Bank, path: str | Path, quantize: str | None = None,
              compress: bool = False) -> Path:
    """Write ``bank``; ``quantize="int8"`` stores int8 codes + per-dimension scales,
    ``compress`` deflates the entries (smaller file, slower to write)."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_suffix(path.suffix + ".npz") if path.suffix else path.with_suffix(".npz")
    if quantize not in (None,) + QUANTIZATIONS:
        raise BankError(f"unknown bank quantisation {quantize!r}; use one of {QUANTIZATIONS}")
    meta = {
        "format": FORMAT, "version": VERSION,
        "class_names": list(bank.class_names),
        "background_index": bank.background_index,
        "backbone": bank.backbone.to_dict(),
        "config": bank.config,
        "stats": bank.stats,
    }
    if bank.palette is not None:
        meta["palette"] = [[int(c) for c in rgb] for rgb in bank.palette]
    arrays = {"vectors": bank.vectors}
    if quantize == INT8:
        arrays["vectors"], arrays["vector_scale"] = quantize_int8(bank.vectors)
        meta["quantization"] = INT8
    arrays.update(labels=bank.labels.astype(np.int32), image_ids=bank.image_ids.astype(str),
                  meta=np.array(json.dumps(meta)))
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            _write_npz(f, arrays, compress)
    return path


def load_bank(path: str | Path, expect: BackboneIdentity | None = None) -> Bank:
    """Read a bank; with ``expect``, refuse one built with another backbone."""
    path = Path(path)
    if not path.is_file():
        raise BankError(f"bank file {path} does not exist; build one with 'moduseg bank build'")
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            vectors, labels, ids = z["vectors"], z["labels"], z["image_ids"]
            scale = z["vector_scale"] if meta.get("quantization") == INT8 else None
    except (zipfile.BadZipFile, EOFError, OSError, KeyError, ValueError) as e:
        raise BankError(
            f"bank file {path} is unreadable or truncated ({type(e).__name__}: {e}); "
            f"rebuild it with 'moduseg bank build'") from None
    if meta.get("format") != FORMAT:
        raise BankError(f"{path} is not a moduseg bank (format {meta.get('format')!r})")
    if meta.get("version", 0) > VERSION:
        raise BankError(f"bank {path} has format version {meta['version']}; this moduseg "
                        f"reads up to {VERSION}: upgrade moduseg")
    quant = meta.get("quantization")
    if quant is not None and quant not in QUANTIZATIONS:
        raise BankError(f"bank {path} uses quantisation {quant!r}, which this moduseg cannot "
                        f"read (it reads {QUANTIZATIONS}); upgrade moduseg")
    try:
        if quant == INT8:
            vectors = dequantize_int8(vectors, scale)
        bank = Bank(vectors=vectors, labels=labels, class_names=meta["class_names"],
                    backbone=BackboneIdentity.from_dict(meta["backbone"]), image_ids=ids,
                    background_index=meta.get("background_index"),
                    config=meta.get("config", {}), stats=meta.get("stats", {}),
                    palette=meta.get("palette"), quantization=quant)
    except (KeyError, ValueError, TypeError, BankError) as e:
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
