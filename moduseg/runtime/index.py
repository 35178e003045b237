"""FAISS inner-product search over L2-normalised bank vectors.

Kinds: ``flat`` (exact, float32: one BLAS matrix product and a vectorised
top-K, ``ExactIndex``; faster than FAISS's flat index for a frame's worth
of queries, docs/results.md), ``flat_fp16`` (exact search over fp16
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


def topk_rows(sims: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the ``k`` largest values (descending) and their columns.

    The row is cut into ``B >= k`` blocks; the k-th largest block maximum is a
    lower bound of the row's k-th largest value (those k maxima are k distinct
    entries), so one comparison leaves few candidates per row and only those
    are sorted. Ties are ordered by column.
    """
    nq, n = sims.shape
    k = min(k, n)
    nb = min(n // 4, 32 * k)                    # blocks of at least 4 columns
    if nb >= k and nq:
        w = n // nb
        maxima = sims[:, :nb * w].reshape(nq, nb, w).max(2)
        t = np.partition(maxima, nb - k, axis=1)[:, nb - k]
        r, c = np.nonzero(sims >= t[:, None])
    else:
        r, c = np.divmod(np.arange(nq * n), n)
    v = sims[r, c]
    o = np.lexsort((c, -v, r))
    r, c, v = r[o], c[o], v[o]
    sel = np.searchsorted(r, np.arange(nq))[:, None] + np.arange(k)[None, :]
    return v[sel], c[sel].astype(np.int64)


class ExactIndex:
    """Exact inner-product search.

    Dense: BLAS ``Q @ X.T`` in row chunks + ``topk_rows``. Pruned (compiled
    kernel, banks of ``PRUNE_FROM`` to ``PRUNE_UP_TO`` vectors): the bank is
    split into k-means clusters, each with an angular radius, which bounds
    every similarity inside a cluster; each query scans clusters by
    descending bound and stops when the bound falls below its k-th best, so
    the result is the same exact top-K. Real banks are clustered (many
    near-duplicate vectors per class and scene), so most clusters are never
    read. When a batch still scans more than ``PRUNE_GIVE_UP`` of the bank,
    the index switches to the dense path for good.
    """

    CHUNK_ELEMENTS = 1 << 24          # similarity block held at once (64 MB)
    PRUNE_FROM = 4096
    PRUNE_UP_TO = IVF_FROM
    PRUNE_GIVE_UP = 0.35
    CALIBRATION_QUERIES = 32
    BOUND_MARGIN = 1e-4               # covers float rounding of the compiled dot products

    def __init__(self, vectors: np.ndarray, prune: bool | None = None, seed: int = 0):
        from .. import kernels

        self.x = np.ascontiguousarray(vectors, dtype=np.float32)
        self.ids = None                   # row -> bank id when rows are reordered
        self.ntotal = len(self.x)
        if prune is None:
            prune = kernels.HAVE_NUMBA and self.PRUNE_FROM <= self.ntotal <= self.PRUNE_UP_TO
        self.pruned = bool(prune) and kernels.HAVE_NUMBA
        self.scanned_fraction = 1.0
        if self.pruned:
            self._cluster(seed)
            self._calibrate(seed)

    def _cluster(self, seed: int) -> None:
        import faiss

        n, d = self.x.shape
        nc = max(2, int(round(np.sqrt(n))))
        km = faiss.Kmeans(d, nc, niter=12, seed=seed, spherical=True, verbose=False)
        km.train(self.x)
        cent = km.centroids / np.maximum(np.linalg.norm(km.centroids, axis=1, keepdims=True),
                                         1e-12)
        assign = np.argmax(self.x @ cent.T, axis=1)
        order = np.argsort(assign, kind="stable")
        # one copy of the bank, cluster-ordered; both search paths map rows back to ids
        self.x, self.ids = np.ascontiguousarray(self.x[order]), order.astype(np.int64)
        counts = np.bincount(assign, minlength=nc)
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        x64 = self.x.astype(np.float64)
        norms = np.linalg.norm(x64, axis=1)
        cos = np.einsum("nd,nd->n", x64, cent[assign[order]].astype(np.float64))
        ang = np.arccos(np.clip(cos / np.maximum(norms, 1e-30), -1.0, 1.0))
        self.radius = np.zeros(nc)             # angular radius of each cluster
        self.max_norm = np.zeros(nc)
        np.maximum.at(self.radius, assign[order], ang)
        np.maximum.at(self.max_norm, assign[order], norms)
        self.centroids = cent.astype(np.float32)

    def _calibrate(self, seed: int) -> None:
        """Bank vectors as queries: if the bounds do not prune them, go dense from the start."""
        rng = np.random.default_rng(seed)
        pick = rng.choice(self.ntotal, min(self.CALIBRATION_QUERIES, self.ntotal), replace=False)
        self.search(self.x[pick], 10)

    @property
    def nbytes(self) -> int:
        """Memory held: the vectors (cluster-ordered when pruning), ids and centroids."""
        extra = 0 if self.ids is None else self.ids.nbytes + self.centroids.nbytes
        return int(self.x.nbytes + extra)

    def upper_bounds(self, q: np.ndarray) -> np.ndarray:
        """``[Q, clusters]``: no vector of a cluster is more similar to the query."""
        qn = np.linalg.norm(q.astype(np.float64), axis=1)
        cos = (q @ self.centroids.T).astype(np.float64) / np.maximum(qn, 1e-30)[:, None]
        gap = np.maximum(np.arccos(np.clip(cos, -1.0, 1.0)) - self.radius[None], 0.0)
        return (qn[:, None] * self.max_norm[None] * np.cos(gap) + self.BOUND_MARGIN
                ).astype(np.float32)

    def search(self, q: np.ndarray, k: int):
        from .. import kernels

        if self.pruned:
            ub = self.upper_bounds(q)
            out = kernels.pruned_topk(q, self.x, self.offsets, self.ids,
                                      np.argsort(-ub, axis=1, kind="stable"), ub, k)
            sims, ids, scanned = out
            self.scanned_fraction = scanned / float(max(1, len(q) * self.ntotal))
            if self.scanned_fraction > self.PRUNE_GIVE_UP:
                self.pruned = False
            return sims, ids
        return self.dense_search(q, k)

    def dense_search(self, q: np.ndarray, k: int):
        n = self.ntotal
        rows = max(1, self.CHUNK_ELEMENTS // max(1, n))
        sims = np.empty((len(q), k), np.float32)
        ids = np.empty((len(q), k), np.int64)
        for s in range(0, len(q), rows):
            sims[s:s + rows], ids[s:s + rows] = topk_rows(q[s:s + rows] @ self.x.T, k)
        if self.ids is not None:
            ids = self.ids[ids]
        return sims, ids


@dataclass
class SearchIndex:
    """A built index and how it was built."""

    index: object
    kind: str
    size: int
    dim: int
    owned: tuple = ()   # sub-objects (IVF quantizer) that must outlive the index
    # (``[D, d]`` axes, ``[D]`` mean) of a projected bank (``bank.pca_dim``): queries in
    # the backbone's space are centred, projected and re-normalised first
    projection: tuple | None = None

    def search(self, queries: np.ndarray, k: int):
        """``[Q, D]`` queries -> (``[Q, k']`` similarities, ``[Q, k']`` ids), ``k' = min(k, n)``."""
        if k <= 0:
            raise InputError(f"top-K must be positive, got {k}")
        queries = project_queries(queries, self.projection)
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


def project_queries(queries: np.ndarray, projection: tuple | None) -> np.ndarray:
    """Queries in the backbone's space -> the projected bank's space (centred,
    projected, re-normalised); unchanged without a projection or when they are
    already projected."""
    if projection is None or queries.ndim != 2 or queries.shape[1] != projection[0].shape[0]:
        return queries
    P, mean = projection
    q = (queries.astype(np.float32, copy=False) - mean) @ P
    return q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)


class ProjectedIndex:
    """Any index (faiss-gpu, the NVRTC top-K) over a projected bank: queries are
    projected first, as ``SearchIndex`` does for the host indexes."""

    def __init__(self, inner, projection: tuple):
        self.inner, self.projection = inner, projection

    def search(self, queries: np.ndarray, k: int):
        return self.inner.search(project_queries(queries, self.projection), k)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def bank_projection(bank) -> tuple | None:
    """(``[D, d]`` axes, ``[D]`` mean) of a projected bank (``bank.pca_dim``), else None."""
    if getattr(bank, "projection", None) is None:
        return None
    return (np.ascontiguousarray(bank.projection, np.float32),
            np.ascontiguousarray(bank.projection_mean, np.float32))


def with_projection(index, bank):
    """``index`` searching ``bank``'s (possibly projected, ``bank.pca_dim``) space."""
    projection = bank_projection(bank)
    if projection is None:
        return index
    if isinstance(index, SearchIndex):
        index.projection = projection
        return index
    return ProjectedIndex(index, projection)


def bank_index(bank, kind: str = "auto", nprobe: int = 32) -> SearchIndex:
    """The host index of a ``Bank``; queries are projected when the bank is."""
    return with_projection(build_index(bank.vectors, kind, nprobe), bank)


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
        return SearchIndex(index=ExactIndex(x), kind=kind, size=n, dim=d)
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
