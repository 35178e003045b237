"""Tests of ``moduseg.bank.store``."""

from __future__ import annotations
import json
import tempfile
from pathlib import Path
import numpy as np
import pytest
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from fuzz_fixtures import DTYPES, FUZZ, _npz, apply_json, attempt, json_mutations, mutated  # noqa: E402
from reliability_fixtures import _run  # noqa: E402,F401
from moduseg.bank.builder import build_bank  # noqa: E402
from moduseg.bank.store import save_bank  # noqa: E402
from moduseg.config import BankConfig  # noqa: E402
from synthetic import ColourBackbone, dataset  # noqa: E402


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


BANK_BYTES, BANK_ARRAYS = _good_bank()


BANK_META = json.loads(str(BANK_ARRAYS["meta"]))


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


def _good_bank_arrays():
    from moduseg.bank.store import FORMAT
    rng = np.random.default_rng(0)
    v = rng.standard_normal((6, 5)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    meta = {"format": FORMAT, "version": 1, "class_names": ["bg", "a", "b"],
            "background_index": 0, "config": {}, "stats": {},
            "backbone": {"name": "colour-test", "input_size": "native", "patch_size": 8,
                         "feature_dim": 5, "weights_sha256": "0" * 64}}
    return {"vectors": v, "labels": np.array([0, 1, 2, 0, 1, 2], np.int32),
            "image_ids": np.array(["x"] * 6), "meta": meta}


def _write_bank(path, arrays, compress=False):
    import zipfile
    arrays = dict(arrays)
    if isinstance(arrays.get("meta"), (dict, list, int)):
        arrays["meta"] = np.array(json.dumps(arrays["meta"]))
    mode = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", mode) as z:
        for k, a in arrays.items():
            with z.open(f"{k}.npy", "w", force_zip64=True) as f:
                if isinstance(a, bytes):
                    f.write(a)
                else:
                    np.lib.format.write_array(f, np.asarray(a), allow_pickle=False)
    return path


def _bank_case(name):
    a = _good_bank_arrays()
    m = a["meta"]
    cases = {
        "vectors-str": dict(vectors=a["vectors"].astype(str)),
        "vectors-bool": dict(vectors=a["vectors"] > 0),
        "vectors-int8": dict(vectors=(a["vectors"] * 127).astype(np.int8)),
        "vectors-complex": dict(vectors=a["vectors"].astype(np.complex64)),
        "vectors-1d": dict(vectors=a["vectors"][:, 0]),
        "zero-vector": dict(vectors=np.where(np.arange(6)[:, None] == 2, 0, a["vectors"])
                            .astype(np.float32)),
        "nan-vector": dict(vectors=np.where(np.arange(6)[:, None] == 2, np.nan, a["vectors"])
                           .astype(np.float32)),
        "float-labels": dict(labels=a["labels"].astype(np.float32)),
        "labels-2d": dict(labels=np.stack([a["labels"]] * 2, 1)),
        "label-out-of-range": dict(labels=a["labels"] + 5),
        "names-not-strings": dict(meta={**m, "class_names": [1, 2, 3]}),
        "names-a-string": dict(meta={**m, "class_names": "abc"}),
        "background-99": dict(meta={**m, "background_index": 99}),
        "background-bool": dict(meta={**m, "background_index": True}),
        "meta-a-list": dict(meta=[1, 2]),
        "meta-an-int": dict(meta=3),
        "meta-not-json": dict(meta=np.array("{oops")),
        "meta-numbers": dict(meta=np.arange(3)),
        "config-a-string": dict(meta={**m, "config": "x"}),
        "stats-a-list": dict(meta={**m, "stats": [1]}),
        "backbone-missing": dict(meta={k: v for k, v in m.items() if k != "backbone"}),
        "backbone-wrong-type": dict(meta={**m, "backbone": {**m["backbone"],
                                                            "patch_size": "8"}}),
        "version-a-string": dict(meta={**m, "version": "1"}),
        "deep-nesting": dict(meta=np.array(json.dumps({**m, "config": {}})[:-1]
                                           .replace('"config": {}', '"config": ' + "[" * 5000
                                                    + "]" * 5000) + "}")),
        "deep-nesting-100": dict(meta={**m, "config": json.loads("[" * 100 + "]" * 100)}),
        "ids-missing": dict(image_ids=None),
        "ids-ints": dict(image_ids=np.arange(6)),
        "giant-shape": dict(vectors=_fake_npy((10 ** 9, 5), np.float32)),
    }
    a.update(cases[name])
    return {k: v for k, v in a.items() if v is not None}


def _fake_npy(shape, dtype) -> bytes:
    """A .npy header declaring ``shape`` followed by almost no data."""
    import io
    b = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        b, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
            "shape": shape})
    return b.getvalue() + b"\0" * 64


BANK_CASES = ["vectors-str", "vectors-bool", "vectors-int8", "vectors-complex", "vectors-1d",
              "zero-vector", "nan-vector", "float-labels", "labels-2d", "label-out-of-range",
              "names-not-strings", "names-a-string", "background-99", "background-bool",
              "meta-a-list", "meta-an-int", "meta-not-json", "meta-numbers", "config-a-string",
              "stats-a-list", "backbone-missing", "backbone-wrong-type", "version-a-string",
              "deep-nesting", "deep-nesting-100", "ids-missing", "ids-ints", "giant-shape"]


def test_the_good_crafted_bank_loads(tmp_path):
    from moduseg.bank.store import load_bank
    b = load_bank(_write_bank(tmp_path / "b.npz", _good_bank_arrays()))
    assert len(b) == 6 and b.background_index == 0


@pytest.mark.parametrize("case", BANK_CASES)
def test_malformed_banks_are_refused_by_load_and_bank_info(tmp_path, case):
    from moduseg.bank.store import load_bank
    from moduseg.errors import BankError
    path = _write_bank(tmp_path / "b.npz", _bank_case(case))
    with pytest.raises(BankError) as e:
        load_bank(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)
    r = _run(["bank", "info", str(path)])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output


@pytest.mark.slow
def test_segment_refuses_a_malformed_bank_before_loading_models(tmp_path):
    import cv2
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    path = _write_bank(tmp_path / "b.npz", _bank_case("background-99"))
    r = _run(["segment", str(tmp_path / "a.png"), "--bank", str(path),
              "--out", str(tmp_path / "out"), "--home", str(tmp_path / "no-models")])
    assert r.exit_code == 2 and "background_index" in r.output, r.output


def test_a_single_npy_is_not_a_bank(tmp_path):
    np.save(tmp_path / "v.npy", np.zeros((3, 4), np.float32))
    r = _run(["bank", "info", str(tmp_path / "v.npy")])
    assert r.exit_code == 2 and "not a .npz" in r.output, r.output


def test_a_compressed_bank_that_expands_hugely_is_refused_before_allocation(tmp_path,
                                                                           monkeypatch):
    from moduseg.bank import store
    from moduseg.bank.store import load_bank
    from moduseg.errors import BankError
    a = _good_bank_arrays()
    n = 60_000                       # 60000 x 384 float32 = 92 MB of zeros, ~90 KB deflated
    a.update(vectors=np.zeros((n, 384), np.float32), labels=np.zeros(n, np.int32),
             image_ids=np.array(["x"] * n))
    a["meta"]["backbone"]["feature_dim"] = 384
    path = _write_bank(tmp_path / "bomb.npz", a, compress=True)
    del a
    assert path.stat().st_size < 2_000_000

    def no_load(*a, **k):
        raise AssertionError("np.load reached: the arrays would be allocated")
    monkeypatch.setattr(store.np, "load", no_load)    # refused from the headers alone
    with pytest.raises(BankError, match="declares"):
        load_bank(path)


def test_projected_banks_say_version_2_and_plain_banks_stay_1(tmp_path):
    import json
    for pca, want in ((0, 1), (4, 2)):
        cfg = BankConfig(erosion_iterations=3, min_area=50, outlier_fraction=0.0, pca_dim=pca)
        path = save_bank(build_bank(dataset(4), ColourBackbone(), cfg), tmp_path / f"b{pca}.npz")
        with np.load(path) as z:
            assert json.loads(str(z["meta"]))["version"] == want
