"""Rewrite SAM's exported ONNX prompt decoder so many prompts run in one call.

The standard export (segment-anything's ``SamOnnxModel``) takes one prompt
set ``point_coords [1, N, 2]`` per call, repeats the image embedding once per
prompt (``Tile``, i.e. ``repeat_interleave``), picks one of the four mask
tokens and upsamples it to the original image size. For an automatic mask
generator all of that is waste. This module makes four structural edits:

1. ``point_coords`` / ``point_labels`` get a dynamic leading dimension, so
   B independent prompt sets (each with the same point count) run in one call.
2. The ``Tile`` nodes that copy the image embedding and its positional
   encoding B times are bypassed: the embedding stays batch 1 and ONNX
   broadcasting (``Add``, ``MatMul``) shares it, so the first transformer
   layer projects the 4096 image tokens once instead of once per prompt.
3. The one reshape that restored the embedding batch ``(b, c, h, w)`` after
   the transformer is given ``-1`` for ``b`` (it is now the prompt batch).
4. The outputs become the *un-selected* heads: ``all_low_res_masks``
   ``[B, 4, 256, 256]`` logits and ``all_iou_predictions`` ``[B, 4]``; the
   mask-token selection and the full-resolution ``Resize`` are cut away.

Two optional exact speed-ups follow: ``subsample_mask_head`` (logits on a
coarser grid) and ``fast_cross_attention`` (the per-prompt cross-attentions
re-associated so the 4096 image tokens are never projected per prompt).
``cell_list_input`` lets the decoder take any list of weighted embedding
cells (the content of a non-square frame plus pooled padding, see
``cell_layout``), so the per-prompt attention runs over those cells only.

Edits are located by graph structure (op types and data flow), not by node
names, so any export of the standard SAM decoder works; anything unexpected
raises ``InputError`` naming the file.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

from ..errors import InputError, ModelNotFoundError
from ..owned import atomic_path
from ..io import sha256_file as _sha256
from .helpers import (depends_on as _depends_on, producers as _producers, prune as _prune_all,
                      rename_input_uses as _rename_input_uses,
                      rename_output_uses as _rename_output_uses, save_onnx as _save_onnx,
                      walk_back_to as _walk_back_to, writable_dir)

ALL_MASKS = "all_low_res_masks"
ALL_IOUS = "all_iou_predictions"
CELL_COORDS = "cell_coords"
CELL_LOG_WEIGHT = "cell_log_weight"
SURGERY_VERSION = "4"


def batch_prompt_decoder(model):
    """Return a copy of the SAM decoder ``ModelProto`` rewritten as described above."""
    import onnx
    from onnx import helper, numpy_helper, TensorProto

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    names = {i.name for i in g.input}
    for need in ("image_embeddings", "point_coords", "point_labels"):
        if need not in names:
            raise InputError(
                f"the SAM decoder has no input {need!r} (inputs: {sorted(names)}); "
                f"pass the standard segment-anything ONNX export of the prompt decoder")
    outs = {o.name for o in g.output}
    if not {"low_res_masks", "iou_predictions"} <= outs:
        raise InputError(
            f"the SAM decoder lacks outputs low_res_masks/iou_predictions (has "
            f"{sorted(outs)}); pass the standard segment-anything ONNX export")

    # 4. the tensors before mask-token selection.
    flat_m = _walk_back_to(g, "low_res_masks", "Flatten", ("Unsqueeze", "Reshape", "Gather"))
    flat_i = _walk_back_to(g, "iou_predictions", "Flatten", ("Unsqueeze", "Reshape", "Gather"))
    if flat_m is None or flat_i is None:
        raise InputError("the SAM decoder's mask selection has an unexpected structure; "
                         "export it with segment-anything's scripts/export_onnx_model.py")
    all_masks, all_ious = flat_m.input[0], flat_i.input[0]

    # 2. bypass the Tiles (repeat_interleave of the embedding and its encoding).
    tiles = [n for n in g.node if n.op_type == "Tile"]
    if not tiles:
        raise InputError("the SAM decoder has no Tile (repeat_interleave) node; it is not "
                         "the standard export")
    for t in tiles:
        _rename_input_uses(g, t.output[0], t.input[0])

    # 3. the (b, c, h, w) reshape feeding the output upscaling ConvTranspose.
    prod = _producers(g)
    convt = [n for n in g.node if n.op_type == "ConvTranspose"]
    if not convt:
        raise InputError("the SAM decoder has no ConvTranspose (output upscaling)")
    first = convt[0]
    reshape = prod.get(first.input[0])
    concat = prod.get(reshape.input[1]) if reshape is not None and reshape.op_type == "Reshape" else None
    if concat is None or concat.op_type != "Concat" or len(concat.input) != 4:
        raise InputError("the SAM decoder's upscaling reshape has an unexpected structure")
    minus_one = "surgery_batch_minus_one"
    g.initializer.append(numpy_helper.from_array(
        __import__("numpy").array([-1], dtype="int64"), minus_one))
    concat.input[0] = minus_one

    # 1. dynamic prompt batch.
    for i in g.input:
        if i.name in ("point_coords", "point_labels"):
            d = i.type.tensor_type.shape.dim[0]
            d.Clear()
            d.dim_param = "num_prompts"

    g.node.append(helper.make_node("Identity", [all_masks], [ALL_MASKS], name="surgery_masks"))
    g.node.append(helper.make_node("Identity", [all_ious], [ALL_IOUS], name="surgery_ious"))
    del g.output[:]
    g.output.extend([
        helper.make_tensor_value_info(ALL_MASKS, TensorProto.FLOAT,
                                      ["num_prompts", 4, 256, 256]),
        helper.make_tensor_value_info(ALL_IOUS, TensorProto.FLOAT, ["num_prompts", 4]),
    ])
    _prune(g)
    onnx.checker.check_model(m)
    return m


def subsample_mask_head(model, stride: int):
    """Make the decoder emit its mask logits on every ``stride``-th pixel only.

    SAM's output upscaling is two non-overlapping ``ConvTranspose`` (kernel 2,
    stride 2) with a per-pixel LayerNorm and GELU between them, so each output
    sub-pixel position ``(a, b)`` of a 2x2 block is an independent 1x1
    convolution with the weight slice ``W[:, :, a, b]``. Replacing the last
    (``stride`` 2) or both (``stride`` 4) transposed convolutions by that 1x1
    convolution gives exactly the logits the full head computes at rows/cols
    ``stride * i + offset`` of the 256x256 grid (offset 0 for stride 2, 2 for
    stride 4; see ``SUBSAMPLE_OFFSET``) at a fraction of the cost.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    if stride == 1:
        return model
    if stride not in (2, 4):
        raise InputError(f"mask stride must be 1, 2 or 4, got {stride}")
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    init = {i.name: i for i in g.initializer}
    convt = [n for n in g.node if n.op_type == "ConvTranspose"]
    if len(convt) != 2:
        raise InputError("the SAM decoder's output upscaling is not two ConvTranspose nodes")
    # stride 2: last ConvTranspose at sub-pixel 0; stride 4: first at 1, last at 0.
    picks = {convt[1].name: (0, 0)}
    if stride == 4:
        picks[convt[0].name] = (1, 1)
    for n in convt:
        if n.name not in picks:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if list(attrs.get("kernel_shape", [2, 2])) != [2, 2] or list(attrs.get("strides", [1, 1])) != [2, 2]:
            raise InputError("SAM upscaling ConvTranspose is not kernel 2 stride 2")
        a, b = picks[n.name]
        w = numpy_helper.to_array(init[n.input[1]])          # [Cin, Cout, 2, 2]
        w1 = np.ascontiguousarray(w[:, :, a, b].T[:, :, None, None])
        wname = n.input[1] + f"_subpixel_{a}{b}"
        g.initializer.append(numpy_helper.from_array(w1.astype(np.float32), wname))
        n.op_type = "Conv"
        n.input[1] = wname
        del n.attribute[:]
        n.attribute.extend([helper.make_attribute("kernel_shape", [1, 1])])
    for o in g.output:
        if o.name == ALL_MASKS:
            dims = o.type.tensor_type.shape.dim
            dims[2].dim_value = dims[3].dim_value = 256 // stride
    _prune(g)
    onnx.checker.check_model(m)
    return m


def _attention_parts(graph, prefix: str):
    """Inputs, weights and output of the SAM ``Attention`` module whose nodes start with ``prefix``."""
    from onnx import numpy_helper

    init = {i.name: i for i in graph.initializer}
    nodes = {n.name[len(prefix):]: n for n in graph.node if n.name.startswith(prefix)}
    parts = {}
    for p in ("q", "k", "v", "out"):
        mm, add = nodes.get(f"{p}_proj/MatMul"), nodes.get(f"{p}_proj/Add")
        if mm is None or add is None or mm.input[1] not in init:
            return None
        bias = [i for i in add.input if i in init]
        if len(bias) != 1:
            return None
        parts[p] = (mm.input[0], numpy_helper.to_array(init[mm.input[1]]),
                    numpy_helper.to_array(init[bias[0]]), add.output[0])
    soft = [n for n in nodes.values() if n.op_type == "Softmax"]
    if len(soft) != 1:
        return None
    prod = _producers(graph)
    div = prod.get(soft[0].input[0])
    if div is None or div.op_type != "Div":
        return None
    const = prod.get(div.input[1])
    if const is None or const.op_type != "Constant":
        return None
    scale = float(numpy_helper.to_array(const.attribute[0].t))
    head_dim = int(round(scale * scale))
    internal = parts["q"][1].shape[1]
    if head_dim <= 0 or internal % head_dim:
        return None
    parts["heads"] = internal // head_dim
    parts["head_dim"] = head_dim
    return parts


def _rewrite_token_to_image(graph, prefix: str, parts) -> None:
    """Few queries (tokens), many keys (image): never project the image tokens.

    ``softmax(q (X Wk + bk)^T)`` equals ``softmax((q Wk^T) X^T)`` (the ``q.bk``
    term is constant along the softmax axis) and ``P (X Wv + bv)`` equals
    ``(P X) Wv + bv`` (rows of P sum to 1), so the two 4096x256x128 key/value
    projections become two products of the size of the attention itself.
    """
    import numpy as np
    from onnx import helper, numpy_helper

    H, d = parts["heads"], parts["head_dim"]
    q_in, wq, bq, _ = parts["q"]
    k_in, wk, _, _ = parts["k"]
    v_in, wv, bv, _ = parts["v"]
    _, wo, bo, out_name = parts["out"]
    c = lambda name, arr: graph.initializer.append(  # noqa: E731
        numpy_helper.from_array(np.ascontiguousarray(arr, dtype=np.float32)
                                if arr.dtype.kind == "f" else arr, prefix + "fast/" + name))
    n = lambda op, ins, outs, **kw: graph.node.append(  # noqa: E731
        helper.make_node(op, ins, [prefix + "fast/" + o for o in outs],
                         name=prefix + "fast/" + outs[0], **kw))
    f = lambda name: prefix + "fast/" + name  # noqa: E731
    c("wq", wq); c("bq", bq)
    c("wkT", (wk.reshape(wk.shape[0], H, d).transpose(1, 2, 0)) / np.sqrt(d))  # [H,d,C]
    c("wv", wv.reshape(wv.shape[0], H, d).transpose(1, 0, 2))                  # [H,C,d]
    c("bv", bv.reshape(H, 1, d))
    c("wo", wo); c("bo", bo)
    c("shape_bttd", np.array([0, 0, H, d], np.int64))
    c("shape_b_ht_c", np.array([0, -1, wk.shape[0]], np.int64))
    c("shape_bhtc", np.array([0, H, -1, wk.shape[0]], np.int64))
    c("shape_btc", np.array([0, 0, H * d], np.int64))
    n("MatMul", [q_in, f("wq")], ["q0"])
    n("Add", [f("q0"), f("bq")], ["q"])
    n("Reshape", [f("q"), f("shape_bttd")], ["q4"])
    n("Transpose", [f("q4")], ["qh"], perm=[0, 2, 1, 3])          # [B,H,T,d]
    n("MatMul", [f("qh"), f("wkT")], ["a"])                        # [B,H,T,C]
    n("Reshape", [f("a"), f("shape_b_ht_c")], ["a2"])              # [B,H*T,C]
    n("Transpose", [k_in], ["kT"], perm=[0, 2, 1])                 # [B,C,N]
    n("MatMul", [f("a2"), f("kT")], ["s"])                         # [B,H*T,N]
    n("Softmax", [f("s")], ["p"], axis=-1)
    n("MatMul", [f("p"), v_in], ["pv"])                            # [B,H*T,C]
    n("Reshape", [f("pv"), f("shape_bhtc")], ["pv4"])              # [B,H,T,C]
    n("MatMul", [f("pv4"), f("wv")], ["o0"])                       # [B,H,T,d]
    n("Add", [f("o0"), f("bv")], ["o1"])
    n("Transpose", [f("o1")], ["o2"], perm=[0, 2, 1, 3])           # [B,T,H,d]
    n("Reshape", [f("o2"), f("shape_btc")], ["o3"])
    n("MatMul", [f("o3"), f("wo")], ["o4"])
    n("Add", [f("o4"), f("bo")], ["out"])
    _rename_input_uses(graph, out_name, f("out"))
    _rename_output_uses(graph, out_name, f("out"))


def _rewrite_image_to_token(graph, prefix: str, parts, shared_q: bool = False) -> None:
    """Many queries (image), few keys (tokens): never project the image tokens.

    ``(X Wq + bq) k^T`` equals ``X (Wq k^T) + bq k^T`` and the output
    projection of ``P v`` equals ``P (v Wo)`` per head, so the 4096x256x128
    query and 4096x128x256 output projections become two products with
    heads x tokens columns. With ``shared_q`` (image side batch 1, projected
    once for all prompts) only the output projection is rewritten.
    """
    import numpy as np
    from onnx import helper, numpy_helper

    H, d = parts["heads"], parts["head_dim"]
    q_in, wq, bq, _ = parts["q"]
    k_in, wk, bk, _ = parts["k"]
    v_in, wv, bv, _ = parts["v"]
    _, wo, bo, out_name = parts["out"]
    C = wq.shape[0]
    f = lambda name: prefix + "fast/" + name  # noqa: E731
    c = lambda name, arr: graph.initializer.append(  # noqa: E731
        numpy_helper.from_array(np.ascontiguousarray(arr), f(name)))
    n = lambda op, ins, outs, **kw: graph.node.append(  # noqa: E731
        helper.make_node(op, ins, [f(o) for o in outs], name=f(outs[0]), **kw))
    c("wq", (wq.reshape(C, H, d).transpose(1, 0, 2) / np.sqrt(d)).astype(np.float32))  # [H,C,d]
    c("bq", (bq.reshape(H, 1, d) / np.sqrt(d)).astype(np.float32))                     # [H,1,d]
    c("wk", wk.astype(np.float32)); c("bk", bk.astype(np.float32))
    c("wv", wv.astype(np.float32)); c("bv", bv.astype(np.float32))
    c("wo", wo.reshape(H, d, wo.shape[1]).astype(np.float32))                          # [H,d,C]
    c("bo_per_head", (bo / H).astype(np.float32))
    c("shape_bthd", np.array([0, 0, H, d], np.int64))
    c("shape_b_c_ht", np.array([0, C, -1], np.int64))
    c("shape_b_1_ht", np.array([0, 1, -1], np.int64))
    c("shape_bnht", np.array([0, 0, H, -1], np.int64))
    c("shape_bn_ht", np.array([0, 0, -1], np.int64))
    c("shape_b_ht_c", np.array([0, -1, wo.shape[1]], np.int64))
    n("MatMul", [k_in, f("wk")], ["k0"])
    n("Add", [f("k0"), f("bk")], ["k"])
    n("Reshape", [f("k"), f("shape_bthd")], ["k4"])
    n("Transpose", [f("k4")], ["kT"], perm=[0, 2, 3, 1])          # [B,H,d,T]
    if shared_q:
        # the image side is batch 1: project it once, keep the small scores
        c("wq2", (wq / np.sqrt(d)).astype(np.float32))
        c("bq2", (bq / np.sqrt(d)).astype(np.float32))
        n("MatMul", [q_in, f("wq2")], ["q0"])
        n("Add", [f("q0"), f("bq2")], ["q"])                       # [1,N,H*d]
        n("Reshape", [f("q"), f("shape_bthd")], ["q4"])
        n("Transpose", [f("q4")], ["qh"], perm=[0, 2, 1, 3])      # [1,H,N,d]
        n("MatMul", [f("qh"), f("kT")], ["s"])                     # [B,H,N,T]
        n("Softmax", [f("s")], ["p0"], axis=-1)
        n("Transpose", [f("p0")], ["p1"], perm=[0, 2, 1, 3])      # [B,N,H,T]
        n("Reshape", [f("p1"), f("shape_bn_ht")], ["p2"])          # [B,N,H*T]
    else:
        n("MatMul", [f("wq"), f("kT")], ["cm"])                    # [B,H,C,T]
        n("MatMul", [f("bq"), f("kT")], ["cb"])                    # [B,H,1,T]
        n("Transpose", [f("cm")], ["cm2"], perm=[0, 2, 1, 3])      # [B,C,H,T]
        n("Reshape", [f("cm2"), f("shape_b_c_ht")], ["cm3"])       # [B,C,H*T]
        n("Reshape", [f("cb"), f("shape_b_1_ht")], ["cb3"])        # [B,1,H*T]
        n("MatMul", [q_in, f("cm3")], ["s0"])                      # [B,N,H*T]
        n("Add", [f("s0"), f("cb3")], ["s1"])
        n("Reshape", [f("s1"), f("shape_bnht")], ["s2"])           # [B,N,H,T]
        n("Softmax", [f("s2")], ["p"], axis=-1)
        n("Reshape", [f("p"), f("shape_bn_ht")], ["p2"])           # [B,N,H*T]
    n("MatMul", [v_in, f("wv")], ["v0"])
    n("Add", [f("v0"), f("bv")], ["v"])
    n("Reshape", [f("v"), f("shape_bthd")], ["v4"])
    n("Transpose", [f("v4")], ["vh"], perm=[0, 2, 1, 3])           # [B,H,T,d]
    n("MatMul", [f("vh"), f("wo")], ["u0"])                        # [B,H,T,C]
    # each head's weights sum to 1, so adding bo/H to every value row adds
    # exactly bo to the output: no bias pass over the [B, N, C] result
    n("Add", [f("u0"), f("bo_per_head")], ["u"])
    n("Reshape", [f("u"), f("shape_b_ht_c")], ["u2"])              # [B,H*T,C]
    n("MatMul", [f("p2"), f("u2")], ["out"])                       # [B,N,C]
    _rename_input_uses(graph, out_name, f("out"))
    _rename_output_uses(graph, out_name, f("out"))


def fast_cross_attention(model):
    """Rewrite the per-prompt cross-attentions so image tokens are never projected.

    Exact up to float rounding (see ``_rewrite_*``). A token-to-image module
    whose image side does not depend on the prompts (the first layer, shared
    by broadcasting) is already cheap and left alone; modules without the
    expected structure are left alone too. Returns ``(model, n_rewritten)``.
    """
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    prefixes = sorted({n.name.rsplit("/q_proj/MatMul", 1)[0] + "/"
                       for n in g.node if n.name.endswith("/q_proj/MatMul")})
    done = 0
    for prefix in prefixes:
        kind = ("t2i" if "token_to_image" in prefix else
                "i2t" if "image_to_token" in prefix else None)
        if kind is None:
            continue
        parts = _attention_parts(g, prefix)
        if parts is None:
            continue
        image_side = parts["k"][0] if kind == "t2i" else parts["q"][0]
        per_prompt = _depends_on(g, image_side, "point_coords")
        if kind == "t2i":
            if not per_prompt:
                continue
            _rewrite_token_to_image(g, prefix, parts)
        else:
            _rewrite_image_to_token(g, prefix, parts, shared_q=not per_prompt)
        done += 1
    _prune(g)
    onnx.checker.check_model(m)
    return m, done


def cell_list_input(model):
    """Let the decoder take any list of embedding cells, each with a weight.

    The decoder's arithmetic is per cell except where the prompt tokens
    attend to the image (a softmax over cells), so the image can be given as
    a strip of ``n`` cells in any order: ``image_embeddings [1, C, 1, n]``,
    their positions ``cell_coords [1, n, 2]`` (x, y in the normalised
    cell-centre units of the dense positional encoding, -1..1 over the 64x64
    grid) and ``cell_log_weight [n]``, added to every token-to-image
    attention score: a cell with log weight ``log m`` counts as ``m``
    identical cells (exact for identical cells). With all 64x64 cells in
    row-major order and zero weights the outputs are the original's; with
    the content cells only it is the content crop; with blocks of padding
    cells each replaced by one cell of their mean (weight log of the block
    size) it approximates the padded decoder at little more than the cost
    of the content crop (``cell_layout``). Masks come out as a strip too:
    ``[B, 4, f, f * n]`` with ``f = 4 / mask_stride`` rows of logits per cell.

    Run it after ``fast_cross_attention`` (it adds the weights to the
    softmaxes that rewrite leaves in place).
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    consts.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in g.node
                   if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})
    emb = next((i for i in g.input if i.name == "image_embeddings"), None)
    if emb is None:
        raise InputError("the SAM decoder has no input 'image_embeddings'; pass the standard "
                         "segment-anything ONNX export of the prompt decoder")
    edims = emb.type.tensor_type.shape.dim
    side = edims[2].dim_value
    uses = [(n, k) for n in g.node if n.op_type == "MatMul" for k, t in enumerate(n.input)
            if t in consts and consts[t].shape == (side, side, 2)
            and consts[t].dtype == np.float32]
    if len(uses) != 1:
        raise InputError(f"the SAM decoder has {len(uses)} dense positional-encoding grids "
                         f"[{side}, {side}, 2] feeding a MatMul (expected 1); it is not the "
                         f"export this rewrite knows")
    node, k = uses[0]
    grid = consts[node.input[k]]
    centres = (np.arange(side, dtype=np.float32) + 0.5) / side * 2 - 1
    if not (np.allclose(grid[0, :, 0], centres, atol=1e-6)
            and np.allclose(grid[:, 0, 1], centres, atol=1e-6)):
        raise InputError("the SAM decoder's positional-encoding grid is not the normalised "
                         "cell-centre grid (x along columns, y along rows)")
    softmaxes = [n for n in g.node if n.op_type == "Softmax" and "token_to_image" in n.name]
    if not softmaxes:
        raise InputError("the SAM decoder has no token-to-image attention softmax (node names "
                         "with 'token_to_image'); export it with segment-anything's script")
    node.input[k] = CELL_COORDS
    for sm in softmaxes:
        weighted = sm.input[0] + "/cell_weighted"
        g.node.append(helper.make_node("Add", [sm.input[0], CELL_LOG_WEIGHT], [weighted],
                                       name=sm.name + "/cell_log_weight"))
        sm.input[0] = weighted
    g.input.extend([
        helper.make_tensor_value_info(CELL_COORDS, TensorProto.FLOAT, [1, "num_cells", 2]),
        helper.make_tensor_value_info(CELL_LOG_WEIGHT, TensorProto.FLOAT, ["num_cells"])])
    edims[2].Clear(); edims[2].dim_value = 1
    edims[3].Clear(); edims[3].dim_param = "num_cells"
    for i in g.input:
        if i.name == "mask_input":
            d = i.type.tensor_type.shape.dim
            d[2].Clear(); d[2].dim_value = 4
            d[3].Clear(); d[3].dim_param = "mask_w"
    for o in g.output:
        if o.name == ALL_MASKS:
            d = o.type.tensor_type.shape.dim
            d[2].Clear(); d[2].dim_param = "mask_rows"
            d[3].Clear(); d[3].dim_param = "mask_cols"
    _prune(g)      # also re-sorts: the Adds were appended at the end
    onnx.checker.check_model(m)
    return m


# Row/col of the 256x256 logit grid that output index i samples: stride*i + offset.
SUBSAMPLE_OFFSET = {1: 0, 2: 0, 4: 2}


def _prune(graph) -> None:
    _prune_all(graph, what="the rewritten SAM decoder")


def _writable_dir(preferred: Path) -> Path:
    return writable_dir(preferred, "moduseg-sam-cache")


def graph_cache_dir() -> Path:
    from ..home import cache_dir

    return cache_dir("sam")


def batched_decoder_path(decoder_path: str | Path, cache_dir: str | Path | None = None,
                         quantize: bool = False, mask_stride: int = 1,
                         fast_attention: bool = True, cells: bool = False) -> Path:
    """Path of the rewritten decoder, built once.

    ``mask_stride`` see ``subsample_mask_head``; ``fast_attention`` see
    ``fast_cross_attention``; ``cells`` see ``cell_list_input``;
    ``quantize``: INT8 dynamic quantisation of the MatMul/Gemm weights
    (``onnxruntime.quantization.quantize_dynamic``).

    Cached under ``cache_dir`` keyed by the source file's sha256, written to a
    temporary file and renamed, so concurrent processes never read half a file.
    """
    import onnx

    src = Path(decoder_path)
    if not src.is_file():
        raise ModelNotFoundError(
            f"SAM decoder {src} does not exist; run 'moduseg models pull' or pass the "
            f"path of sam.onnx")
    d = _writable_dir(Path(cache_dir) if cache_dir else graph_cache_dir())
    tag = _sha256(src)[:16]
    stem = (f"sam_decoder_batched_v{SURGERY_VERSION}_{tag}_s{mask_stride}"
            f"{'_fa' if fast_attention else ''}{'_cells' if cells else ''}")
    out = d / f"{stem}{'_int8' if quantize else ''}.onnx"
    if out.is_file():
        return out
    fp32 = d / f"{stem}.onnx"
    if not fp32.is_file():
        m = batch_prompt_decoder(onnx.load(str(src)))
        m = subsample_mask_head(m, mask_stride)
        if fast_attention:
            m, _ = fast_cross_attention(m)
        if cells:
            m = cell_list_input(m)
        _save_onnx(m, fp32)
    if quantize:
        _quantize(fp32, out, d)
    return out


def quantized_model_path(model_path: str | Path, cache_dir: str | Path | None = None) -> Path:
    """INT8 dynamic quantisation (MatMul/Gemm weights) of any ONNX model, cached by sha256.

    Used for the SAM image encoder (CPU time and mask agreement: the changelog,
    "Performance").
    """
    src = Path(model_path)
    if not src.is_file():
        raise ModelNotFoundError(f"ONNX model {src} does not exist; run 'moduseg models "
                                 f"pull' or pass the right path")
    d = _writable_dir(Path(cache_dir) if cache_dir else graph_cache_dir())
    out = d / f"{src.stem}_int8_{_sha256(src)[:16]}.onnx"
    if out.is_file():
        return out
    _quantize(src, out, d)
    return out


def _quantize(src: Path, out: Path, d: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with atomic_path(out, suffix=".onnx") as tmp, quiet_ort_quantization():
        quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul", "Gemm"])


# ONNX Runtime's quantizer advises shape-inference pre-processing through the root
# logger on every call; dynamic MatMul/Gemm weight quantisation does not need it, and
# a user cannot act on it
_ORT_QUANT_ADVICE = ("Please consider to run pre-processing before quantization",
                     "Please consider pre-processing before quantization")


class _DropQuantAdvice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_ORT_QUANT_ADVICE)


@contextmanager
def quiet_ort_quantization():
    """Drop the quantizer's pre-processing advice; leave every other record alone.

    ``logging.warning`` on an unconfigured root logger would also install a
    stderr handler for the rest of the process (``basicConfig``): a handler of
    that format stands in while the quantizer runs (other warnings still show
    as before), and the root logger is left as found.
    """
    root = logging.getLogger()
    stand_in = None
    if not root.handlers:
        stand_in = logging.StreamHandler()
        stand_in.setFormatter(logging.Formatter(logging.BASIC_FORMAT))
    drop = _DropQuantAdvice()
    if stand_in is not None:
        root.addHandler(stand_in)
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)
        if stand_in is not None:
            root.removeHandler(stand_in)
