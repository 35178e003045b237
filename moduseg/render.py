"""Colours and overlays of a label map: a palette no class of which is too dark
to read, and the frame with class colours blended in and a legend strip below.

Pure functions on arrays (OpenCV and numpy), used by
``SegmentationResult.plot`` and the overlay sink of ``moduseg segment``.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from .text import opencv_text

ALPHA = 0.45            # colour weight in the overlay: the picture stays readable
MIN_LUMA = 90           # no class colour darker than this (0-255 luma)
# ``unknown`` pixels (label 254, ``runtime.unknown``): one colour no class palette uses
UNKNOWN_COLOUR = (255, 0, 255)

# CamVid's own class colours (the 11-class SegNet convention), lifted to MIN_LUMA
CAMVID_COLORS = {
    "sky": (128, 128, 128), "building": (128, 0, 0), "pole": (192, 192, 128),
    "road": (128, 64, 128), "pavement": (0, 0, 192), "sidewalk": (0, 0, 192),
    "tree": (128, 128, 0), "sign": (192, 128, 128), "signsymbol": (192, 128, 128),
    "fence": (64, 64, 128), "car": (64, 0, 128), "pedestrian": (64, 64, 0),
    "bicyclist": (0, 128, 192),
}


def luma(rgb) -> np.ndarray:
    c = np.asarray(rgb, np.float64)
    return c[..., 0] * 0.2126 + c[..., 1] * 0.7152 + c[..., 2] * 0.0722


def lift(rgb, min_luma: float = MIN_LUMA) -> tuple[int, int, int]:
    """Brighten a colour just enough to reach ``min_luma``: first by scaling (hue and
    saturation kept), then, if that is not enough, by blending towards white."""
    c = np.asarray(rgb, np.float64)
    y = float(luma(c))
    if y < min_luma:
        f = min(min_luma / max(y, 1e-9), 255.0 / max(c.max(), 1e-9))
        c = c * f
        y = float(luma(c))
        if y < min_luma:
            c = c + (min_luma - y) / (255.0 - y) * (255.0 - c)
    return tuple(int(v) for v in np.ceil(c).clip(0, 255))


def class_palette(class_names: list[str], min_luma: float = MIN_LUMA) -> np.ndarray:
    """``[C, 3]`` uint8 class colours, none darker than ``min_luma``, every two of them
    at least ``colour.required_delta_e(C)`` apart (CIEDE2000: 20 up to 12 classes).

    CamVid class names keep CamVid's colours and a background class grey, as long as
    they stay that far from the colours before them; a colour too close to an
    earlier one moves to the nearest colour that is not (CamVid's pedestrian, the
    olive of tree, turns green); other classes get the colour farthest from all
    chosen so far. Names in order: the same names give the same colours.
    """
    return _palette(tuple(str(n) for n in class_names), float(min_luma)).copy()


@functools.lru_cache(maxsize=32)
def _palette(names: tuple[str, ...], min_luma: float) -> np.ndarray:
    from .colour import distinct_colours

    wanted = []
    for name in names:
        key = name.lower().replace("_", "").replace(" ", "")
        if key in CAMVID_COLORS:
            wanted.append(lift(CAMVID_COLORS[key], min_luma))
        elif key in ("background", "void", "unlabelled", "unlabeled"):
            wanted.append(lift((150, 150, 150), min_luma))
        else:
            wanted.append(None)
    return distinct_colours(wanted, min_luma=min_luma)


def check_opacity(alpha) -> float:
    """The overlay's colour weight: ``None`` -> ``ALPHA``; else a number in [0, 1]."""
    if alpha is None:
        return ALPHA
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        a = float("nan")
    if not 0.0 <= a <= 1.0:
        from .errors import InputError
        raise InputError(f"overlay opacity must be a number in [0, 1] (0: the frame only, "
                         f"1: solid colours), got {alpha!r}")
    return a


def _font(width: int) -> tuple[float, int]:
    # never below 0.5 (lower-case letters 7 px high): at 0.4 a 320-px still's legend
    # could not be read; narrow frames wrap the legend over more rows instead
    scale = float(np.clip(width / 1100.0, 0.5, 1.4))
    return scale, 1 if scale < 0.9 else 2


def _legend_items(class_names, width):
    """(name, text width) and the geometry of one legend row for an image ``width`` wide."""
    scale, thick = _font(width)
    (_, th), _ = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    sw = th + 6                      # swatch side
    row_h, pad = sw + 10, 8
    widths = [cv2.getTextSize(opencv_text(n), cv2.FONT_HERSHEY_SIMPLEX, scale, thick)[0][0]
              for n in class_names]
    return widths, sw, row_h, pad, scale, thick


def _layout(ids, widths, sw, pad, width):
    """Place legend items left to right, wrapping rows: [(id, x, row)]."""
    x, row, placed = pad, 0, []
    for c in ids:
        w = sw + 6 + widths[c] + 2 * pad
        if x + w > width and x > pad:
            x, row = pad, row + 1
        placed.append((c, x, row))
        x += w
    return placed


def legend_height(class_names: list[str], width: int) -> int:
    """Height of a legend strip that fits every class: constant for a run (videos)."""
    widths, sw, row_h, pad, _, _ = _legend_items(class_names, width)
    placed = _layout(range(len(class_names)), widths, sw, pad, width)
    rows = (placed[-1][2] + 1) if placed else 1
    return rows * row_h + pad


def with_unknown(label_map: np.ndarray, palette, class_names):
    """A label map holding ``UNKNOWN`` (254) as one more class after the bank's, with its
    colour and legend name; unchanged (the same objects) when it holds none."""
    from .labels import UNKNOWN, UNKNOWN_NAME
    C = len(class_names)
    if C >= UNKNOWN or not (label_map == UNKNOWN).any():
        return label_map, palette, class_names
    lut = np.arange(256, dtype=np.uint8)
    lut[UNKNOWN] = C
    palette = np.concatenate([np.asarray(palette, np.uint8)[:C],
                              np.asarray([UNKNOWN_COLOUR], np.uint8)])
    return lut[label_map], palette, list(class_names) + [UNKNOWN_NAME]


def label_png_palette(label_map: np.ndarray, palette) -> np.ndarray:
    """The palette of a label PNG: the class colours, and ``UNKNOWN_COLOUR`` at 254 when
    the map holds unknown pixels (else the class colours alone: files as before)."""
    from .io import voc_palette
    from .labels import UNKNOWN
    if not (label_map == UNKNOWN).any():
        return palette
    pal = voc_palette()
    pal[:len(palette)] = np.asarray(palette, np.uint8)[:256]
    pal[UNKNOWN] = UNKNOWN_COLOUR
    return pal


def render_overlay(image: np.ndarray, label_map: np.ndarray, palette: np.ndarray,
                   class_names: list[str], legend_h: int | None = None,
                   untinted: tuple[int, ...] = (), alpha: float = ALPHA) -> np.ndarray:
    """The frame with class colours blended in, class borders drawn, and a
    legend strip below (swatch + name of the classes present, largest first).

    ``untinted`` classes (a background class) are not coloured, only outlined.
    """
    H, W = label_map.shape
    lm = np.ascontiguousarray(label_map, np.uint8)
    lm, palette, class_names = with_unknown(lm, palette, class_names)
    C = min(len(palette), 256)
    image = np.ascontiguousarray(image, np.uint8)
    lut = np.zeros((256, 3), np.uint8)
    lut[:C] = palette[:C]
    valid = np.zeros(256, np.uint8)
    valid[:C] = 1
    tint = valid.copy()
    for c in untinted:
        if 0 <= c < 256:
            tint[c] = 0
    # table look-ups and blends in OpenCV: a 1080p frame stays in the tens of ms
    col = cv2.merge([cv2.LUT(lm, np.ascontiguousarray(lut[:, k])) for k in range(3)])
    out = image.copy()
    cv2.copyTo(cv2.addWeighted(image, 1.0 - alpha, col, alpha, 0.0), cv2.LUT(lm, tint), out)
    # class borders at full colour: shapes stay readable where the tint is light
    k = np.ones((3, 3) if max(H, W) > 900 else (2, 2), np.uint8)
    edge = (cv2.morphologyEx(lm, cv2.MORPH_GRADIENT, k) > 0).view(np.uint8)
    cv2.copyTo(col, edge & cv2.LUT(lm, valid), out)

    legend_h = legend_h or legend_height(class_names, W)
    strip = np.full((legend_h, W, 3), 28, np.uint8)
    counts = np.bincount(lm.ravel(), minlength=256)[:len(class_names)]
    present = [int(c) for c in np.argsort(-counts, kind="stable") if counts[c] > 0]
    widths, sw, row_h, pad, scale, thick = _legend_items(class_names, W)
    for c, x, row in _layout(present, widths, sw, pad, W):
        y = pad + row * row_h
        if y + sw > legend_h:
            break
        col = tuple(int(v) for v in palette[c])
        cv2.rectangle(strip, (x, y), (x + sw, y + sw), col, -1)
        cv2.rectangle(strip, (x, y), (x + sw, y + sw), (235, 235, 235), 1)
        cv2.putText(strip, opencv_text(class_names[c]), (x + sw + 6, y + sw - 3),
                    cv2.FONT_HERSHEY_SIMPLEX, scale, (245, 245, 245), thick, cv2.LINE_AA)
    return np.concatenate([out, strip], 0)


