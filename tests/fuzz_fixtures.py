"""Test helpers shared by several test modules."""

from __future__ import annotations
import collections
import io
import json
import zipfile
import numpy as np
import pytest
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
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


def _npz(arrays: dict) -> bytes:
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w") as z:
        for k, a in arrays.items():
            with z.open(f"{k}.npy", "w") as f:
                np.lib.format.write_array(f, np.asarray(a), allow_pickle=False)
    return b.getvalue()


DTYPES = st.sampled_from([np.float16, np.float32, np.float64, np.int8, np.int32, np.uint8,
                          np.int64, np.bool_, np.complex64, "U3", "S2"])
