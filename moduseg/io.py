"""File I/O at the edges: images, label maps, palettes and atomic writes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import tempfile
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .errors import InputError


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None):
    """Yield a temporary path beside ``path``; rename it into place on success.

    A crash or an exception leaves no half-written file at ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix,
                               dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)     # mkstemp makes 0600; give the usual file mode
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (model files are hundreds of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(chunk), b""):
            h.update(b)
    return h.hexdigest()


def write_json(path: str | Path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=_json_default))


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


# Image files above this many pixels are refused before decoding (a 150 MP RGB
# frame is 450 MB decoded); frames are segmented at most at 4K UHD anyway
# (``runtime.pipeline.MAX_WORK_PIXELS``).
MAX_IMAGE_PIXELS = 150_000_000


def _declared_pixels(path) -> int | None:
    """Pixel count from the file header (nothing decoded), None if PIL cannot tell."""
    try:
        with Image.open(path) as im:
            return im.size[0] * im.size[1]
    except Image.DecompressionBombError:
        return MAX_IMAGE_PIXELS + 1
    except Exception:  # not a format PIL knows: let OpenCV try
        return None


def read_image(path: str | Path) -> np.ndarray:
    """An image file -> ``H x W x 3`` uint8 RGB (at most ``MAX_IMAGE_PIXELS``)."""
    n = _declared_pixels(path)
    if n is not None and n > MAX_IMAGE_PIXELS:
        raise InputError(f"image {path} has {n / 1e6:.0f} megapixels, above the "
                         f"{MAX_IMAGE_PIXELS // 1_000_000} MP limit; downscale it first")
    try:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    except (cv2.error, ValueError, UnicodeError):
        img = None
    if img is None:
        raise InputError(f"cannot read image {path}: missing, unreadable or not an image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_label_map(path: str | Path) -> np.ndarray:
    """A label PNG (mode L or P) -> ``H x W`` uint8 of class indices."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P", "I", "I;16"):
                raise InputError(
                    f"label map {path} has mode {im.mode}; expected a single-channel "
                    f"index PNG (mode L or P) with class indices as pixel values")
            arr = np.array(im)
    except InputError:
        raise
    # PIL reports a damaged file as any of these (SyntaxError: "broken PNG file")
    except (OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error,
            Image.DecompressionBombError) as e:
        raise InputError(f"cannot read label map {path} ({type(e).__name__}: {e}); it is "
                         f"missing, truncated or not an image: re-create it") from None
    if arr.ndim != 2:
        raise InputError(f"label map {path} is not a single-channel image (shape {arr.shape})")
    # check the range before the cast: -253 would otherwise wrap to class 3
    lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    if lo < 0 or hi > 255:
        raise InputError(f"label map {path} has values {lo}..{hi}; class indices must be "
                         f"0..254 (255 = ignore)")
    return arr.astype(np.uint8)


def voc_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map: ``[n, 3]`` uint8 (bit-interleaved index colours)."""
    idx = np.arange(n)
    pal = np.zeros((n, 3), np.uint8)
    for bit in range(8):
        for ch in range(3):
            pal[:, ch] |= (((idx >> ch) >> (3 * bit)) & 1).astype(np.uint8) << (7 - bit)
    return pal


def write_label_png(path: str | Path, label_map: np.ndarray) -> None:
    """Save a label map as a palettised PNG (VOC colours, values preserved)."""
    im = Image.fromarray(label_map.astype(np.uint8), mode="P")
    im.putpalette(voc_palette().reshape(-1).tolist())
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")


def colorize(label_map: np.ndarray) -> np.ndarray:
    """Label map -> ``H x W x 3`` RGB using the VOC palette."""
    return voc_palette()[label_map]


def overlay(image: np.ndarray, label_map: np.ndarray, alpha: float = 0.5,
            ignore: int = 255) -> np.ndarray:
    """Blend class colours over an RGB image; ignored pixels stay untouched.

    Blended in uint8 (``cv2.addWeighted``): a float32 copy of a 48 MP frame and
    its masked temporaries took gigabytes.
    """
    colors = colorize(label_map)
    out = cv2.addWeighted(np.ascontiguousarray(image), 1 - alpha, colors, alpha, 0)
    keep = label_map == ignore
    out[keep] = image[keep]
    return out


def write_image(path: str | Path, rgb: np.ndarray) -> None:
    path = Path(path)
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
            raise InputError(f"cannot write image {path}")
