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

Edits are located by graph structure (op types and data flow), not by node
names, so any export of the standard SAM decoder works; anything unexpected
raises ``InputError`` naming the file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from ...errors import InputError, ModelNotFoundError

ALL_MASKS = "all_low_res_masks"
ALL_IOUS = "all_iou_predictions"
SURGERY_VERSION = "1"


def _producers(graph) -> dict:
    return {o: n for n in graph.node for o in n.output}


def _consumers(graph) -> dict:
    out: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def _walk_back_to(graph, start: str, op_type: str, through: tuple[str, ...]):
    """Follow first inputs up from tensor ``start`` through ``through`` ops to ``op_type``."""
    prod = _producers(graph)
    name = start
    for _ in range(32):
        node = prod.get(name)
        if node is None:
            return None
        if node.op_type == op_type:
            return node
        if node.op_type not in through:
            return None
        name = node.input[0]
    return None


def _rename_input_uses(graph, old: str, new: str) -> None:
    for n in graph.node:
        for k, i in enumerate(n.input):
            if i == old:
                n.input[k] = new


def _prune(graph) -> None:
    """Drop nodes, initializers and inputs the outputs do not depend on."""
    prod = _producers(graph)
    needed, stack = set(), [o.name for o in graph.output]
    keep_nodes = set()
    while stack:
        t = stack.pop()
        if t in needed:
            continue
        needed.add(t)
        node = prod.get(t)
        if node is not None and id(node) not in keep_nodes:
            keep_nodes.add(id(node))
            stack.extend(i for i in node.input if i)
    nodes = [n for n in graph.node if id(n) in keep_nodes]
    del graph.node[:]
    graph.node.extend(nodes)
    inits = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    inputs = [i for i in graph.input if i.name in needed]
    del graph.input[:]
    graph.input.extend(inputs)
    del graph.value_info[:]


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


# Row/col of the 256x256 logit grid that output index i samples: stride*i + offset.
SUBSAMPLE_OFFSET = {1: 0, 2: 0, 4: 2}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "moduseg" / "sam"


def _writable_dir(preferred: Path) -> Path:
    for d in (preferred, Path(tempfile.gettempdir()) / "moduseg-sam-cache"):
        try:
            d.mkdir(parents=True, exist_ok=True)
            if os.access(d, os.W_OK):
                return d
        except OSError:
            continue
    raise InputError(f"no writable cache directory for the rewritten SAM decoder "
                     f"(tried {preferred}); pass cache_dir=")


def batched_decoder_path(decoder_path: str | Path, cache_dir: str | Path | None = None,
                         quantize: bool = False, mask_stride: int = 1) -> Path:
    """Path of the rewritten (optionally INT8 dynamic-quantised) decoder, built once.

    Cached under ``cache_dir`` keyed by the source file's sha256, written to a
    temporary file and renamed, so concurrent processes never read half a file.
    """
    import onnx

    src = Path(decoder_path)
    if not src.is_file():
        raise ModelNotFoundError(
            f"SAM decoder {src} does not exist; run 'moduseg models pull' or pass the "
            f"path of sam.onnx")
    d = _writable_dir(Path(cache_dir) if cache_dir else default_cache_dir())
    tag = _sha256(src)[:16]
    stem = f"sam_decoder_batched_v{SURGERY_VERSION}_{tag}_s{mask_stride}"
    out = d / f"{stem}{'_int8' if quantize else ''}.onnx"
    if out.is_file():
        return out
    fp32 = d / f"{stem}.onnx"
    if not fp32.is_file():
        m = subsample_mask_head(batch_prompt_decoder(onnx.load(str(src))), mask_stride)
        _atomic_save(m, fp32)
    if quantize:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=d)
        os.close(fd)
        try:
            quantize_dynamic(str(fp32), tmp, weight_type=QuantType.QInt8,
                             op_types_to_quantize=["MatMul", "Gemm"])
            os.replace(tmp, out)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return out


def _atomic_save(model, path: Path) -> None:
    import onnx

    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=path.parent)
    os.close(fd)
    try:
        onnx.save(model, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
