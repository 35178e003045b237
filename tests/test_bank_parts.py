"""``bank merge`` checks its parts like bank files and never writes a bank that
does not load (issue 29 item 4; item 6: ``--out DIR``, ``--background``,
duplicate class names).

On today's main each crafted part below is a traceback (a 36 TiB allocation,
TypeError/KeyError on the metadata, RecursionError) or a merged bank written
with exit 0 that ``segment`` then refuses.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from moduseg.bank.parts import load_part, merge_parts
from moduseg.bank.store import load_bank, save_checked_bank
from moduseg.cli import cli
from moduseg.errors import BankError, InputError, ModuSegError

from part_fixtures import (DIM, npz_with_raw_member, read_arrays, with_meta, write_arrays,
                           write_parts)
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from fuzz_fixtures import DTYPES, FUZZ, _npz, apply_json, attempt, json_mutations, mutated, report  # noqa: E402,F401


@pytest.fixture
def parts(tmp_path):
    return write_parts(tmp_path)


@pytest.fixture
def single(tmp_path):
    """The one part of a build in one shard (0/1): merge compares it with nothing, so
    only its own checks stand between a crafted file and the merged bank."""
    (tmp_path / "one").mkdir()
    return write_parts(tmp_path / "one", n_shards=1)[0]


def _merge_cli(paths, out):
    return CliRunner().invoke(cli, ["bank", "merge", *map(str, paths), "--out", str(out)])


def _one_line_exit_2(r, *words):
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.output
    for w in words:
        assert w in lines[0], lines[0]


def test_good_parts_merge_and_the_bank_loads(tmp_path, parts):
    out = tmp_path / "m.npz"
    r = _merge_cli(parts, out)
    assert r.exit_code == 0, r.output
    b = load_bank(out)
    assert b.class_names == ["bg", "a", "b"] and len(b) > 0


def _meta(part):
    return json.loads(str(read_arrays(part)["meta"]))


def _deep(n):
    return "[" * n + "]" * n


META_CRAFTS = {
    "version_string": lambda m: {**m, "version": "1"},
    "version_future": lambda m: {**m, "version": 99},
    "meta_list": lambda m: [m],
    "meta_null": lambda m: None,
    "shard_string": lambda m: {**m, "shard": "0/2"},
    "shard_short": lambda m: {**m, "shard": [0]},
    "shard_out_of_range": lambda m: {**m, "shard": [2, 2]},
    "shard_bool": lambda m: {**m, "shard": [False, 2]},
    "shard_missing": lambda m: {k: v for k, v in m.items() if k != "shard"},
    "selection_missing": lambda m: {k: v for k, v in m.items() if k != "selection"},
    "selection_count_string": lambda m: {**m, "selection": {"count": "4", "sha256": "x"}},
    "selection_count_huge": lambda m: {**m, "selection": {**m["selection"], "count": 2**40}},
    "backbone_missing": lambda m: {k: v for k, v in m.items() if k != "backbone"},
    "backbone_dim_string": lambda m: {**m, "backbone": {**m["backbone"], "feature_dim": "6"}},
    "backbone_dim_other": lambda m: {**m, "backbone": {**m["backbone"], "feature_dim": 7}},
    "dataset_list": lambda m: {**m, "dataset": ["toy"]},
    "class_names_missing": lambda m: {**m, "dataset": {"name": "toy"}},
    "class_names_duplicate": lambda m: {**m, "dataset": {**m["dataset"],
                                                          "class_names": ["bg", "a", "a"]}},
    "background_99": lambda m: {**m, "dataset": {**m["dataset"], "background_index": 99}},
    "background_minus_1": lambda m: {**m, "dataset": {**m["dataset"], "background_index": -1}},
    "config_list": lambda m: {**m, "config": [1]},
    "config_unknown_section": lambda m: {**m, "config": {**m["config"], "nope": {}}},
    "config_bad_value": lambda m: {**m, "config": {**m["config"],
                                                   "runtime": {"top_k": "many"}}},
    "config_bank_bad": lambda m: {**m, "config": {**m["config"], "bank": {"pca_dim": -5}}},
    "errors_list": lambda m: {**m, "errors": [1]},
    "deep_meta": lambda m: {**m, "stats": json.loads("[" * 40 + "]" * 40)},
}


@pytest.mark.parametrize("craft", sorted(META_CRAFTS))
def test_crafted_part_metadata_is_one_line_exit_2_and_nothing_written(tmp_path, single, craft):
    arrays = read_arrays(single)
    bad = write_arrays(tmp_path / "bad.npz", with_meta(arrays, META_CRAFTS[craft](_meta(single))))
    out = tmp_path / "m.npz"
    r = _merge_cli([bad], out)
    _one_line_exit_2(r, "bad.npz")
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".m.npz")]


def test_metadata_nested_past_the_parser_is_refused(tmp_path, single):
    arrays = read_arrays(single)
    bad = write_arrays(tmp_path / "bad.npz", with_meta(arrays, _deep(200_000)))
    with pytest.raises(BankError, match="bad.npz"):
        load_part(bad)


ARRAY_CRAFTS = {
    "nan_vectors": lambda a: {**a, "vectors": np.where(np.arange(a["vectors"].size).reshape(
        a["vectors"].shape) == 0, np.nan, a["vectors"]).astype(np.float32)},
    "inf_vectors": lambda a: {**a, "vectors": np.full_like(a["vectors"], np.inf)},
    "zero_vectors": lambda a: {**a, "vectors": np.zeros_like(a["vectors"])},
    "float64_vectors": lambda a: {**a, "vectors": a["vectors"].astype(np.float64)},
    "string_vectors": lambda a: {**a, "vectors": a["vectors"].astype(str)},
    "vectors_1d": lambda a: {**a, "vectors": a["vectors"].ravel()},
    "labels_out_of_range": lambda a: {**a, "labels": a["labels"] + 7},
    "labels_negative": lambda a: {**a, "labels": a["labels"] - 9},
    "labels_float": lambda a: {**a, "labels": a["labels"].astype(np.float32)},
    "counts_negative": lambda a: {**a, "counts": -a["counts"]},
    "counts_mismatch": lambda a: {**a, "counts": a["counts"] + 1},
    "positions_out_of_range": lambda a: {**a, "positions": a["positions"] + 1000},
    "positions_duplicate": lambda a: {**a, "positions": np.zeros_like(a["positions"])},
    "positions_2d": lambda a: {**a, "positions": a["positions"][None]},
    "image_ids_missing": lambda a: {k: v for k, v in a.items() if k != "image_ids"},
    "meta_number": lambda a: {**a, "meta": np.array(3.0)},
    "regions_negative": lambda a: {**a, "regions": -a["regions"] - 1},
}


@pytest.mark.parametrize("craft", sorted(ARRAY_CRAFTS))
def test_crafted_part_arrays_are_refused(tmp_path, single, craft):
    bad = write_arrays(tmp_path / "bad.npz", ARRAY_CRAFTS[craft](read_arrays(single)))
    out = tmp_path / "m.npz"
    r = _merge_cli([bad], out)
    _one_line_exit_2(r, "bad.npz")
    assert not out.exists()


def test_a_part_declaring_terabytes_is_refused_before_allocating(tmp_path, single):
    """The attack's 36.4 TiB allocation: the size guard of bank files applies."""
    arrays = read_arrays(single)
    header = {"descr": "<f4", "fortran_order": False, "shape": (2**40, 10)}
    data = np.zeros(8, np.float32).tobytes()
    bad = tmp_path / "bad.npz"
    bad.write_bytes(npz_with_raw_member(arrays, "vectors", header, data))
    with pytest.raises(BankError, match="bad.npz"):
        load_part(bad)
    # consistent sizes but more than the expansion limit: zip-compressed zeros
    import zipfile
    big = tmp_path / "big.npz"
    with zipfile.ZipFile(big, "w", zipfile.ZIP_DEFLATED) as z:
        for k, a in arrays.items():
            import io
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.zeros((3_000_000, DIM), np.float32)
                                      if k == "vectors" else a)
            z.writestr(f"{k}.npy", buf.getvalue())
    with pytest.raises(BankError, match="refused before reading"):
        load_part(big)


def test_parts_whose_merge_would_not_load_are_not_written(tmp_path, parts, monkeypatch):
    """A merged bank is loaded back before it appears (guard: parts are checked
    first, so the bank is broken here behind the checks' back)."""
    b = merge_parts(parts)
    b.vectors[0] = np.nan
    out = tmp_path / "m.npz"
    with pytest.raises(BankError, match="would not load, so it was not written"):
        save_checked_bank(b, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part0.npz", "part1.npz"]


def test_merge_out_that_is_a_folder_is_refused_first(tmp_path, parts):
    d = tmp_path / "dir"
    d.mkdir()
    r = _merge_cli(parts, d)
    _one_line_exit_2(r, "--out", "is a folder")
    assert list(d.iterdir()) == [] and not (tmp_path / "dir.npz").exists()


def test_merge_out_without_npz_is_refused(tmp_path, parts):
    r = _merge_cli(parts, tmp_path / "merged")
    _one_line_exit_2(r, "--out", ".npz")
    assert not (tmp_path / "merged.npz").exists()


# -- bank build: background index and class names (item 6) -------------------------------

@pytest.fixture
def fake_models(monkeypatch):
    import moduseg.bank.segmenter as recipes
    from scale_fixtures import fake_assemble
    monkeypatch.setattr(recipes, "build_for", fake_assemble)


@pytest.mark.parametrize("bg", ["99", "-1", "5"])
def test_bank_build_background_outside_the_classes(tmp_path, fake_models, bg):
    from scale_fixtures import bank_args, write_folder_dataset
    d = write_folder_dataset(tmp_path / "ds", n=2)
    args = bank_args(d, tmp_path / "b.npz")
    args[args.index("--background") + 1] = bg
    r = CliRunner().invoke(cli, args)
    _one_line_exit_2(r, f"background class index {bg}", "--background")
    assert not (tmp_path / "b.npz").exists()


def test_bank_build_duplicate_class_names(tmp_path, fake_models):
    from scale_fixtures import bank_args, write_folder_dataset
    d = write_folder_dataset(tmp_path / "ds", n=2)
    d["classes"].write_text("background\nclass1\nclass2\nclass1\nclass4\n")
    r = CliRunner().invoke(cli, bank_args(d, tmp_path / "b.npz"))
    _one_line_exit_2(r, "'class1' is given twice")
    assert not (tmp_path / "b.npz").exists()


def test_a_bank_with_duplicate_class_names_is_refused(tmp_path, parts):
    from moduseg.bank.store import save_bank
    b = merge_parts(parts)
    b.class_names = ["bg", "a", "a"]
    save_bank(b, tmp_path / "dup.npz")
    with pytest.raises(BankError, match="'a' twice"):
        load_bank(tmp_path / "dup.npz")


def test_every_refusal_is_a_moduseg_error():
    assert issubclass(BankError, ModuSegError) and issubclass(InputError, ModuSegError)


def test_bank_build_background_with_another_layout_is_refused(tmp_path):
    r = CliRunner().invoke(cli, ["bank", "build", "--dataset", "camvid", "--root", str(tmp_path),
                                 "--background", "99", "--out", str(tmp_path / "b.npz"),
                                 "--offline"])
    _one_line_exit_2(r, "--background 99 applies to --dataset folder only")


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
