"""Property-based fuzzing of everything that parses user files (issue 18).

Mutated CamVid/VOC listings, COCO JSON, YOLO label files, folder label PNGs,
class files and bank files go through the readers; whatever the input, the
only exception allowed out is a ``ModuSegError`` (one line for the user).
Bounded: a fixed number of derandomised examples per reader and a deadline,
so the suite takes seconds in CI. ``STATS`` counts the outcomes (run with
``-s`` to see them).
"""

from __future__ import annotations

import collections
import io
import json
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from PIL import Image  # noqa: E402

from moduseg.bank.datasets import (camvid, coco_json, folder, read_class_names,  # noqa: E402
                                   voc, yolo_seg)
from moduseg.errors import ModuSegError  # noqa: E402

FUZZ = settings(max_examples=120, deadline=2000, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
STATS: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)


def attempt(target: str, fn) -> None:
    """Run ``fn``; count ok / refused (ModuSegError); anything else escapes and fails."""
    try:
        fn()
    except ModuSegError as e:
        assert "\n" not in str(e).strip(), str(e)          # one line for the user
        STATS[target]["refused"] += 1
    except Exception:
        STATS[target]["escape"] += 1
        raise
    else:
        STATS[target]["ok"] += 1


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    for target, c in sorted(STATS.items()):
        print(f"\nfuzz {target}: {sum(c.values())} cases, {c['ok']} ok, "
              f"{c['refused']} refused, {c['escape']} escapes")


# --------------------------------------------------------------------------- #
# mutation strategies

OPS = st.tuples(st.sampled_from(["flip", "insert", "delete", "truncate", "dup"]),
                st.integers(0, 1 << 20), st.binary(min_size=1, max_size=8))


def mutate(seed: bytes, ops) -> bytes:
    b = bytearray(seed)
    for op, pos, data in ops:
        i = pos % (len(b) + 1)
        if op == "flip" and b:
            b[i % len(b)] ^= data[0] or 1
        elif op == "insert":
            b[i:i] = data
        elif op == "delete":
            del b[i:i + len(data)]
        elif op == "truncate":
            del b[i:]
        elif op == "dup":
            b[i:i] = b[i:i + 16 * len(data)]
    return bytes(b)


def mutated(seed: bytes):
    return st.lists(OPS, min_size=1, max_size=6).map(lambda ops: mutate(seed, ops))


TOKENS = st.sampled_from(["0", "1", "3", "-1", "255", "0.5", "0.25", "1.0", "1e30", "-0.5",
                          "nan", "inf", "-inf", "abc", "", "0x1f", "1_0", "\u00e9", "\x00",
                          "train/a.png", "trainannot/a.png", "/abs/x.png", "../up.png",
                          "a b", "#"])
TEXT_LINES = st.lists(st.lists(TOKENS, max_size=9).map(" ".join), max_size=6).map(
    lambda ls: "\n".join(ls).encode("utf-8", "surrogatepass"))

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats() | st.text(max_size=8),
    lambda ch: st.lists(ch, max_size=4) | st.dictionaries(st.text(max_size=6), ch,
                                                          max_size=4),
    max_leaves=8)


def json_paths(o, prefix=()):
    yield prefix
    if isinstance(o, dict):
        for k, v in o.items():
            yield from json_paths(v, prefix + (k,))
    elif isinstance(o, list):
        for i, v in enumerate(o):
            yield from json_paths(v, prefix + (i,))


def replace_at(o, path, value, delete=False):
    if not path:
        return value
    o = json.loads(json.dumps(o))
    parent = o
    for k in path[:-1]:
        parent = parent[k]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return o


def json_mutations(good):
    paths = list(json_paths(good))
    return st.lists(st.tuples(st.sampled_from(paths), JSON_VALUES, st.booleans()),
                    min_size=1, max_size=3)


def apply_json(good, muts):
    o = good
    for path, value, delete in muts:
        try:
            o = replace_at(o, path, value, delete and bool(path))
        except (KeyError, IndexError, TypeError):
            pass   # an earlier mutation removed that path
    return o


def png_bytes(arr: np.ndarray, mode=None) -> bytes:
    b = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(b, format="PNG")
    return b.getvalue()


LABEL_PNG = png_bytes(np.tile(np.arange(12, dtype=np.uint8), (9, 1))[:, :12])
IMAGE_PNG = png_bytes(np.full((9, 12, 3), 90, np.uint8))


def load_all(ds) -> None:
    for s in ds.samples[:3]:
        s.label()


# --------------------------------------------------------------------------- #
# readers


def _camvid_root(d: Path) -> Path:
    for sub in ("train", "trainannot"):
        (d / sub).mkdir()
    (d / "train" / "a.png").write_bytes(IMAGE_PNG)
    (d / "trainannot" / "a.png").write_bytes(LABEL_PNG)
    return d


CAMVID_GOOD = b"train/a.png trainannot/a.png\n"


@FUZZ
@given(st.one_of(mutated(CAMVID_GOOD), TEXT_LINES, st.binary(max_size=64)),
       mutated(LABEL_PNG) | st.just(LABEL_PNG))
def test_fuzz_camvid_listing_and_label(listing, label):
    with tempfile.TemporaryDirectory() as d:
        root = _camvid_root(Path(d))
        (root / "train.txt").write_bytes(listing)
        (root / "trainannot" / "a.png").write_bytes(label)
        attempt("camvid", lambda: load_all(camvid(root, "train")))


@FUZZ
@given(st.one_of(TEXT_LINES, mutated(b"a\nb\n")), mutated(LABEL_PNG) | st.just(LABEL_PNG))
def test_fuzz_voc_listing_and_label(listing, label):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "SegmentationClass").mkdir()
        (root / "ImageSets" / "Segmentation").mkdir(parents=True)
        (root / "SegmentationClass" / "a.png").write_bytes(label)
        (root / "ImageSets" / "Segmentation" / "train.txt").write_bytes(listing)
        attempt("voc", lambda: load_all(voc(root, "train")))


YOLO_GOOD = b"0 0.1 0.1 0.9 0.1 0.9 0.9\n3 0.2 0.2 0.4 0.2 0.3 0.5\n"


@FUZZ
@given(st.one_of(mutated(YOLO_GOOD), TEXT_LINES))
def test_fuzz_yolo_label_file(text):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "images" / "s").mkdir(parents=True)
        (root / "labels" / "s").mkdir(parents=True)
        (root / "images" / "s" / "a.png").write_bytes(IMAGE_PNG)
        (root / "labels" / "s" / "a.txt").write_bytes(text)
        attempt("yolo", lambda: load_all(yolo_seg(root, "s")))


COCO_GOOD = {
    "images": [{"id": 1, "file_name": "a.png", "height": 9, "width": 12}],
    "categories": [{"id": 5, "name": "cat"}, {"id": 7, "name": "dog"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 5, "iscrowd": 0,
         "segmentation": [[1, 1, 8, 1, 8, 6, 1, 6]]},
        {"id": 2, "image_id": 1, "category_id": 7, "iscrowd": 1,
         "segmentation": {"size": [9, 12], "counts": [20, 30, 58]}},
        {"id": 3, "image_id": 1, "category_id": 7, "iscrowd": 0,
         "segmentation": {"size": [9, 12], "counts": "m04500000000000`0"}}],
}


@FUZZ
@given(st.one_of(json_mutations(COCO_GOOD).map(lambda m: json.dumps(apply_json(COCO_GOOD, m))
                                                .encode()),
                 mutated(json.dumps(COCO_GOOD).encode())))
@pytest.mark.slow
def test_fuzz_coco_json(data):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "ann.json"
        p.write_bytes(data)
        attempt("coco", lambda: load_all(coco_json(p, d)))


@FUZZ
@given(mutated(LABEL_PNG), st.one_of(TEXT_LINES, mutated(b"bg\ncat\n# x\ndog\n"),
                                     st.binary(max_size=32)))
def test_fuzz_folder_labels_and_class_file(label, classes):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "img").mkdir()
        (root / "lab").mkdir()
        (root / "img" / "a.png").write_bytes(IMAGE_PNG)
        (root / "lab" / "a.png").write_bytes(label)
        (root / "classes.txt").write_bytes(classes)
        attempt("class-file", lambda: read_class_names(root / "classes.txt"))
        attempt("folder", lambda: load_all(folder(root / "img", root / "lab", ["bg", "x"])))


# --------------------------------------------------------------------------- #
# bank loader

def _good_bank() -> tuple[bytes, dict]:
    from moduseg.bank.store import FORMAT
    rng = np.random.default_rng(0)
    v = rng.standard_normal((6, 5)).astype(np.float16)
    meta = {"format": FORMAT, "version": 1, "class_names": ["bg", "a", "b"],
            "background_index": 0, "config": {"preset": "default"}, "stats": {},
            "backbone": {"name": "t", "input_size": "native", "patch_size": 8,
                         "feature_dim": 5, "weights_sha256": "0" * 64}}
    arrays = {"vectors": v, "labels": np.array([0, 1, 2, 0, 1, 2], np.int32),
              "image_ids": np.array(["x", "y", "z", "x", "y", "z"]),
              "meta": np.array(json.dumps(meta))}
    return _npz(arrays), arrays


def _npz(arrays: dict) -> bytes:
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w") as z:
        for k, a in arrays.items():
            with z.open(f"{k}.npy", "w") as f:
                np.lib.format.write_array(f, np.asarray(a), allow_pickle=False)
    return b.getvalue()


BANK_BYTES, BANK_ARRAYS = _good_bank()
BANK_META = json.loads(str(BANK_ARRAYS["meta"]))
DTYPES = st.sampled_from([np.float16, np.float32, np.float64, np.int8, np.int32, np.uint8,
                          np.int64, np.bool_, np.complex64, "U3", "S2"])


@st.composite
def mutated_arrays(draw):
    from hypothesis.extra import numpy as hnp
    arrays = dict(BANK_ARRAYS)
    for _ in range(draw(st.integers(1, 2))):
        key = draw(st.sampled_from(sorted(arrays)))
        kind = draw(st.sampled_from(["array", "drop", "meta"]))
        if kind == "drop":
            arrays.pop(key, None)
        elif kind == "meta":
            muts = draw(json_mutations(BANK_META))
            arrays["meta"] = np.array(json.dumps(apply_json(BANK_META, muts)))
        else:
            dtype = np.dtype(draw(DTYPES))
            shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=7))
            arrays[key] = draw(hnp.arrays(dtype, shape))
    return _npz(arrays)


@FUZZ
@given(st.one_of(mutated(BANK_BYTES), mutated_arrays()))
def test_fuzz_bank_loader(data):
    from moduseg.bank.store import load_bank
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "b.npz"
        p.write_bytes(data)
        attempt("bank", lambda: load_bank(p))


# --------------------------------------------------------------------------- #
# bank merge parts (issue 29 item 4): a part passes a bank file's checks, and a
# merged bank is loaded back before it is written

def _good_parts() -> dict:
    """Bytes and arrays of the parts of a 2-shard build and of a 1-shard build."""
    from part_fixtures import read_arrays, write_parts
    out = {}
    with tempfile.TemporaryDirectory() as d:
        for n in (1, 2):
            (Path(d) / str(n)).mkdir()
            paths = write_parts(Path(d) / str(n), n_images=4, n_shards=n)
            out[n] = ([p.read_bytes() for p in paths], read_arrays(paths[0]))
    return out


PARTS = _good_parts()


@st.composite
def mutated_part(draw):
    """(shards, bytes of a mutated part 0): raw byte edits, or arrays and metadata
    replaced by hypothesis' arrays and JSON values."""
    from hypothesis.extra import numpy as hnp
    n = draw(st.sampled_from([1, 2]))
    raw, good = PARTS[n]
    if draw(st.booleans()):
        return n, draw(mutated(raw[0]))
    arrays = dict(good)
    meta = json.loads(str(good["meta"]))
    for _ in range(draw(st.integers(1, 2))):
        key = draw(st.sampled_from(sorted(arrays)))
        kind = draw(st.sampled_from(["array", "drop", "meta", "meta", "values"]))
        if kind == "drop":
            arrays.pop(key, None)
        elif kind == "meta":
            arrays["meta"] = np.array(json.dumps(apply_json(meta, draw(json_mutations(meta)))))
        elif kind == "values" and key != "meta" and key in arrays:
            a = arrays[key]          # same dtype and shape, other values (NaN, huge, negative)
            arrays[key] = draw(hnp.arrays(a.dtype, a.shape))
        else:
            dtype = np.dtype(draw(DTYPES))
            shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=7))
            arrays[key] = draw(hnp.arrays(dtype, shape))
    return n, _npz(arrays)


@settings(FUZZ, max_examples=400)
@given(mutated_part())
def test_fuzz_bank_merge_parts(case):
    """Merge a mutated part 0 (with the good rest of its build) and write the bank:
    only ``ModuSegError`` may come out, and a written bank must load."""
    from moduseg.bank.parts import merge_parts
    from moduseg.bank.store import load_bank, save_checked_bank
    n, data = case
    with tempfile.TemporaryDirectory() as d:
        paths = [Path(d) / f"p{i}.npz" for i in range(n)]
        paths[0].write_bytes(data)
        for i in range(1, n):
            paths[i].write_bytes(PARTS[n][0][i])
        out = Path(d) / "m.npz"

        def merge():
            save_checked_bank(merge_parts(paths), out)
            load_bank(out)
        attempt("part", merge)


# --------------------------------------------------------------------------- #
# stored configurations (a bank's, a result's) and preset files

def _stored_configs() -> list[dict]:
    """The embedded bank's stored configuration and each preset file, as written."""
    from moduseg.bank.embedded import embedded_bank_path
    from moduseg.bank.store import load_bank
    from moduseg.config import PRESET_DIR, preset_names
    out = [load_bank(embedded_bank_path()).config]
    for name in preset_names():
        d = json.loads((PRESET_DIR / f"{name}.json").read_text())
        d.pop("description", None)
        out.append(d)
    return out


STORED_CONFIGS = _stored_configs()


@FUZZ
@given(st.sampled_from(range(len(STORED_CONFIGS))).flatmap(
    lambda i: json_mutations(STORED_CONFIGS[i]).map(lambda m: apply_json(STORED_CONFIGS[i], m))),
    st.sampled_from([None, "sam", "entityseg"]))
def test_fuzz_stored_configuration(stored, proposer):
    """What ``segment``/``eval`` do with a bank's configuration: resolve it (with
    ``--proposer``); only a ModuSegError (one line) escapes, and what is accepted
    round-trips through JSON."""
    from moduseg.config import ModuSegConfig
    from moduseg.settings import resolve_config

    def run():
        cfg = resolve_config(None, [], stored if isinstance(stored, dict) else {"x": stored},
                             proposer=proposer)
        assert ModuSegConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    attempt("stored config", run)
