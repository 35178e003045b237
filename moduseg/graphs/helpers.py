"""The graph helpers every rewrite shares: an index of producers, consumers and
constants, reachability pruning, topological order, renames and checked saves.

They work on ``onnx`` protobufs in place and keep node order and names, so a
rewrite's output graph (and the caches keyed on it) is reproducible.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..owned import atomic_path


def producers(graph) -> dict:
    return {o: n for n in graph.node for o in n.output}


def consumers(graph) -> dict:
    out: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def constants(graph) -> dict[str, np.ndarray]:
    """Initializers and ``Constant`` node values by tensor name."""
    from onnx import numpy_helper

    const = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            const[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    return const


class GraphIndex:
    """Producers, consumers and constant values of a graph (a read-only view);
    the lookups raise an ``InputError`` naming ``what`` (the model) on a mismatch."""

    def __init__(self, graph, what: str = "graph"):
        self.what = what
        self.prod = producers(graph)
        self.cons = consumers(graph)
        self.const = constants(graph)

    def producer(self, tensor: str, op_type: str, where: str):
        node = self.prod.get(tensor)
        if node is None or node.op_type != op_type:
            got = "a graph input or constant" if node is None else f"{node.op_type} {node.name!r}"
            raise InputError(f"{self.what}: expected a {op_type} producing {tensor!r} "
                             f"({where}), found {got}")
        return node

    def consumer(self, tensor: str, op_type: str, where: str):
        users = self.cons.get(tensor, [])
        if len(users) != 1 or users[0].op_type != op_type:
            raise InputError(f"{self.what}: expected {tensor!r} to feed one {op_type} "
                             f"({where}), found {[u.op_type for u in users]}")
        return users[0]

    def int_const(self, tensor: str, where: str) -> np.ndarray:
        v = self.const.get(tensor)
        if v is None or v.dtype.kind not in "iu":
            raise InputError(f"{self.what}: {tensor!r} ({where}) is not an integer constant")
        return v

    def shape_parts(self, reshape, where: str) -> tuple[object, list]:
        """The Concat building a Reshape's target shape and its entries (None = dynamic)."""
        concat = self.producer(reshape.input[1], "Concat", where)
        vals = [self.const.get(t) for t in concat.input]
        return concat, [int(v.reshape(-1)[0]) if v is not None and v.size == 1 else None
                        for v in vals]


def walk_back_to(graph, start: str, op_type: str, through: tuple[str, ...]):
    """Follow first inputs up from tensor ``start`` through ``through`` ops to ``op_type``."""
    prod = producers(graph)
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


def depends_on(graph, tensor: str, source: str) -> bool:
    """Whether ``tensor`` is computed from ``source``."""
    prod = producers(graph)
    seen, stack = set(), [tensor]
    while stack:
        t = stack.pop()
        if t == source:
            return True
        if t in seen:
            continue
        seen.add(t)
        node = prod.get(t)
        if node is not None:
            stack.extend(i for i in node.input if i)
    return False


def rename_input_uses(graph, old: str, new: str) -> None:
    for n in graph.node:
        for k, i in enumerate(n.input):
            if i == old:
                n.input[k] = new


def rename_output_uses(graph, old: str, new: str) -> None:
    for o in graph.output:
        if o.name == old:
            o.name = new


def toposort(nodes: list, available: set, what: str = "the rewritten graph") -> list:
    """Order nodes so every input is produced before use (edits append at the end);
    an already ordered list keeps its order."""
    avail = set(available) | {""}
    pending, out = list(nodes), []
    while pending:
        rest = []
        for n in pending:
            if all(i in avail for i in n.input):
                out.append(n)
                avail.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise InputError(f"{what} has a dependency cycle or a missing tensor: "
                             + rest[0].name)
        pending = rest
    return out


def prune(graph, *, inputs: bool = True, value_info: bool = True,
          what: str = "the rewritten graph") -> None:
    """Drop the nodes and initializers (and, with ``inputs``, the graph inputs) the
    outputs do not depend on; nodes end up in topological order. ``value_info``:
    also drop the shape annotations, which edits may have made stale."""
    prod = producers(graph)
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
    nodes = toposort([n for n in graph.node if id(n) in keep_nodes],
                     {i.name for i in graph.input} | {i.name for i in graph.initializer}, what)
    del graph.node[:]
    graph.node.extend(nodes)
    inits = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    if inputs:
        kept = [i for i in graph.input if i.name in needed]
        del graph.input[:]
        graph.input.extend(kept)
    if value_info:
        del graph.value_info[:]


def drop_unused(graph, *, initializers: bool = True) -> None:
    """Remove ``Constant`` nodes (and, with ``initializers``, initializers) nothing reads."""
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    kept = [n for n in graph.node if not (n.op_type == "Constant" and n.output[0] not in used)]
    if len(kept) != len(graph.node):
        del graph.node[:]
        graph.node.extend(kept)
    if initializers:
        inits = [t for t in graph.initializer if t.name in used]
        if len(inits) != len(graph.initializer):
            del graph.initializer[:]
            graph.initializer.extend(inits)


def save_onnx(model, path: Path) -> None:
    """``onnx.save``, atomically (``owned.atomic_path``)."""
    import onnx

    with atomic_path(path, suffix=".onnx") as tmp:
        onnx.save(model, str(tmp))


def read_metadata(path_or_model, prefix: str = "moduseg.") -> dict[str, str]:
    """The ``prefix``-ed metadata of an ONNX graph (a file, read without its weights,
    or a loaded model), keys without the prefix."""
    import onnx

    m = path_or_model
    if not hasattr(m, "metadata_props"):
        m = onnx.load(str(path_or_model), load_external_data=False)
    return {p.key[len(prefix):]: p.value for p in m.metadata_props if p.key.startswith(prefix)}


def writable_dir(preferred: Path, fallback: str = "moduseg-cache") -> Path:
    """``preferred``, created; else a folder under the system temp dir."""
    import os

    for d in (preferred, Path(tempfile.gettempdir()) / fallback):
        try:
            d.mkdir(parents=True, exist_ok=True)
            if os.access(d, os.W_OK):
                return d
        except OSError:
            continue
    raise InputError(f"no writable cache folder ({preferred}); pass cache_dir=")
