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
from pathlib import Path

import numpy as np

from ..config import BankConfig
from ..errors import BankError, InputError
from ..io import atomic_path
from ..scale.shard import Shard
from ..types import BackboneIdentity, Bank
from .builder import ImageEntries, finish_bank
from .store import write_npz

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


def load_part(path) -> tuple[dict, list[tuple[int, ImageEntries]]]:
    """A part file -> (its metadata, [(position, entries)])."""
    path = Path(path)
    if not path.is_file():
        raise BankError(f"bank part {path} does not exist; build it with "
                        f"'moduseg bank build ... --shard i/N --out {path}'")
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            arrays = {k: z[k] for k in ("positions", "image_ids", "counts", "regions",
                                        "skipped", "vectors", "labels")}
    except (zipfile.BadZipFile, EOFError, OSError, KeyError, ValueError) as e:
        raise BankError(f"bank part {path} is unreadable or not a bank part "
                        f"({type(e).__name__}); rebuild it with 'bank build --shard'") from None
    if meta.get("format") != FORMAT:
        raise BankError(f"{path} is not a bank part (format {meta.get('format')!r}); "
                        f"'bank merge' takes the files written by 'bank build --shard i/N'")
    if meta.get("version", 0) > VERSION:
        raise BankError(f"bank part {path} has version {meta['version']}; upgrade moduseg")
    counts = arrays["counts"]
    n = len(arrays["positions"])
    if (any(len(arrays[k]) != n for k in ("image_ids", "counts", "regions", "skipped"))
            or (counts < 0).any() or int(counts.sum()) != len(arrays["vectors"])
            or len(arrays["labels"]) != len(arrays["vectors"])):
        raise BankError(f"bank part {path} is inconsistent (array lengths disagree); rebuild it")
    errors = meta.get("errors", {})
    ends = np.cumsum(counts)
    out = []
    for k, p in enumerate(arrays["positions"].tolist()):
        lo, hi = int(ends[k] - counts[k]), int(ends[k])
        out.append((p, ImageEntries(str(arrays["image_ids"][k]), arrays["vectors"][lo:hi],
                                    arrays["labels"][lo:hi], int(arrays["regions"][k]),
                                    int(arrays["skipped"][k]), errors.get(str(p)))))
    return meta, out


_MUST_MATCH = {"dataset": "dataset (name, classes, background)",
               "selection": "image selection (--limit/--shots or the dataset's files)",
               "backbone": "backbone", "config": "configuration (--preset/--set)"}


def merge_parts(paths) -> Bank:
    """Parts of one build -> the bank a single-process build writes."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise InputError("bank merge needs the part files written by 'bank build --shard i/N'")
    loaded = [(p, *load_part(p)) for p in paths]
    first_path, first, _ = loaded[0]
    for p, meta, _ in loaded[1:]:
        for key, what in _MUST_MATCH.items():
            if meta.get(key) != first.get(key):
                raise BankError(f"bank part {p} has a different {what} than {first_path}; "
                                f"merge only the parts of one 'bank build' command")
        if meta["shard"][1] != first["shard"][1]:
            raise BankError(f"bank part {p} is shard {meta['shard'][0]}/{meta['shard'][1]} but "
                            f"{first_path} is one of {first['shard'][1]}; merge parts of one split")
    count = first["shard"][1]
    seen: dict[int, Path] = {}
    for p, meta, _ in loaded:
        i = meta["shard"][0]
        if i in seen:
            raise BankError(f"shard {i}/{count} given twice ({seen[i]} and {p}); "
                            f"pass each part once")
        seen[i] = p
    missing = [f"{i}/{count}" for i in range(count) if i not in seen]
    if missing:
        raise BankError(f"missing shard(s) {', '.join(missing)} of {count}; build them with "
                        f"'moduseg bank build ... --shard i/{count}' and pass every part")
    total = first["selection"]["count"]
    by_pos: dict[int, ImageEntries] = {}
    for p, meta, entries in loaded:
        shard = Shard(*meta["shard"])
        if sorted(pos for pos, _ in entries) != list(shard.positions(total)):
            raise BankError(f"bank part {p} does not hold exactly the images of shard {shard} "
                            f"of {total}; rebuild it")
        by_pos.update(entries)
    ordered = [by_pos[i] for i in range(total)]
    ds = first["dataset"]
    record = first["config"]
    try:
        cfg = BankConfig(**record["bank"])
    except (KeyError, TypeError, InputError) as e:
        raise BankError(f"bank part {first_path} has an unusable configuration: {e}") from None
    return finish_bank(ordered, ds["class_names"], ds["background_index"],
                       BackboneIdentity.from_dict(first["backbone"]), cfg, record, ds["name"])
