"""CPU kernels for the per-pixel and per-pair loops, compiled by numba.

The post-backbone stages touch every mask pixel (area weights) and pairs of
masks (NMS); in numpy each of those is several full passes over temporary
arrays. These kernels make one pass over the bytes that matter. numba is a
dependency of the package, but everything here has a numpy fallback
(``HAVE_NUMBA``), so a missing or broken numba costs speed, never results.
Compiled code is cached on disk (``cache=True``), so only the first run on a
machine pays the compile.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

try:  # pragma: no cover - exercised by whichever branch the machine has
    import numba
    HAVE_NUMBA = True
except Exception as exc:  # noqa: BLE001 - any import failure means "no JIT"
    numba = None
    HAVE_NUMBA = False
    log.debug("numba unavailable (%s): CPU kernels fall back to numpy", exc)


def _jit(fn, **options):
    """The compiled ``fn`` (cached on disk, releases the GIL), or None without numba."""
    if not HAVE_NUMBA:
        return None
    return numba.njit(cache=True, nogil=True, **options)(fn)


def sparse_axis(overlap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``[cells, src]`` overlap matrix -> per source pixel (cell ids, weights), padded.

    A source pixel overlaps few cells (at most 2 when pixels are smaller than
    cells), so the kernel scatters each pixel into those few instead of
    multiplying by the dense matrix. Padding entries have weight 0, cell 0.
    """
    cells, src = overlap.shape
    px, cell = np.nonzero(overlap.T)             # sorted by source pixel, then cell
    counts = np.bincount(px, minlength=src)
    r = max(1, int(counts.max()) if src else 1)
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.arange(len(px)) - start[px]
    idx = np.zeros((src, r), np.int64)
    wgt = np.zeros((src, r), np.float32)
    idx[px, slot] = cell
    wgt[px, slot] = overlap.T[px, cell]
    return idx, wgt


def _area_weights(masks, rows, row_lo, row_hi, yi, yw, xi, xw, h, out):
    """out[k] = A_y @ masks[rows[k]] @ A_x.T with sparse A (per-pixel cell lists).

    Only pixel rows ``row_lo[k]:row_hi[k]`` (where the mask has pixels) are read.
    """
    wm = masks.shape[2]
    ry, rx = yi.shape[1], xi.shape[1]
    acc = np.zeros((h, wm), np.float32)
    for k in range(rows.shape[0]):
        m = masks[rows[k]]
        acc[:, :] = 0.0
        for y in range(row_lo[k], row_hi[k]):
            row = m[y]
            for t in range(ry):
                wy = yw[y, t]
                if wy == 0.0:
                    continue
                a = acc[yi[y, t]]
                for x in range(wm):
                    a[x] += wy * row[x]
        o = out[k]
        o[:, :] = 0.0
        for i in range(h):
            a = acc[i]
            for x in range(wm):
                v = a[x]
                if v == 0.0:
                    continue
                for t in range(rx):
                    o[i, xi[x, t]] += v * xw[x, t]


def _popcount64(x):
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return (x * np.uint64(0x0101010101010101)) >> np.uint64(56)


def _greedy_class_nms(bits, areas, first, last, labels, order, thr, keep):
    """Greedy NMS in ``order``; IoU only within a class, over the common word span."""
    n_kept = 0
    kept = np.empty(order.shape[0], np.int64)
    for oi in range(order.shape[0]):
        i = order[oi]
        ok = True
        for kk in range(n_kept):
            j = kept[kk]
            if labels[j] != labels[i]:
                continue
            lo = max(first[i], first[j])
            hi = min(last[i], last[j])
            inter = 0
            for wd in range(lo, hi):
                inter += popcount(bits[i, wd] & bits[j, wd])
            union = areas[i] + areas[j] - inter
            if union > 0 and inter / union > thr:
                ok = False
                break
        if ok:
            kept[n_kept] = i
            n_kept += 1
            keep[i] = True
    return n_kept


popcount = _jit(_popcount64, inline="always") if HAVE_NUMBA else _popcount64
_area_weights_jit = _jit(_area_weights)
_greedy_class_nms_jit = _jit(_greedy_class_nms)


def area_weights(masks: np.ndarray, rows: np.ndarray, ay: np.ndarray, ax: np.ndarray,
                 row_span: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray | None:
    """``masks[rows]`` -> ``[K, h, w]`` area weights; None when numba is missing.

    ``row_span`` (first, one-past-last pixel row of each selected mask, e.g.
    from ``PackedMasks``) lets the kernel skip empty rows.
    """
    if _area_weights_jit is None:
        return None
    m8 = masks.view(np.uint8) if masks.dtype == np.bool_ else (masks != 0).view(np.uint8)
    if not m8.flags.c_contiguous:
        m8 = np.ascontiguousarray(m8)
    yi, yw = sparse_axis(ay)
    xi, xw = sparse_axis(ax)
    out = np.empty((len(rows), ay.shape[0], ax.shape[0]), np.float32)
    if row_span is None:
        lo, hi = np.zeros(len(rows), np.int64), np.full(len(rows), m8.shape[1], np.int64)
    else:
        lo, hi = (np.clip(np.asarray(v, np.int64), 0, m8.shape[1]) for v in row_span)
    _area_weights_jit(m8, np.ascontiguousarray(rows, np.int64), lo, hi, yi, yw, xi, xw,
                      ay.shape[0], out)
    return out


def word_spans(bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and one-past-last non-zero word of each packed mask."""
    nz = bits != 0
    any_ = nz.any(1)
    first = np.where(any_, nz.argmax(1), 0)
    last = np.where(any_, bits.shape[1] - nz[:, ::-1].argmax(1), 0)
    return first.astype(np.int64), last.astype(np.int64)


def greedy_class_nms(bits: np.ndarray, areas: np.ndarray, spans, labels: np.ndarray,
                     order: np.ndarray, iou_threshold: float) -> np.ndarray | None:
    """Keep flags of class-wise greedy NMS in ``order``; None when numba is missing.

    ``spans``: (first, one-past-last) non-zero word per mask (``word_spans``).
    """
    if _greedy_class_nms_jit is None:
        return None
    first, last = spans
    keep = np.zeros(len(bits), np.bool_)
    _greedy_class_nms_jit(np.ascontiguousarray(bits), areas.astype(np.int64), first, last,
                          labels.astype(np.int64), order.astype(np.int64),
                          float(iou_threshold), keep)
    return keep


def _pruned_topk(q, x, offsets, ids, corder, ub, k, out_v, out_i, scanned):
    """Exact top-k per query, visiting clusters by descending upper bound.

    ``ub[qi, c]`` bounds every similarity in cluster ``c``; once the next
    cluster's bound is below the current k-th best, no later cluster can
    enter the top-k, so the scan stops. Results are sorted descending; ties
    keep the earlier (smaller) bank id first.
    """
    nq, d = q.shape
    total = 0
    for qi in range(nq):
        vals = out_v[qi]
        idx = out_i[qi]
        for t in range(k):
            vals[t] = -np.inf
            idx[t] = -1
        filled = 0
        for oc in range(corder.shape[1]):
            c = corder[qi, oc]
            if filled == k and ub[qi, c] < vals[k - 1]:
                break
            for r in range(offsets[c], offsets[c + 1]):
                s = np.float32(0.0)
                for j in range(d):
                    s += q[qi, j] * x[r, j]
                total += 1
                gid = ids[r]
                if filled == k and (s < vals[k - 1] or (s == vals[k - 1] and gid > idx[k - 1])):
                    continue
                # insert keeping (value desc, id asc)
                p = filled if filled < k else k - 1
                while p > 0 and (vals[p - 1] < s or (vals[p - 1] == s and idx[p - 1] > gid)):
                    vals[p] = vals[p - 1]
                    idx[p] = idx[p - 1]
                    p -= 1
                vals[p] = s
                idx[p] = gid
                if filled < k:
                    filled += 1
    scanned[0] = total


_pruned_topk_jit = _jit(_pruned_topk, fastmath=True)


def pruned_topk(q, x, offsets, ids, corder, ub, k):
    """See ``_pruned_topk``; returns (sims, ids, vectors scanned) or None without numba."""
    if _pruned_topk_jit is None:
        return None
    nq = len(q)
    out_v = np.empty((nq, k), np.float32)
    out_i = np.empty((nq, k), np.int64)
    scanned = np.zeros(1, np.int64)
    _pruned_topk_jit(np.ascontiguousarray(q, np.float32), x, offsets, ids,
                     np.ascontiguousarray(corder, np.int64), np.ascontiguousarray(ub, np.float32),
                     k, out_v, out_i, scanned)
    return out_v, out_i, int(scanned[0])
