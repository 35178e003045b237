"""FAISS inner-product search over L2-normalised bank vectors.

Kinds: ``flat`` (exact, float32), ``flat_fp16`` (exact search over fp16
scalar-quantised storage: half the memory, near-identical ranking) and
``ivf`` (inverted lists, ``nlist = min(sqrt(n), 1024)``, ``nprobe =
min(32, nlist)``). ``auto`` picks by bank size: below ``FP16_FROM`` vectors
exact float32 costs little; up to ``IVF_FROM`` fp16 halves memory at no
measurable recall cost; beyond that a linear scan per query dominates and
IVF wins. The GPU indexes (``runtime/gpu_index.py``) follow the same rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError

FP16_FROM = 50_000
IVF_FROM = 200_000


def choose_kind(n: int, requested: str = "auto") -> str:
    if requested != "auto":
        return requested
    if n < FP16_FROM:
        return "flat"
    if n < IVF_FROM:
        return "flat_fp16"
    return "ivf"


def ivf_params(n: int, nprobe: int = 32) -> tuple[int, int]:
    nlist = max(1, min(int(np.sqrt(n)), 1024))
    return nlist, max(1, min(nprobe, nlist))


@dataclass
class SearchIndex:
    """A built index and how it was built."""

    index: object
    kind: str
    size: int
    dim: int
    owned: tuple = ()   # sub-objects (IVF quantizer) that must outlive the index

    def search(self, queries: np.ndarray, k: int):
        """``[Q, D]`` queries -> (``[Q, k']`` similarities, ``[Q, k']`` ids), ``k' = min(k, n)``."""
        if k <= 0:
            raise InputError(f"top-K must be positive, got {k}")
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise InputError(
                f"queries must be [Q, {self.dim}] to match the bank, got {queries.shape}; the "
                f"backbone's feature dim differs from the bank's")
        k = min(k, self.size)
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if len(q) == 0:
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
        sims, ids = self.index.search(q, k)
        return sims, ids


def build_index(vectors: np.ndarray, kind: str = "auto", nprobe: int = 32,
                seed: int = 0) -> SearchIndex:
    import faiss

    if vectors.ndim != 2 or len(vectors) == 0:
        raise InputError(f"cannot index an empty bank (vectors shape {vectors.shape})")
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if not np.isfinite(x).all():
        raise InputError("bank vectors contain NaN or infinite values; rebuild the bank")
    n, d = x.shape
    kind = choose_kind(n, kind)
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "flat_fp16":
        index = faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_fp16,
                                           faiss.METRIC_INNER_PRODUCT)
    elif kind == "ivf":
        nlist, probe = ivf_params(n, nprobe)
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        train = x if n <= 256 * nlist else x[rng.choice(n, 256 * nlist, replace=False)]
        index.cp.seed = seed
        index.train(train)
        index.nprobe = probe
    else:
        raise InputError(f"unknown index kind {kind!r}; choose auto, flat, flat_fp16 or ivf")
    index.add(x)
    owned = (quantizer,) if kind == "ivf" else ()
    return SearchIndex(index=index, kind=kind, size=n, dim=d, owned=owned)
