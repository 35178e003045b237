"""Which embedding cells the SAM decoder sees, and how its strip output maps back.

SAM's decoder was trained on the 64x64 embedding of a zero-padded square:
its prompt tokens attend to the padding cells too, and dropping them (the
content crop) moves the masks (mean per-prompt IoU 0.92 with the padded
decoder on CamVid) and costs val mIoU. Keeping them all costs their share
of the per-prompt attention (a quarter of the cells for 4:3, more than half
for 640x272). Padding cells are nearly alike, so ``cell_layout`` keeps the
content cells and replaces each ``pool x pool`` block of padding cells by
one cell: the mean of its embeddings at the mean of its positions, with
log weight ``log(block size)`` so the tokens' attention still sees the
block's mass (exact for identical cells; ``cell_list_input``). Pool 4 keeps
the masks at IoU 0.99 with the all-cells decoder for a fraction of its cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ...errors import InputError

GRID = 64      # embedding cells per side of the 1024 square


@dataclass(frozen=True)
class CellLayout:
    """The decoder's cells: the ``content_hw`` cells row-major, then the padding blocks."""

    content_hw: tuple[int, int]
    pool: int
    content_index: np.ndarray   # [ch * cw] flat 64x64 indices of the content cells
    block_order: np.ndarray     # flat indices of the padding cells, grouped by block
    block_starts: np.ndarray    # [blocks] offset of each block in block_order
    block_sizes: np.ndarray     # [blocks] cells per block
    coords: np.ndarray          # [1, n, 2] (x, y) of each cell, -1..1 over the grid
    log_weight: np.ndarray      # [n] log(cells represented)

    @property
    def n_cells(self) -> int:
        return int(self.log_weight.shape[0])


@lru_cache(maxsize=32)
def cell_layout(content_hw: tuple[int, int], pool: int, grid: int = GRID) -> CellLayout:
    """Content cells plus the padding pooled in ``pool x pool`` blocks.

    ``pool`` 0: no padding cells (the content crop); 1: every padding cell
    (with the content, exactly the padded decoder). Blocks tile the padding
    from the content's edge (the bottom rows under the content, then the
    columns right of it), clipped at the grid's edge.
    """
    ch, cw = (int(v) for v in content_hw)
    if not (0 < ch <= grid and 0 < cw <= grid):
        raise InputError(f"content cells {content_hw} must lie in 1..{grid} per side")
    if pool < 0:
        raise InputError(f"the padding pool must be >= 0 cells, got {pool}")
    rows, cols = np.mgrid[0:grid, 0:grid]
    content = ((rows < ch) & (cols < cw)).ravel()
    content_index = np.flatnonzero(content)
    blocks: list[np.ndarray] = []
    if pool > 0:
        for r0, r1, c0, c1 in ((ch, grid, 0, grid), (0, ch, cw, grid)):  # below, right of
            for r in range(r0, r1, pool):
                for c in range(c0, c1, pool):
                    rr, cc = np.mgrid[r:min(r + pool, r1), c:min(c + pool, c1)]
                    blocks.append((rr * grid + cc).ravel())
    sizes = np.array([len(b) for b in blocks], np.int64)
    order = np.concatenate(blocks) if blocks else np.zeros(0, np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64) if blocks \
        else np.zeros(0, np.int64)
    centre = (np.arange(grid, dtype=np.float64) + 0.5) / grid * 2 - 1
    xy = np.stack([centre[cols.ravel()], centre[rows.ravel()]], 1)          # [grid^2, 2]
    pooled_xy = (np.add.reduceat(xy[order], starts, axis=0) / sizes[:, None]
                 if blocks else np.zeros((0, 2)))
    coords = np.concatenate([xy[content_index], pooled_xy])[None].astype(np.float32)
    log_weight = np.concatenate([np.zeros(len(content_index)),
                                 np.log(sizes.astype(np.float64))]).astype(np.float32)
    for a in (content_index, order, starts, sizes, coords, log_weight):
        a.setflags(write=False)
    return CellLayout((ch, cw), int(pool), content_index, order, starts, sizes, coords,
                      log_weight)


def gather_cells(embedding: np.ndarray, layout: CellLayout) -> np.ndarray:
    """``[1, C, 64, 64]`` embedding -> the decoder's ``[1, C, 1, n]`` strip of cells."""
    c = embedding.shape[1]
    flat = embedding.reshape(c, -1)
    parts = [flat[:, layout.content_index]]
    if len(layout.block_sizes):
        sums = np.add.reduceat(flat[:, layout.block_order], layout.block_starts, axis=1)
        parts.append(sums / layout.block_sizes.astype(np.float32))
    return np.ascontiguousarray(np.concatenate(parts, 1)[None, :, None, :], dtype=np.float32)


def strip_to_grid(logits: np.ndarray, layout: CellLayout) -> np.ndarray:
    """Decoder output ``[B, K, f, f * n]`` -> the content's ``[B, K, ch * f, cw * f]``.

    Each cell's ``f x f`` logits (``f = 4 / mask_stride``) sit side by side in
    the strip; the padding cells' are dropped.
    """
    b, k, f, fn = logits.shape
    n = fn // f
    if f * n != fn or n != layout.n_cells:
        raise InputError(f"decoder output {logits.shape} does not match {layout.n_cells} "
                         f"cells")
    ch, cw = layout.content_hw
    cells = logits.reshape(b, k, f, n, f)[:, :, :, :ch * cw]           # [B,K,f,ch*cw,f]
    grid = cells.reshape(b, k, f, ch, cw, f).transpose(0, 1, 3, 2, 4, 5)
    return grid.reshape(b, k, ch * f, cw * f)
