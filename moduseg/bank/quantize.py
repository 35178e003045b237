"""Scalar quantisation of bank vectors to int8, for banks that ship inside the package.

Each dimension gets one symmetric scale (its largest magnitude / 127); on
load the vectors are scaled back and re-normalised, so search sees unit
vectors as with any other bank. Storage is a quarter of float32.
"""

from __future__ import annotations

import numpy as np

from ..errors import BankError

INT8 = "int8"


def quantize_int8(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``[N, D]`` floats -> (``[N, D]`` int8 codes, ``[D]`` float32 scales)."""
    v = np.asarray(vectors, dtype=np.float32)
    if v.ndim != 2:
        raise BankError(f"quantize_int8 expects [N, D] vectors, got shape {v.shape}")
    if len(v) and not np.isfinite(v).all():
        raise BankError("cannot quantise bank vectors that contain NaN or infinity")
    peak = np.abs(v).max(0) if len(v) else np.zeros(v.shape[1], np.float32)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    codes = np.clip(np.rint(v / scale), -127, 127).astype(np.int8)
    return codes, scale


def dequantize_int8(codes: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Codes and scales -> L2-normalised float32 vectors."""
    if codes.dtype != np.int8 or codes.ndim != 2:
        raise BankError(f"int8 bank vectors must be an [N, D] int8 array, got "
                        f"{codes.dtype} {codes.shape}")
    scale = np.asarray(scale, dtype=np.float32).reshape(-1)
    if scale.shape[0] != codes.shape[1] or not np.isfinite(scale).all() or (scale <= 0).any():
        raise BankError(f"int8 bank scales must be {codes.shape[1]} positive finite numbers, "
                        f"got {scale.shape[0]}")
    v = codes.astype(np.float32) * scale
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.maximum(norm, 1e-12)
