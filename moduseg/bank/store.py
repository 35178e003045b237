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
import zlib
from pathlib import Path

import numpy as np

from ..errors import BankError
from ..owned import atomic_path
from ..shipped import rebuild_hint  # noqa: F401 (bank API)
from ..types import BackboneIdentity, Bank, check_identity  # noqa: F401 (bank API)
from ..runtime.calibrate import check_calibration
from .quantize import INT8, dequantize_int8, quantize_int8

FORMAT = "moduseg-bank"
# 2: optional projection / projection_mean arrays (bank.pca_dim); a reader of version 1
# would ignore them and compare raw features with projected vectors, so such banks say 2
VERSION = 2
QUANTIZATIONS = (INT8,)
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed entry timestamps: same bank, same bytes


def write_npz(f, arrays: dict[str, np.ndarray], compress: bool = False) -> None:
    """``np.savez`` without the wall-clock timestamps in the zip entries: equal
    arrays give equal file bytes (a merged bank and a single-process one can be
    compared with ``cmp``)."""
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(f, "w", compression=method, allowZip64=True) as z:
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
        "format": FORMAT, "version": VERSION if bank.projection is not None else 1,
        "class_names": list(bank.class_names),
        "background_index": bank.background_index,
        "backbone": bank.backbone.to_dict(),
        "config": bank.config,
        "stats": bank.stats,
    }
    if bank.provenance:
        meta["provenance"] = bank.provenance
    if bank.calibration is not None:
        meta["calibration"] = bank.calibration
    if bank.palette is not None:
        meta["palette"] = [[int(c) for c in rgb] for rgb in bank.palette]
    arrays = {"vectors": bank.vectors}
    if quantize == INT8:
        arrays["vectors"], arrays["vector_scale"] = quantize_int8(bank.vectors)
        meta["quantization"] = INT8
    arrays.update(labels=bank.labels.astype(np.int32), image_ids=bank.image_ids.astype(str),
                  meta=np.array(json.dumps(meta)))
    if bank.projection is not None:
        arrays.update(projection=bank.projection.astype(np.float32),
                      projection_mean=bank.projection_mean.astype(np.float32))
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            write_npz(f, arrays, compress)
    return path


def save_checked_bank(bank: Bank, path: str | Path, quantize: str | None = None,
                      compress: bool = False) -> Path:
    """``save_bank``, but the file only appears at ``path`` once it loads back
    (``load_bank``: every check ``segment`` makes) with a configuration
    ``segment`` accepts; otherwise a ``BankError`` and nothing written."""
    from ..errors import InputError
    from ..settings import resolve_config

    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_suffix(path.suffix + ".npz") if path.suffix else path.with_suffix(".npz")
    with atomic_path(path, suffix=".npz") as tmp:
        save_bank(bank, tmp, quantize, compress)
        try:
            loaded = load_bank(tmp)
            resolve_config(None, (), loaded.config)
        except (BankError, InputError, TypeError, ValueError) as e:
            why = str(e).replace(str(tmp), "it")
            raise BankError(f"the bank for {path} would not load, so it was not written: "
                            f"{why}") from None
    return path


# Limits checked from the .npy headers inside the zip, before any array is read
# (numpy allocates a whole array before it reads the data).
MAX_EXPANSION = 16             # declared array bytes <= 16 x the file size + slack
EXPANSION_SLACK = 64 << 20
MAX_META_CHARS = 16 << 20
MAX_ID_CHARS = 1024
MAX_META_DEPTH = 32
MAX_CLASSES = 255              # label maps are uint8 with 255 = ignore
MEMBERS = ("meta", "vectors", "labels", "image_ids")


def check_vector_dtype(dtype: np.dtype, path, quantized: bool = False) -> None:
    """The one place that says which vector dtypes a bank may hold.

    float16 and float32 (cosine search on L2-normalised rows), or int8 codes
    together with their per-dimension ``vector_scale`` (``quantize="int8"``);
    bool, complex, strings and unscaled integers are refused.
    """
    ok = dtype == np.int8 if quantized else (dtype.kind == "f" and dtype.itemsize in (2, 4))
    if not ok:
        raise BankError(f"bank file {path} holds vectors of dtype {dtype}; a bank stores "
                        f"float16 or float32 vectors (or int8 codes with their scales): "
                        f"rebuild it with 'moduseg bank build'")


def _npy_headers(path: Path) -> dict[str, tuple[tuple, np.dtype, int]]:
    """name -> (shape, dtype, uncompressed bytes declared by the zip) of each member."""
    out = {}
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with z.open(info) as f:
                version = np.lib.format.read_magic(f)
                reader = {(1, 0): np.lib.format.read_array_header_1_0,
                          (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                if reader is None:
                    raise ValueError(f"unsupported .npy version {version}")
                shape, fortran, dtype = reader(f)
                header_len = f.tell()
            declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
            if declared != info.file_size - header_len:
                raise BankError(
                    f"bank file {path}: member {info.filename} declares {shape} {dtype} "
                    f"({declared} bytes) but holds {info.file_size - header_len} bytes; the "
                    f"file is truncated or crafted: rebuild it with 'moduseg bank build'")
            out[info.filename[:-4]] = (tuple(shape), dtype, declared)
    return out


def check_bank_headers(path: Path) -> dict:
    """Refuse a damaged or oversized bank from its headers alone (nothing allocated)."""
    heads = _npy_headers(path)
    missing = [m for m in MEMBERS if m not in heads]
    if missing:
        raise BankError(f"{path} is not a moduseg bank (no {', '.join(missing)} array); "
                        f"build one with 'moduseg bank build'")
    total = sum(h[2] for h in heads.values())
    limit = MAX_EXPANSION * path.stat().st_size + EXPANSION_SLACK
    if total > limit:
        raise BankError(
            f"bank file {path} declares {total} bytes of arrays in a {path.stat().st_size}-"
            f"byte file (more than {MAX_EXPANSION}x + {EXPANSION_SLACK >> 20} MiB): refused "
            f"before reading; rebuild it with 'moduseg bank build'")
    (ms, mt, _), (vs, vt, _) = heads["meta"], heads["vectors"]
    (ls, lt, _), (is_, it, _) = heads["labels"], heads["image_ids"]

    def bad(what):
        return BankError(f"bank file {path}: {what}; rebuild it with 'moduseg bank build'")

    if ms != () or mt.kind != "U" or mt.itemsize // 4 > MAX_META_CHARS:
        raise bad(f"metadata must be one JSON string, got {ms} {mt}")
    check_vector_dtype(vt, path, quantized="vector_scale" in heads)
    if len(vs) != 2 or vs[0] == 0 or not 0 < vs[1] <= 1 << 16:
        raise bad(f"vectors must be a non-empty [N, D] array, got shape {vs}")
    if lt.kind not in "iu" or lt.itemsize > 8:
        raise bad(f"labels must be integers, got dtype {lt}")
    if ls != vs[:1]:
        raise bad(f"labels must be one per vector ({vs[0]}), got shape {ls}")
    if it.kind != "U" or is_ != vs[:1] or it.itemsize // 4 > MAX_ID_CHARS:
        raise bad(f"image_ids must be {vs[0]} strings, got {is_} {it}")
    if ("projection" in heads) != ("projection_mean" in heads):
        raise bad("projection and projection_mean come together")
    if "projection" in heads:      # version 2: a bank projected by bank.pca_dim
        (ps, pt, _), (pms, pmt, _) = heads["projection"], heads["projection_mean"]
        if (pt.kind != "f" or pmt.kind != "f" or len(ps) != 2 or ps[1] != vs[1]
                or not 0 < ps[0] <= 1 << 16 or pms != ps[:1]):
            raise bad(f"projection must be a [D, {vs[1]}] float array with a [D] mean, "
                      f"got {ps} {pt} and {pms} {pmt}")
    return heads


def _depth(o, limit: int, d: int = 0) -> int:
    if d > limit:
        return d
    if isinstance(o, dict):
        return max([_depth(v, limit, d + 1) for v in o.values()], default=d + 1)
    if isinstance(o, list):
        return max([_depth(v, limit, d + 1) for v in o], default=d + 1)
    return d


def duplicate_names(names) -> str | None:
    """The first class name given twice (compared as written), else None."""
    seen = set()
    for n in names:
        if n in seen:
            return n
        seen.add(n)
    return None


def check_meta(meta, path) -> dict:
    """The metadata's types, before anything uses it."""
    def bad(what):
        return BankError(f"bank file {path}: metadata {what}; rebuild it with "
                         f"'moduseg bank build'")

    if not isinstance(meta, dict):
        raise bad(f"is a {type(meta).__name__}, not an object")
    if meta.get("format") != FORMAT:
        raise BankError(f"{path} is not a moduseg bank (format {meta.get('format')!r})")
    version = meta.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise bad(f"'version' is {version!r}, not an integer")
    if version > VERSION:
        raise BankError(f"bank {path} has format version {version}; this moduseg "
                        f"reads up to {VERSION}: upgrade moduseg")
    if _depth(meta, MAX_META_DEPTH) > MAX_META_DEPTH:
        raise bad(f"is nested deeper than {MAX_META_DEPTH} levels")
    names = meta.get("class_names")
    if not (isinstance(names, list) and 0 < len(names) <= MAX_CLASSES
            and all(isinstance(n, str) and n.strip() for n in names)):
        raise bad(f"'class_names' must be a list of 1..{MAX_CLASSES} non-empty strings")
    dup = duplicate_names(names)
    if dup:
        raise bad(f"'class_names' lists {dup!r} twice (each class needs its own name)")
    bg = meta.get("background_index")
    if bg is not None and (not isinstance(bg, int) or isinstance(bg, bool)
                           or not 0 <= bg < len(names)):
        raise bad(f"'background_index' {bg!r} is not an index into the {len(names)} classes")
    bb = meta.get("backbone")
    types = {"name": str, "input_size": str, "patch_size": int, "feature_dim": int,
             "weights_sha256": str}
    if not (isinstance(bb, dict) and all(
            isinstance(bb.get(k), t) and not isinstance(bb.get(k), bool)
            for k, t in types.items())):
        raise bad("'backbone' must hold name, input_size, weights_sha256 (strings), "
                  "patch_size and feature_dim (integers)")
    for key in ("config", "stats"):
        if not isinstance(meta.get(key, {}), dict):
            raise bad(f"'{key}' is a {type(meta[key]).__name__}, not an object")
    return meta


def load_bank(path: str | Path, expect: BackboneIdentity | None = None) -> Bank:
    """Read a bank; with ``expect``, refuse one built with another backbone.

    Headers, shapes, dtypes and sizes are checked before any array is read,
    the metadata before anything uses it, the values (finite, non-zero
    vectors, labels in range) before the bank is returned.
    """
    path = Path(path)
    if not path.is_file():
        raise BankError(f"bank file {path} does not exist; build one with 'moduseg bank build'")
    fix = "rebuild it with 'moduseg bank build'"
    if not zipfile.is_zipfile(path):
        raise BankError(f"bank file {path} is unreadable or truncated: not a .npz archive "
                        f"(perhaps a single .npy or another file); {fix}")
    try:
        check_bank_headers(path)
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            vectors, labels, ids = z["vectors"], z["labels"], z["image_ids"]
            proj = z["projection"] if "projection" in z.files else None
            proj_mean = z["projection_mean"] if "projection_mean" in z.files else None
            scale = z["vector_scale"] if "vector_scale" in z.files else None
    except BankError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, KeyError, ValueError, RecursionError,
            NotImplementedError, RuntimeError, zlib.error) as e:
        raise BankError(
            f"bank file {path} is unreadable or truncated ({type(e).__name__}: {e}); "
            f"{fix}") from None
    check_meta(meta, path)
    quant = meta.get("quantization")
    if quant is not None and quant not in QUANTIZATIONS:
        raise BankError(f"bank {path} uses quantisation {quant!r}, which this moduseg cannot "
                        f"read (it reads {QUANTIZATIONS}); upgrade moduseg")
    if (quant == INT8) != (scale is not None) or (quant is None) != (vectors.dtype.kind == "f"):
        raise BankError(f"bank file {path}: its vectors ({vectors.dtype}) do not match its "
                        f"quantisation ({quant!r}); {fix}")
    if proj is not None and not (np.isfinite(proj).all() and np.isfinite(proj_mean).all()):
        raise BankError(f"bank file {path} holds a NaN or infinite projection; {fix}")
    if not np.isfinite(vectors).all():
        raise BankError(f"bank file {path} holds NaN or infinite vectors; {fix}")
    zero = int((np.abs(vectors).max(axis=1) == 0).sum())
    if zero:
        raise BankError(f"bank file {path} holds {zero} zero vectors (a bank stores "
                        f"L2-normalised rows); {fix}")
    n = len(meta["class_names"])
    if labels.min() < 0 or labels.max() >= n:
        raise BankError(f"bank file {path} has labels {int(labels.min())}..{int(labels.max())}"
                        f" outside its {n} class names; {fix}")
    try:
        if quant == INT8:
            vectors = dequantize_int8(vectors, scale)
        bank = Bank(vectors=vectors, labels=labels, class_names=meta["class_names"],
                    backbone=BackboneIdentity.from_dict(meta["backbone"]), image_ids=ids,
                    background_index=meta.get("background_index"),
                    config=meta.get("config", {}), stats=meta.get("stats", {}),
                    projection=proj, projection_mean=proj_mean,
                    palette=meta.get("palette"), quantization=quant,
                    provenance=_provenance(meta.get("provenance"), meta["class_names"]),
                    calibration=check_calibration(meta.get("calibration"),
                                                  meta["class_names"]))
    except (KeyError, ValueError, TypeError, AttributeError, BankError) as e:
        raise BankError(f"bank file {path} is inconsistent: {e}") from None
    if expect is not None:
        check_identity(bank.backbone, expect, path)
    return bank


def _provenance(rec, class_names) -> dict:
    """The stored per-class provenance, keeping only well-formed entries of known
    classes (a bank without it, or with a damaged one, still loads)."""
    if not isinstance(rec, dict):
        return {}
    return {k: [e for e in v if isinstance(e, dict)] for k, v in rec.items()
            if k in class_names and isinstance(v, list)}
