"""Pure numpy/cv2 operations of the automatic mask generator.

Everything here works on low-resolution masks (SAM's logit grid, not the
image), so the cost per frame is bounded by (number of masks) x (grid cells),
not by the image size.
"""

from __future__ import annotations

import cv2
import numpy as np

from ...errors import InputError


def point_grid(n_rows: int, n_cols: int) -> np.ndarray:
    """Cell-centred ``[n_rows * n_cols, 2]`` (x, y) points in [0, 1] (SAM's grid)."""
    if n_rows < 1 or n_cols < 1:
        raise InputError(f"point grid needs at least 1x1 points, got {n_rows}x{n_cols}")
    ys = (np.arange(n_rows, dtype=np.float32) + 0.5) / n_rows
    xs = (np.arange(n_cols, dtype=np.float32) + 0.5) / n_cols
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


def stability_score(logits: np.ndarray, offset: float = 1.0,
                    threshold: float = 0.0) -> np.ndarray:
    """SAM's stability: IoU of the masks thresholded at ``threshold +- offset``.

    The mask at ``+offset`` is contained in the one at ``-offset``, so the IoU
    is a ratio of pixel counts. ``logits``: ``[..., H, W]``; returns ``[...]``
    in [0, 1] (1 when both masks are empty).
    """
    flat = logits.reshape(*logits.shape[:-2], logits.shape[-2] * logits.shape[-1])
    inter = (flat > threshold + offset).sum(-1, dtype=np.int64)
    union = (flat > threshold - offset).sum(-1, dtype=np.int64)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0).astype(np.float32)


def mask_iou_matrix(masks: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``[K, H, W]`` boolean masks with one matrix product."""
    k = masks.shape[0]
    flat = masks.reshape(k, -1).astype(np.float32)
    inter = flat @ flat.T
    area = np.diag(inter)
    union = area[:, None] + area[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0).astype(np.float32)


def mask_nms(masks: np.ndarray, scores: np.ndarray, iou_thresh: float) -> np.ndarray:
    """Greedy NMS on mask IoU: indices kept, highest score first.

    A mask is dropped when its IoU with an already kept, higher-scoring mask
    exceeds ``iou_thresh``.
    """
    if len(masks) == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-np.asarray(scores), kind="stable")
    iou = mask_iou_matrix(masks[order])
    suppressed = np.zeros(len(order), dtype=bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > iou_thresh
    return order[np.asarray(keep, dtype=np.int64)]


def remove_small_regions(mask: np.ndarray, max_area: int, mode: str) -> np.ndarray:
    """Drop islands (``mode='islands'``) or fill holes (``'holes'``) below ``max_area`` cells.

    Like SAM's post-processing, except that if every island is small the
    largest one is kept, so a mask never vanishes here.
    """
    if mode not in ("holes", "islands"):
        raise InputError(f"mode must be 'holes' or 'islands', got {mode!r}")
    if max_area <= 0:
        return mask
    fill = mode == "holes"
    work = (mask ^ fill).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(work, connectivity=8)
    if n <= 1:
        return mask
    areas = stats[1:, cv2.CC_STAT_AREA]
    small = np.flatnonzero(areas < max_area) + 1
    if len(small) == 0:
        return mask
    if fill:
        return mask | np.isin(labels, small)
    keep = np.flatnonzero(areas >= max_area) + 1
    if len(keep) == 0:
        keep = np.array([int(np.argmax(areas)) + 1])
    return np.isin(labels, keep)


def clean_masks(masks: np.ndarray, max_area: int) -> np.ndarray:
    """Fill small holes then drop small islands in each of ``[K, H, W]`` masks.

    One pair of connected-component passes per mask at grid resolution:
    O(K * H * W).
    """
    out = np.empty_like(masks)
    for i, m in enumerate(masks):
        m = remove_small_regions(m, max_area, "holes")
        out[i] = remove_small_regions(m, max_area, "islands")
    return out


def uncovered_points(covered: np.ndarray, min_area: int, max_points: int) -> np.ndarray:
    """``[P, 2]`` (x, y) grid points deep inside the largest uncovered regions.

    Each connected uncovered region of at least ``min_area`` cells gets one
    point at its distance-transform maximum (the point farthest from any
    covered cell or border), largest regions first.
    """
    free = (~covered).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(free, connectivity=4)
    if n <= 1 or max_points <= 0:
        return np.zeros((0, 2), np.float32)
    areas = stats[1:, cv2.CC_STAT_AREA]
    big = np.flatnonzero(areas >= min_area) + 1
    if len(big) == 0:
        return np.zeros((0, 2), np.float32)
    big = big[np.argsort(-areas[big - 1], kind="stable")][:max_points]
    padded = np.pad(free, 1)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, 3)[1:-1, 1:-1]
    flat_lab, flat_d = labels.ravel(), dist.ravel()
    # argmax of distance per label, vectorised: sort by (label, distance).
    order = np.lexsort((flat_d, flat_lab))
    last = np.searchsorted(flat_lab[order], big, side="right") - 1
    idx = order[last]
    ys, xs = np.divmod(idx, covered.shape[1])
    return np.stack([xs + 0.5, ys + 0.5], axis=1).astype(np.float32)


def crop_boxes(image_hw: tuple[int, int], n_layers: int,
               overlap_ratio: float = 512 / 1500) -> list[tuple[int, int, int, int]]:
    """SAM-style crops: the full image, then 2^i x 2^i overlapping tiles per layer.

    Returns ``(x0, y0, x1, y1)`` boxes, the full image first.
    """
    h, w = image_hw
    boxes = [(0, 0, w, h)]
    for layer in range(1, n_layers + 1):
        n = 2 ** layer
        overlap = int(overlap_ratio * min(h, w) * (2 / n))
        cw = int(np.ceil((overlap * (n - 1) + w) / n))
        ch = int(np.ceil((overlap * (n - 1) + h) / n))
        for j in range(n):
            for i in range(n):
                x0, y0 = (cw - overlap) * i, (ch - overlap) * j
                boxes.append((x0, y0, min(x0 + cw, w), min(y0 + ch, h)))
    return boxes


def color_cluster_points(image: np.ndarray, n: int, spatial_weight: float = 1.0,
                         work_hw: tuple[int, int] = (48, 64), seed: int = 0) -> np.ndarray:
    """``[n, 2]`` (x, y) points in [0, 1], one per colour+position k-means cluster.

    An image-adaptive alternative to the regular grid: uniform regions (sky,
    road) get few clusters, small distinct objects get their own, so a
    small prompt budget lands where segments are. Each point is the cluster
    member nearest its cluster centre, so it lies on the region it stands for.
    """
    h, w = work_hw
    small = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float32) / 255.0
    ys, xs = np.divmod(np.arange(h * w), w)
    xy = np.stack([(xs + 0.5) / w, (ys + 0.5) / h], 1).astype(np.float32)
    feats = np.concatenate([lab, xy * spatial_weight], 1)
    n = int(min(n, h * w))
    cv2.setRNGSeed(seed)
    crit = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 10, 1e-3)
    _, labels, centres = cv2.kmeans(feats, n, None, crit, 1, cv2.KMEANS_PP_CENTERS)
    labels = labels.ravel()
    dist = ((feats - centres[labels]) ** 2).sum(1)
    order = np.lexsort((dist, labels))
    first = np.searchsorted(labels[order], np.unique(labels), side="left")
    return xy[order[first]]


def thin_structure_points(image: np.ndarray, n: int, max_width: int = 9,
                          min_length: int = 21, min_contrast: float = 12.0) -> np.ndarray:
    """``[<= n, 2]`` (x, y) points in [0, 1] on thin upright structures.

    A pixel responds when it is darker or brighter than both sides within
    ``max_width`` px horizontally (grey top-hat and black-hat with a horizontal
    line), and keeps the response only where it lasts ``min_length`` px
    vertically (an erosion with a vertical line): poles, posts, sign posts and
    people, which the 14 px patches and a uniform prompt budget miss. Connected
    structures (response >= ``min_contrast`` grey levels) at most half as wide
    as tall rank by height (branch networks and texture are wide, poles tall);
    each of the ``n`` tallest gives one point at its strongest pixel. Sizes are
    in pixels of a frame 480 px wide (scaled with the frame, kept odd).
    """
    if n <= 0:
        return np.zeros((0, 2), np.float32)
    h, w = image.shape[:2]
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    scale = w / 480.0
    odd = lambda v: max(3, 2 * int(round(v * scale / 2)) + 1)     # centred kernels
    across = cv2.getStructuringElement(cv2.MORPH_RECT, (odd(max_width), 1))
    response = np.maximum(cv2.morphologyEx(grey, cv2.MORPH_TOPHAT, across),
                          cv2.morphologyEx(grey, cv2.MORPH_BLACKHAT, across))
    along = cv2.getStructuringElement(cv2.MORPH_RECT, (1, odd(min_length)))
    upright = cv2.erode(response, along)
    found = (upright >= min_contrast).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(found, connectivity=8)
    if count <= 1:
        return np.zeros((0, 2), np.float32)
    tall = stats[1:, cv2.CC_STAT_HEIGHT].astype(np.int64)
    narrow = 2 * stats[1:, cv2.CC_STAT_WIDTH] <= tall
    ids = np.flatnonzero(narrow)
    best = ids[np.argsort(-tall[ids], kind="stable")][:n] + 1
    if len(best) == 0:
        return np.zeros((0, 2), np.float32)
    # the strongest pixel of each chosen structure: sort by (label, response)
    flat_lab, flat_r = labels.ravel(), upright.ravel()
    order = np.lexsort((flat_r, flat_lab))
    idx = order[np.searchsorted(flat_lab[order], best, side="right") - 1]
    ys, xs = np.divmod(idx, w)
    return np.stack([(xs + 0.5) / w, (ys + 0.5) / h], axis=1).astype(np.float32)
