"""Partial banks from ``bank build --shard i/N`` and ``bank merge``.

A part holds the per-image step's output for its share of the build order
(vectors before outlier rejection, per-image region counts and failures)
with the provenance merge needs: shard, build-order positions, a digest of
the whole selection, dataset classes, backbone identity and configuration.
Merge checks that the parts belong together and cover every shard once,
puts the images back in build order and runs the same global step as a
single-process build (``builder.finish_bank``).
"""

from __future__ import annotations

import hashlib
import json
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import BankError, InputError
from ..owned import atomic_path
from ..scale.shard import Shard
from ..types import BackboneIdentity, Bank, is_int
from ..settings import resolve_config
from ..text import printable
from .builder import ImageEntries, finish_bank
from .store import (EXPANSION_SLACK, MAX_EXPANSION, MAX_ID_CHARS, MAX_META_CHARS,
                    MAX_META_DEPTH, _depth, _npy_headers, check_meta, write_npz)
from .store import FORMAT as STORE_FORMAT

FORMAT = "moduseg-bank-part"
VERSION = 1


def selection_digest(image_ids: list[str]) -> str:
    """sha256 of the build order, so parts of different selections never merge."""
    return hashlib.sha256("\n".join(image_ids).encode()).hexdigest()


def save_part(path, entries: list[ImageEntries], positions, shard: Shard,
              selection: list[str], dataset: dict, identity: BackboneIdentity,
              config_record: dict) -> Path:
    """Write one shard's entries (``positions`` index the build order ``selection``)."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    positions = np.asarray(list(positions), np.int64)
    if len(positions) != len(entries):
        raise InputError(f"{len(entries)} entries for {len(positions)} positions")
    dim = identity.feature_dim
    meta = {"format": FORMAT, "version": VERSION, "shard": [shard.index, shard.count],
            "selection": {"count": len(selection), "sha256": selection_digest(selection)},
            "dataset": dataset, "backbone": identity.to_dict(), "config": config_record,
            "errors": {str(p): e.error for p, e in zip(positions.tolist(), entries) if e.error}}
    vectors = [e.vectors for e in entries]
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            write_npz(f, {
                "positions": positions,
                "image_ids": np.asarray([e.image_id for e in entries], dtype=str),
                "counts": np.asarray([len(e.labels) for e in entries], np.int64),
                "regions": np.asarray([e.regions for e in entries], np.int64),
                "skipped": np.asarray([e.skipped for e in entries], np.int64),
                "vectors": (np.concatenate(vectors) if vectors
                            else np.zeros((0, dim), np.float32)),
                "labels": (np.concatenate([e.labels for e in entries]) if entries
                           else np.zeros(0, np.int32)).astype(np.int32),
                "meta": np.array(json.dumps(meta)),
            })
    return path


PART_MEMBERS = {"meta": "U", "positions": "iu", "image_ids": "U", "counts": "iu",
                "regions": "iu", "skipped": "iu", "vectors": "f", "labels": "iu"}
MAX_SHARDS = 1 << 16


def _bad(path, what: str) -> BankError:
    return BankError(f"bank part {printable(path)}: {what}; rebuild it with "
                     f"'moduseg bank build ... --shard i/N'")


def check_part_headers(path: Path) -> dict:
    """Refuse a damaged, crafted or oversized part from its ``.npy`` headers alone,
    with the bank loader's limits (nothing is allocated before this passes)."""
    heads = _npy_headers(path)
    missing = [m for m in PART_MEMBERS if m not in heads]
    if missing:
        raise BankError(f"{printable(path)} is not a bank part (no {', '.join(missing)} "
                        f"array); 'bank merge' takes the files written by 'bank build "
                        f"--shard i/N'")
    total = sum(h[2] for h in heads.values())
    size = path.stat().st_size
    if total > MAX_EXPANSION * size + EXPANSION_SLACK:
        raise _bad(path, f"it declares {total} bytes of arrays in a {size}-byte file (more "
                         f"than {MAX_EXPANSION}x + {EXPANSION_SLACK >> 20} MiB), refused "
                         f"before reading")
    for name, kinds in PART_MEMBERS.items():
        shape, dtype, _ = heads[name]
        if dtype.kind not in kinds or (dtype.kind in "iu" and dtype.itemsize > 8):
            raise _bad(path, f"array {name} has dtype {dtype}")
    (ms, mt, _), (vs, vt, _) = heads["meta"], heads["vectors"]
    if ms != () or mt.itemsize // 4 > MAX_META_CHARS:
        raise _bad(path, f"its metadata must be one JSON string, got {ms} {mt}")
    if vt.itemsize not in (2, 4) or len(vs) != 2 or not 0 < vs[1] <= 1 << 16:
        raise _bad(path, f"vectors must be a float16/float32 [N, D] array, got {vs} {vt}")
    n = heads["positions"][0]
    if len(n) != 1:
        raise _bad(path, f"positions must be one list, got shape {n}")
    for name in ("image_ids", "counts", "regions", "skipped"):
        if heads[name][0] != n:
            raise _bad(path, f"array {name} has shape {heads[name][0]}, not {n} (one per "
                             f"image)")
    if heads["labels"][0] != vs[:1]:
        raise _bad(path, f"labels must be one per vector ({vs[0]}), got {heads['labels'][0]}")
    if heads["image_ids"][1].itemsize // 4 > MAX_ID_CHARS:
        raise _bad(path, "image ids are longer than {MAX_ID_CHARS} characters")
    return heads


def check_part_meta(meta, path) -> dict:
    """A part's metadata: the types merge relies on and what a bank's metadata must
    pass (classes, background, backbone, a configuration ``segment`` accepts)."""
    if not isinstance(meta, dict):
        raise _bad(path, f"its metadata is a {type(meta).__name__}, not an object")
    if meta.get("format") != FORMAT:
        raise BankError(f"{printable(path)} is not a bank part (format "
                        f"{printable(repr(meta.get('format')))[:60]}); 'bank merge' takes the "
                        f"files written by 'bank build --shard i/N'")
    version = meta.get("version", 0)
    if not is_int(version):
        raise _bad(path, f"'version' is {printable(repr(version))[:40]}, not an integer")
    if version > VERSION:
        raise BankError(f"bank part {printable(path)} has version {version}; this moduseg "
                        f"reads up to {VERSION}: upgrade moduseg")
    if _depth(meta, MAX_META_DEPTH) > MAX_META_DEPTH:
        raise _bad(path, f"its metadata is nested deeper than {MAX_META_DEPTH} levels")
    shard = meta.get("shard")
    if not (isinstance(shard, list) and len(shard) == 2 and all(map(is_int, shard))
            and 1 <= shard[1] <= MAX_SHARDS and 0 <= shard[0] < shard[1]):
        raise _bad(path, f"'shard' must be [i, N] with 0 <= i < N <= {MAX_SHARDS}")
    sel = meta.get("selection")
    if not (isinstance(sel, dict) and is_int(sel.get("count")) and sel["count"] >= 0
            and isinstance(sel.get("sha256"), str)):
        raise _bad(path, "'selection' must hold an image count and a sha256")
    ds = meta.get("dataset")
    if not (isinstance(ds, dict) and isinstance(ds.get("name"), str)):
        raise _bad(path, "'dataset' must hold a name, class_names and background_index")
    # the class names, background index and backbone as a bank's metadata holds them
    check_meta({"format": STORE_FORMAT, "version": 1, "class_names": ds.get("class_names"),
                "background_index": ds.get("background_index"),
                "backbone": meta.get("backbone"), "config": meta.get("config", {})}, path)
    cfg = meta.get("config")
    try:
        if not isinstance(cfg, dict):
            raise InputError(f"it is a {type(cfg).__name__}")
        resolve_config(None, (), cfg)
    except (InputError, TypeError, ValueError) as e:    # a crafted value the parser trips on
        raise _bad(path, f"its configuration is unusable ({printable(e)})") from None
    if int(meta["backbone"]["feature_dim"]) <= 0:
        raise _bad(path, "the backbone's feature_dim must be positive")
    errors = meta.get("errors", {})
    if not (isinstance(errors, dict) and all(isinstance(v, str) for v in errors.values())):
        raise _bad(path, "'errors' must map positions to messages")
    return meta


def load_part(path) -> tuple[dict, list[tuple[int, ImageEntries]]]:
    """A part file -> (its metadata, [(position, entries)]).

    Checked like a bank file: headers and sizes before any array is read, the
    metadata before anything uses it, the values (finite vectors, labels in
    range, positions in the selection) before they are merged.
    """
    path = Path(path)
    shown = printable(path)
    if not path.is_file():
        raise BankError(f"bank part {shown} does not exist; build it with "
                        f"'moduseg bank build ... --shard i/N --out {shown}'")
    if not zipfile.is_zipfile(path):
        raise BankError(f"bank part {shown} is unreadable or not a bank part (not a .npz "
                        f"archive); rebuild it with 'bank build --shard'")
    try:
        check_part_headers(path)
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            arrays = {k: z[k] for k in PART_MEMBERS if k != "meta"}
    except BankError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, KeyError, ValueError, RecursionError,
            NotImplementedError, RuntimeError, MemoryError, zlib.error) as e:
        raise BankError(f"bank part {shown} is unreadable or not a bank part "
                        f"({type(e).__name__}); rebuild it with 'bank build --shard'") from None
    check_part_meta(meta, path)
    counts, vectors, labels = arrays["counts"], arrays["vectors"], arrays["labels"]
    positions = arrays["positions"]
    if int(counts.astype(np.int64).sum()) != len(vectors) or (counts < 0).any():
        raise _bad(path, "it is inconsistent (per-image counts do not add up to its "
                         "vectors)")
    if (arrays["regions"] < 0).any() or (arrays["skipped"] < 0).any():
        raise _bad(path, "it holds negative region counts")
    total = meta["selection"]["count"]
    if len(positions) and (positions.min() < 0 or positions.max() >= total
                           or len(np.unique(positions)) != len(positions)):
        raise _bad(path, f"its positions are not distinct images of the {total} selected")
    if vectors.shape[1] != meta["backbone"]["feature_dim"]:
        raise _bad(path, f"its vectors have {vectors.shape[1]} dimensions but its backbone "
                         f"gives {meta['backbone']['feature_dim']}")
    if not np.isfinite(vectors).all():
        raise _bad(path, "it holds NaN or infinite vectors")
    if len(vectors) and (np.abs(vectors).max(axis=1) == 0).any():
        raise _bad(path, "it holds zero vectors")
    n_classes = len(meta["dataset"]["class_names"])
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        raise _bad(path, f"its labels {int(labels.min())}..{int(labels.max())} are outside "
                         f"its {n_classes} classes")
    errors = meta.get("errors", {})
    ends = np.cumsum(counts.astype(np.int64))
    out = []
    for k, p in enumerate(positions.tolist()):
        lo, hi = int(ends[k] - counts[k]), int(ends[k])
        out.append((p, ImageEntries(str(arrays["image_ids"][k]), vectors[lo:hi],
                                    labels[lo:hi].astype(np.int32), int(arrays["regions"][k]),
                                    int(arrays["skipped"][k]), errors.get(str(p)))))
    return meta, out


_MUST_MATCH = {"dataset": "dataset (name, classes, background)",
               "selection": "image selection (--limit/--shots or the dataset's files)",
               "backbone": "backbone", "config": "configuration (--preset/--set)"}


def merge_parts(paths) -> Bank:
    """Parts of one build -> the bank a single-process build writes.

    Every part passes a bank file's checks first (``load_part``); the merged
    bank is checked again when it is written (``store.save_checked_bank``).
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise InputError("bank merge needs the part files written by 'bank build --shard i/N'")
    loaded = [(p, *load_part(p)) for p in paths]
    first_path, first, _ = loaded[0]
    for p, meta, _ in loaded[1:]:
        for key, what in _MUST_MATCH.items():
            if meta.get(key) != first.get(key):
                raise BankError(f"bank part {printable(p)} has a different {what} than "
                                f"{printable(first_path)}; merge only the parts of one "
                                f"'bank build' command")
        if meta["shard"][1] != first["shard"][1]:
            raise BankError(f"bank part {printable(p)} is shard {meta['shard'][0]}/"
                            f"{meta['shard'][1]} but {printable(first_path)} is one of "
                            f"{first['shard'][1]}; merge parts of one split")
    count = first["shard"][1]
    seen: dict[int, Path] = {}
    for p, meta, _ in loaded:
        i = meta["shard"][0]
        if i in seen:
            raise BankError(f"shard {i}/{count} given twice ({printable(seen[i])} and "
                            f"{printable(p)}); pass each part once")
        seen[i] = p
    missing = [f"{i}/{count}" for i in range(count) if i not in seen]
    if missing:
        more = f" and {len(missing) - 8} more" if len(missing) > 8 else ""
        raise BankError(f"missing shard(s) {', '.join(missing[:8])}{more} of {count}; build "
                        f"them with 'moduseg bank build ... --shard i/{count}' and pass every "
                        f"part")
    total = first["selection"]["count"]
    by_pos: dict[int, ImageEntries] = {}
    for p, meta, entries in loaded:
        shard = Shard(*meta["shard"])
        own = shard.positions(total)
        if len(entries) != len(own) or sorted(pos for pos, _ in entries) != list(own):
            raise BankError(f"bank part {printable(p)} does not hold exactly the images of "
                            f"shard {shard} of {total}; rebuild it")
        by_pos.update(entries)
    ordered = [by_pos[i] for i in range(total)]
    ds = first["dataset"]
    record = first["config"]
    cfg = resolve_config(None, (), record).bank       # checked in load_part
    return finish_bank(ordered, ds["class_names"], ds["background_index"],
                       BackboneIdentity.from_dict(first["backbone"]), cfg, record, ds["name"])
