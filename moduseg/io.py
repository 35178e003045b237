"""File I/O at the edges: images, label maps, palettes and atomic writes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import struct
import tempfile
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .errors import InputError, OutputError
from .owned import atomic_path, output_error
from .text import is_utf8, printable


# image files the package reads (folders, datasets, calibration sets)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (model files are hundreds of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(chunk), b""):
            h.update(b)
    return h.hexdigest()


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


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


def check_image(image, what: str = "image") -> np.ndarray:
    """An H x W x 3 uint8 RGB array, or an ``InputError`` saying how to get one."""
    if not isinstance(image, np.ndarray):
        raise InputError(f"{what} must be a numpy array (H, W, 3) uint8 RGB, got "
                         f"{type(image).__name__}; load it with cv2/PIL and convert")
    if image.ndim == 2:
        raise InputError(f"{what} is grayscale {image.shape}; convert to RGB, e.g. "
                         f"np.repeat(img[..., None], 3, axis=2)")
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise InputError(f"{what} must have shape (H, W, 3), got {image.shape}")
    if image.shape[2] == 4:
        raise InputError(f"{what} has 4 channels (RGBA); drop alpha with img[..., :3]")
    if image.dtype != np.uint8:
        raise InputError(f"{what} must be uint8 RGB, got {image.dtype}; for floats in "
                         f"[0, 1] use (img * 255).round().astype(np.uint8)")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InputError(f"{what} is empty: {image.shape}")
    return image


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
    """An image file -> ``H x W x 3`` uint8 RGB (at most ``MAX_IMAGE_PIXELS``).

    Read as bytes and decoded in memory: OpenCV's ``imread`` crashes the process
    on a file name that is not UTF-8 (``caf\\xe9.png`` from an old archive).
    """
    shown = printable(path)
    n = _declared_pixels(path)
    if n is not None and n > MAX_IMAGE_PIXELS:
        raise InputError(f"image {shown} has {n / 1e6:.0f} megapixels, above the "
                         f"{MAX_IMAGE_PIXELS // 1_000_000} MP limit; downscale it first")
    try:
        data = np.fromfile(os.fspath(path), np.uint8)
        img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    except (OSError, cv2.error, ValueError, MemoryError):
        img = None
    if img is None:
        raise InputError(f"cannot read image {shown}: missing, unreadable or not an image")
    if not jpeg_complete(path):
        raise InputError(f"image {shown} is a truncated JPEG (no end-of-image marker); "
                         f"copy it again or remove it")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


@contextlib.contextmanager
def opencv_path(path: str | Path):
    """Yield a path string OpenCV's video I/O can take for ``path``.

    OpenCV crashes on a string that is not UTF-8; such a path is reached
    through a symbolic link with an ASCII name in a private temporary folder
    (to the file's folder when the file's own name is UTF-8, so a writer can
    create it; else to the file itself, for reading).
    """
    s = os.fspath(path)
    if is_utf8(s):
        yield s
        return
    p = Path(s).absolute()
    with tempfile.TemporaryDirectory(prefix="moduseg-path-") as d:
        if is_utf8(p.name):
            os.symlink(p.parent, os.path.join(d, "dir"))
            yield os.path.join(d, "dir", p.name)
        else:
            suffix = p.suffix if is_utf8(p.suffix) else ""
            link = os.path.join(d, "file" + suffix)
            os.symlink(p, link)
            yield link


def jpeg_complete(path: str | Path) -> bool:
    """False for a JPEG cut short (OpenCV decodes those partially without an error).

    The segments before the first start-of-scan are skipped by their lengths
    (an EXIF thumbnail holds its own end marker); the scan data must then be
    followed by an end-of-image marker. Non-JPEG files return True.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return True             # unreadable files are reported by the decoder
    if data[:2] != b"\xff\xd8":
        return True
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return False
        marker = data[i + 1]
        if marker == 0xFF:                      # fill byte
            i += 1
            continue
        if marker == 0xD9:
            return True
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:   # no length field
            i += 2
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if marker == 0xDA:                      # start of scan: entropy data follows
            return data.find(b"\xff\xd9", i + 2 + length) >= 0
        i += 2 + length
    return False


def check_output_dir(path: str | Path, what: str = "--out", min_free: int = 1 << 20) -> Path:
    """Refuse, before any work, an output folder that cannot hold the results.

    An existing file, a path under a file, a read-only folder or a full disk
    give one ``OutputError`` line; nothing is created.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputError(f"{what} {p} is an existing file; give a folder for the outputs")
    _probe(_existing_ancestor(p, what), p, what, min_free)
    return p


def check_output_file(path: str | Path, what: str = "--out", suffix: str | None = None,
                      min_free: int = 1 << 20) -> Path:
    """Refuse, before any work, an output file path that cannot be written."""
    p = Path(path)
    if p.is_dir() or str(path).endswith(("/", os.sep)):
        raise OutputError(f"{what} {p} is a folder; give a file name"
                          + (f" ending in {suffix}, e.g. {p / ('out' + suffix)}" if suffix else ""))
    if suffix and p.suffix != suffix:
        raise OutputError(f"{what} {p} must end in {suffix}; use {what} {p}{suffix}")
    _probe(_existing_ancestor(p.parent, what), p, what, min_free)
    return p


def _existing_ancestor(p: Path, what: str) -> Path:
    a = p.absolute()
    while True:
        try:
            os.stat(a)
            break
        except (FileNotFoundError, NotADirectoryError):
            a = a.parent
    if not a.is_dir():
        raise OutputError(f"{what} {p} lies under {a}, which is a file, not a folder")
    return a


def _probe(folder: Path, p: Path, what: str, min_free: int) -> None:
    """Write and delete a small file: catches read-only folders and full disks."""
    try:
        free = shutil.disk_usage(folder).free
        fd, tmp = tempfile.mkstemp(prefix=f".moduseg-probe.{os.getpid()}-", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(b"\0" * 65536)
                f.flush()
                os.fsync(f.fileno())
        finally:
            os.unlink(tmp)
    except OSError as e:
        raise OutputError(f"{what} {p} cannot be written ({e.strerror or e}); choose a "
                          f"writable folder with free space") from None
    if free < min_free:
        raise OutputError(f"{what} {p}: the disk is full ({free // 1024} KiB free); free some "
                          f"space or choose another folder")


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


def write_label_png(path: str | Path, label_map: np.ndarray,
                    palette: np.ndarray | None = None) -> None:
    """Save a label map as a palettised PNG: pixel values are the class indices;
    ``palette`` (``[C, 3]``, e.g. the overlay colours) colours the first C
    indices, VOC colours the rest."""
    im = Image.fromarray(label_map.astype(np.uint8), mode="P")
    pal = voc_palette()
    if palette is not None:
        pal[:len(palette)] = np.asarray(palette, np.uint8)[:256]
    im.putpalette(pal.reshape(-1).tolist())
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")


def write_image(path: str | Path, rgb: np.ndarray) -> None:
    """Encode in memory, write the bytes atomically (any file name: OpenCV's
    ``imwrite`` crashes on one that is not UTF-8)."""
    path = Path(path)
    ext = path.suffix.lower() if path.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp",
                                                         ".webp", ".tif", ".tiff") else ".png"
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise InputError(f"cannot encode image {printable(path)}")
    with atomic_path(path) as tmp:
        try:
            buf.tofile(os.fspath(tmp))
        except OSError as e:
            raise output_error(path, e) from None
