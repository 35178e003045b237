"""Test-time views of a patch backbone: a mirrored pass, half-patch shifted passes.

A ViT sees a frame through a fixed grid of ``p``-pixel patches, so a pixel's
feature comes from a patch centred up to ``p / 2`` pixels away and a thing
thinner than a patch shares it with its surroundings. Running the same graph
again on the input moved by half a patch (``p / 2`` pixels down, right, or
both) gives patches centred between the first pass's, and the passes together
describe the frame on a grid of stride ``p / 2`` (``backbone.shifts``):

* ``diagonal-mean``: 2 passes (not moved; moved down and right). Each
  ``p/2``-pixel cell of the finer grid is covered by exactly one patch of each
  pass; its feature is the mean of the two, whose centres straddle the cell's
  centre symmetrically.
* ``square-mean``: 4 passes (not moved, right, down, both); each cell the mean
  of the 4 patches that cover it (a cell at the bottom or right edge of the
  grid, which a moved pass no longer reaches, the mean of those that do).
* ``square-interleave``: the same 4 passes, each cell the one patch centred on
  its top-left corner (pass "down" on even rows, "not moved" on odd rows, the
  same across): every patch kept as the model made it, centred ``p / 4`` up and
  left of its cell's centre.

A moved pass keeps the input's size (the graph's static size too): the
content moves down/right by ``p / 2``, the top/left strip is zero (the mean
colour after normalisation, as the padding is) and the bottom/right strip
falls off (it lies in cells the pass that was not moved covers).

``flip`` (``backbone.flip``) averages each pass with the features of its
mirrored input mirrored back: the whole padded input is mirrored, so patch
column ``j`` maps onto ``last - j`` exactly.

These are pure functions of a ``run(x) -> [1, D, h, w]`` callable, shared by
the ONNX Runtime and the TensorRT backbones (it is the same graph called more
times), so a bank built on one backend matches queries made on the other.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from ...config import BackboneOptions
from ...errors import InputError
from ...types import GridGeometry

# declared once, with its help text, as the option backbone.shifts
SHIFTS = next(f for f in dataclasses.fields(BackboneOptions)
              if f.name == "shifts").metadata["choices"]
# pass offsets in half patches (down, right)
_OFFSETS = {"diagonal-mean": ((0, 0), (1, 1)),
            "square-mean": ((0, 0), (0, 1), (1, 0), (1, 1)),
            "square-interleave": ((0, 0), (0, 1), (1, 0), (1, 1))}


def check_shifts(shifts: str | None, patch: int) -> str | None:
    """``shifts`` checked against ``SHIFTS`` and the patch size (which must be even)."""
    if shifts is None:
        return None
    if shifts not in SHIFTS:
        raise InputError(f"backbone.shifts must be one of {SHIFTS} (or unset), got {shifts!r}")
    if int(patch) % 2:
        raise InputError(f"backbone.shifts needs an even patch size to move by half a patch; "
                         f"this backbone's patch is {patch}")
    return shifts


def pass_offsets(shifts: str | None) -> tuple[tuple[int, int], ...]:
    """The passes ``shifts`` runs, as (down, right) offsets in half patches."""
    return _OFFSETS[shifts] if shifts else ((0, 0),)


def view_suffix(flip: bool, shifts: str | None) -> str:
    """What the views add to a backbone identity's name: banks of combined
    features only match queries combined alike."""
    return ("+hflip" if flip else "") + (f"+shift-{shifts}" if shifts else "")


def shifted_input(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``x`` [1, C, H, W] with its content moved ``dy`` pixels down and ``dx`` right,
    same size: the vacated top/left strips are 0, the bottom/right ones fall off."""
    if not (dy or dx):
        return x
    out = np.zeros_like(x)
    H, W = x.shape[2:]
    out[..., dy:, dx:] = x[..., :H - dy, :W - dx]
    return out


def fine_geometry(geometry: GridGeometry) -> GridGeometry:
    """The half-patch grid over the same padded input: twice the cells each way."""
    h, w = geometry.grid_hw
    return GridGeometry(geometry.image_hw, geometry.resized_hw, (2 * h, 2 * w),
                        geometry.patch // 2)


def _cover(n: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """For the ``2n`` half-patch cells along one axis: the index of the patch of a pass
    moved by ``offset`` half patches that covers each, and whether that patch exists."""
    idx = (np.arange(2 * n) + offset) // 2
    return np.minimum(idx, n - 1), idx < n


def combine_shifted(passes: dict[tuple[int, int], np.ndarray], shifts: str) -> np.ndarray:
    """Features [..., h, w] of each pass (keyed by its (down, right) offset in half
    patches) -> features [..., 2h, 2w] on the half-patch grid, as ``shifts`` says."""
    first = passes[(0, 0)]
    h, w = first.shape[-2:]
    if shifts == "square-interleave":
        out = np.empty(first.shape[:-2] + (2 * h, 2 * w), first.dtype)
        for (dy, dx), y in passes.items():
            # a pass moved down covers even rows with the patch centred on their top edge
            out[..., (1 - dy)::2, (1 - dx)::2] = y
        return out
    total = np.zeros(first.shape[:-2] + (2 * h, 2 * w), np.float32)
    count = np.zeros((2 * h, 2 * w), np.float32)
    for (dy, dx), y in passes.items():
        ri, rv = _cover(h, dy)
        ci, cv = _cover(w, dx)
        valid = (rv[:, None] & cv[None, :]).astype(np.float32)
        total += y[..., ri[:, None], ci[None, :]] * valid
        count += valid
    return (total / count).astype(first.dtype, copy=False)


def view_features(run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, patch: int,
                  flip: bool = False, shifts: str | None = None) -> np.ndarray:
    """``run`` on the prepared input ``x`` [1, 3, H, W] and on each view asked for:
    [1, D, h, w], or [1, D, 2h, 2w] with ``shifts`` (see the module docstring)."""
    half = int(patch) // 2

    def one(xi):
        y = run(xi)
        if flip:
            y = 0.5 * (y + run(np.ascontiguousarray(xi[..., ::-1]))[..., ::-1])
        return y

    if not shifts:
        return one(x)
    passes = {(dy, dx): one(shifted_input(x, dy * half, dx * half))
              for dy, dx in pass_offsets(shifts)}
    return combine_shifted(passes, shifts)
