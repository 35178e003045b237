"""Label-map PNG I/O for pseudo masks (VOC palette, mode P, 255 = ignore).

Kept local so this stage only depends on committed core modules; the
format is the one ground-truth VOC masks use, so readers treat both alike.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from ...errors import InputError


def voc_palette(n: int = 256) -> np.ndarray:
    """PASCAL VOC colours ``[n, 3]`` uint8: index bits spread over R, G, B from the top bit."""
    idx = np.arange(n)
    pal = np.zeros((n, 3), np.uint8)
    for bit in range(8):
        for ch in range(3):
            pal[:, ch] |= (((idx >> (ch + 3 * bit)) & 1) << (7 - bit)).astype(np.uint8)
    return pal


def write_label_png(path: str | Path, label_map: np.ndarray) -> None:
    """Write ``H x W`` uint8 indices as a palettised PNG, atomically."""
    label_map = np.asarray(label_map)
    if label_map.ndim != 2:
        raise InputError(f"label map for {path} must be 2-D, got shape {label_map.shape}")
    im = Image.fromarray(label_map.astype(np.uint8), mode="P")
    im.putpalette(voc_palette().reshape(-1).tolist())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        im.save(tmp, format="PNG")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_label_png(path: str | Path) -> np.ndarray:
    """A mode L/P label PNG -> ``H x W`` uint8 class indices (palette ignored)."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P"):
                raise InputError(f"label map {path} has mode {im.mode}; expected an index "
                                 f"PNG (mode L or P) whose pixel values are class indices")
            return np.array(im).astype(np.uint8)
    except (FileNotFoundError, OSError) as e:
        raise InputError(f"cannot read label map {path}: {e}") from None


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file -> ``H x W x 3`` uint8 RGB."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise InputError(f"cannot read image {path}: missing, unreadable or not an image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
