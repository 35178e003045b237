"""Realistic synthetic inputs for the post-backbone benchmarks.

Real banks are clustered (many near-duplicate region vectors per class and
scene type) and real proposals are blobs of very different sizes with some
near-duplicates (SAM's multi-mask output), so uniform random vectors or equal
squares would flatter or penalise the wrong stages. Everything is seeded.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..smfa import l2_normalize
from ..types import BackboneIdentity, Bank, FeatureMap, GridGeometry, Proposals

DEFAULT_FRAME_HW = (360, 480)
DEFAULT_GRID_HW = (26, 35)
DEFAULT_PATCH = 14


def clustered_vectors(n: int, dim: int, n_clusters: int = 256, spread: float = 0.35,
                      seed: int = 0, centres: np.ndarray | None = None,
                      chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """``n`` L2-normalised float32 vectors around ``n_clusters`` random centres.

    Returns (vectors ``[n, dim]``, cluster id per vector). Generated in chunks
    so a 1M x 1152 bank never holds a float64 copy.
    """
    rng = np.random.default_rng(seed)
    if centres is None:
        centres = l2_normalize(rng.standard_normal((n_clusters, dim)).astype(np.float32))
    n_clusters = len(centres)
    cid = rng.integers(0, n_clusters, n)
    out = np.empty((n, dim), np.float32)
    scale = np.float32(spread / np.sqrt(dim))
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        noise = rng.standard_normal((e - s, dim), dtype=np.float32) * scale
        out[s:e] = centres[cid[s:e]] + noise
        out[s:e] /= np.linalg.norm(out[s:e], axis=1, keepdims=True)
    return out, cid


@dataclass
class Scene:
    """One frame's post-backbone inputs and the bank they are matched against."""

    fmap: FeatureMap
    proposals: Proposals
    bank: Bank


def make_bank(n: int = 20_000, dim: int = 384, n_classes: int = 12, clusters_per_class: int = 8,
              seed: int = 0, background: bool = True) -> tuple[Bank, np.ndarray]:
    """A bank of clustered vectors; clusters are owned by classes. Returns (bank, centres)."""
    rng = np.random.default_rng(seed + 1)
    centres = l2_normalize(rng.standard_normal((n_classes * clusters_per_class, dim))
                           .astype(np.float32))
    vecs, cid = clustered_vectors(n, dim, centres=centres, seed=seed)
    labels = (cid // clusters_per_class).astype(np.int32)
    names = (["background"] if background else ["class0"]) + \
        [f"class{c}" for c in range(1, n_classes)]
    ident = BackboneIdentity("bench-synthetic", "native", DEFAULT_PATCH, dim, "0" * 64)
    bank = Bank(vecs, labels, names, ident, np.array([f"img{i % 40}" for i in range(n)]),
                background_index=0 if background else None)
    return bank, centres


def blob_masks(n: int, image_hw=DEFAULT_FRAME_HW, seed: int = 0,
               duplicate_fraction: float = 0.25) -> np.ndarray:
    """``[n, H, W]`` bool blobs: unions of 1-3 rotated ellipses, areas log-uniform
    between ~300 px and ~40% of the frame; a fraction are jittered near-copies."""
    rng = np.random.default_rng(seed)
    H, W = image_hw
    out = np.zeros((n, H, W), bool)
    canvas = np.zeros((H, W), np.uint8)
    n_orig = max(1, int(round(n * (1 - duplicate_fraction))))
    for i in range(n):
        canvas[:] = 0
        if i >= n_orig:                      # near-duplicate of an earlier mask
            src = out[rng.integers(0, n_orig)].astype(np.uint8)
            dy, dx = rng.integers(-6, 7, 2)
            M = np.float32([[1, 0, dx], [0, 1, dy]])
            canvas = cv2.warpAffine(src, M, (W, H), flags=cv2.INTER_NEAREST)
            k = int(rng.integers(1, 4))
            op = cv2.dilate if rng.random() < 0.5 else cv2.erode
            canvas = op(canvas, np.ones((k * 2 + 1, k * 2 + 1), np.uint8))
            if canvas.sum() < 300:
                canvas = src
        else:
            area = float(np.exp(rng.uniform(np.log(400), np.log(0.4 * H * W))))
            cy, cx = rng.uniform(0, H), rng.uniform(0, W)
            for _ in range(int(rng.integers(1, 4))):
                ratio = rng.uniform(0.3, 1.0)
                a = np.sqrt(area / (np.pi * ratio))
                axes = (max(3, int(a)), max(3, int(a * ratio)))
                centre = (int(cx + rng.normal(0, a * 0.4)), int(cy + rng.normal(0, a * 0.4)))
                cv2.ellipse(canvas, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        out[i] = canvas.astype(bool)
    return out


def make_scene(n_proposals: int = 100, bank: Bank | None = None, centres=None,
               image_hw=DEFAULT_FRAME_HW, grid_hw=DEFAULT_GRID_HW, patch: int = DEFAULT_PATCH,
               padded: bool = False, seed: int = 0, clusters_per_class: int = 8) -> Scene:
    """Features whose patches sit near class cluster centres in a blocky layout, and
    blob proposals over it; ``padded=False`` gives ``GridGeometry.unpadded``."""
    if bank is None:
        bank, centres = make_bank(seed=seed, clusters_per_class=clusters_per_class)
    rng = np.random.default_rng(seed + 7)
    h, w = grid_hw
    D = bank.dim
    # blocky layout of cluster ids over the grid: a few rectangles of one cluster each
    layout = rng.integers(0, len(centres), (max(1, h // 4), max(1, w // 4)))
    layout = cv2.resize(layout.astype(np.float32), (w, h), interpolation=cv2.INTER_NEAREST)
    layout = layout.astype(np.int64)
    feats = centres[layout.reshape(-1)] + rng.standard_normal((h * w, D)).astype(np.float32) \
        * np.float32(0.6 / np.sqrt(D))
    feats = np.ascontiguousarray(feats.T.reshape(D, h, w) * 3.0, dtype=np.float32)
    if padded:   # as the ONNX backbone does it: native size, padded bottom/right
        geo = GridGeometry(tuple(image_hw), tuple(image_hw), tuple(grid_hw), patch)
    else:
        geo = GridGeometry.unpadded(image_hw, grid_hw, patch)
    masks = blob_masks(n_proposals, image_hw, seed=seed + 3)
    scores = np.random.default_rng(seed + 5).uniform(0.5, 1.0, n_proposals).astype(np.float32)
    return Scene(FeatureMap(feats, geo), Proposals(masks, scores, tuple(image_hw)), bank)
