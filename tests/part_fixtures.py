"""Synthetic ``bank build --shard`` parts, written by the real ``save_part`` without models."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np

from moduseg.bank.builder import ImageEntries
from moduseg.bank.parts import save_part
from moduseg.bank.store import write_npz
from moduseg.config import preset
from moduseg.scale.shard import Shard
from moduseg.types import BackboneIdentity

DIM = 6
CLASSES = ["bg", "a", "b"]
IDENTITY = BackboneIdentity("toy", "native", 8, DIM, "0" * 64)


def entries(n_images: int = 4, seed: int = 0) -> list[ImageEntries]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_images):
        labels = np.array([0, 1, 2, 1][: 2 + i % 3], np.int32)
        v = rng.standard_normal((len(labels), DIM)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        out.append(ImageEntries(f"img{i}", v, labels, regions=len(labels), skipped=0))
    return out


def write_parts(folder: Path, n_images: int = 4, n_shards: int = 2,
                background_index: int | None = 0) -> list[Path]:
    """The parts of one synthetic build (default preset, 3 principal axes)."""
    cfg = preset("default").with_overrides(**{"bank.pca_dim": 3})
    ents = entries(n_images)
    ids = [e.image_id for e in ents]
    paths = []
    for i in range(n_shards):
        shard = Shard(i, n_shards)
        pos = list(shard.positions(n_images))
        paths.append(save_part(folder / f"part{i}.npz", [ents[p] for p in pos], pos, shard, ids,
                               {"name": "toy", "class_names": list(CLASSES),
                                "background_index": background_index},
                               IDENTITY, cfg.to_dict()))
    return paths


def read_arrays(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def write_arrays(path: Path, arrays: dict) -> Path:
    with open(path, "wb") as f:
        write_npz(f, arrays)
    return path


def with_meta(arrays: dict, meta) -> dict:
    return dict(arrays, meta=np.array(meta if isinstance(meta, str) else json.dumps(meta)))


def npz_with_raw_member(arrays: dict, name: str, header: dict, data: bytes) -> bytes:
    """An .npz whose member ``name`` carries a hand-written .npy header (e.g. a
    shape of terabytes over a few bytes of data)."""
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w") as z:
        for k, a in arrays.items():
            buf = io.BytesIO()
            if k == name:
                np.lib.format.write_array_header_1_0(buf, header)
                buf.write(data)
            else:
                np.lib.format.write_array(buf, np.asarray(a), allow_pickle=False)
            z.writestr(f"{k}.npy", buf.getvalue())
    return b.getvalue()
