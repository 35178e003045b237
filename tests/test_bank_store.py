"""Tests of ``moduseg.bank.store`` (moved here from test_fuzz_inputs.py)."""

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
