"""Will TensorRT parse and build this ONNX graph well?  Answered without a GPU.

Every op type is looked up in the TensorRT ONNX parser's support matrix for
the targeted TensorRT version (``trt_ops.json``, from onnx-tensorrt's
``docs/operators.md`` per release), then known hazards are flagged: int64
weights, dynamic inputs that need optimisation profiles, an opset outside
the parser's range, LayerNorm decomposed into ReduceMean/Pow (FP16 overflow)
and Softmax/LayerNorm layers that FP16 ViTs usually keep in FP32.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import click
import numpy as np

from ..errors import InputError, ModelNotFoundError

OPS_FILE = Path(__file__).with_name("trt_ops.json")
DEFAULT_DOMAINS = ("", "ai.onnx")
INT32_MAX = np.iinfo(np.int32).max
FP16_SENSITIVE = ("LayerNormalization", "Softmax", "ReduceMean", "Pow")
# onnx TensorProto data types we name in messages
DTYPE_NAMES = {1: "float32", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 9: "bool",
               10: "float16", 11: "double", 16: "bfloat16"}


@dataclass(frozen=True)
class Issue:
    severity: str  # "error" (will not parse/build), "warning" (hazard), "info"
    code: str
    message: str
    nodes: tuple[str, ...] = ()


@dataclass
class CompatReport:
    model: str
    trt_version: str
    table_version: str
    opset: int
    op_counts: dict[str, int]
    issues: list[Issue] = field(default_factory=list)

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def by_code(self, code: str) -> list[Issue]:
        return [i for i in self.issues if i.code == code]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ok"] = self.ok
        return d

    def lines(self) -> list[str]:
        out = [f"TensorRT {self.trt_version} compatibility of {self.model} "
               f"(parser table {self.table_version}, graph opset {self.opset}, "
               f"{sum(self.op_counts.values())} nodes, {len(self.op_counts)} op types)"]
        for sev in ("error", "warning", "info"):
            for i in self.issues:
                if i.severity == sev:
                    where = f" [{', '.join(i.nodes[:5])}{' ...' if len(i.nodes) > 5 else ''}]" \
                        if i.nodes else ""
                    out.append(f"  {sev.upper():7s} {i.code}: {i.message}{where}")
        out.append("  result: " + ("OK, no blocking issue" if self.ok else
                                   f"{len(self.errors)} blocking issue(s)"))
        return out


@lru_cache(maxsize=1)
def load_ops_table() -> dict:
    with open(OPS_FILE) as f:
        return json.load(f)["versions"]


def _vkey(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split("."))


def resolve_version(requested: str) -> tuple[str, str | None]:
    """``10.x``/``10``/``10.3``/``8.6.1`` -> (table version, note or None).

    An exact minor is used when known; otherwise the newest known release
    not newer than the request, with a note (later parsers only add ops).
    """
    table = load_ops_table()
    known = sorted(table, key=_vkey)
    req = str(requested).lower().strip().removeprefix("trt").removeprefix("v")
    parts = [p for p in req.split(".") if p not in ("x", "*", "")]
    try:
        nums = tuple(int(p) for p in parts)
    except ValueError:
        nums = ()
    if not nums:
        raise InputError(f"--trt-version {requested!r} is not a version; use e.g. 8.6, 10.x "
                         f"(known tables: {', '.join(known)})")
    if len(nums) == 1:
        same = [k for k in known if _vkey(k)[0] == nums[0]]
        if same:
            return same[-1], None
    else:
        exact = f"{nums[0]}.{nums[1]}"
        if exact in table:
            return exact, None
    older = [k for k in known if _vkey(k) <= nums[:2]]
    if not older:
        raise InputError(f"TensorRT {requested} is older than every known table "
                         f"({', '.join(known)}); use TensorRT 8.5 or newer")
    return older[-1], (f"no table for TensorRT {requested}; checked against {older[-1]}, "
                       f"the newest known release before it (newer parsers support more)")


def _all_nodes(graph):
    """Nodes of the graph and of every subgraph (If/Loop/Scan bodies)."""
    for n in graph.node:
        yield n
        for a in n.attribute:
            if a.g is not None and a.g.node:
                yield from _all_nodes(a.g)
            for g in a.graphs:
                yield from _all_nodes(g)


def _opset(model) -> int:
    return max((o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS),
               default=0)


def check_model(model, trt_version: str = "10.x", name: str = "model") -> CompatReport:
    """The compatibility report for an ``onnx.ModelProto``."""
    table_version, note = resolve_version(trt_version)
    table = load_ops_table()[table_version]
    ops = table["ops"]
    nodes = list(_all_nodes(model.graph))
    opset = _opset(model)
    counts = Counter(n.op_type if n.domain in DEFAULT_DOMAINS else f"{n.domain}::{n.op_type}"
                     for n in nodes)
    rep = CompatReport(name, str(trt_version), table_version, opset, dict(counts))
    add = rep.issues.append
    if note:
        add(Issue("info", "version", note))

    # 1. every op type against the parser's support matrix
    by_type: dict[str, list[str]] = {}
    for n in nodes:
        key = n.op_type if n.domain in DEFAULT_DOMAINS else f"{n.domain}::{n.op_type}"
        by_type.setdefault(key, []).append(n.name or n.output[0])
    for op, names in sorted(by_type.items()):
        if "::" in op:
            add(Issue("error", "custom-domain-op",
                      f"{op} ({len(names)}x) is outside the ONNX domain; TensorRT needs a "
                      f"plugin for it", tuple(names)))
            continue
        entry = ops.get(op)
        if entry is None:
            add(Issue("error", "unknown-op",
                      f"{op} ({len(names)}x) is not in the TensorRT {table_version} parser's "
                      f"support matrix; it needs a plugin or a graph rewrite", tuple(names)))
        elif not entry[0]:
            add(Issue("error", "unsupported-op",
                      f"{op} ({len(names)}x) is listed as unsupported by the TensorRT "
                      f"{table_version} ONNX parser; rewrite it or add a plugin", tuple(names)))
        elif entry[2]:
            add(Issue("info", "restricted-op",
                      f"{op} ({len(names)}x) is supported with restrictions in TensorRT "
                      f"{table_version} (see the onnx-tensorrt operator matrix)", tuple(names)))

    # 2. opset range
    lo, hi = table["opset_min"], table["opset_max"]
    if opset > hi:
        add(Issue("warning", "opset-too-new",
                  f"graph opset {opset} is above TensorRT {table_version}'s supported range "
                  f"({lo}..{hi}); re-export with --opset {hi}"))
    elif opset < lo:
        add(Issue("error", "opset-too-old",
                  f"graph opset {opset} is below TensorRT {table_version}'s range ({lo}..{hi})"))
    if opset < 17:
        add(Issue("warning", "no-native-layernorm",
                  f"opset {opset} < 17 has no LayerNormalization op: LayerNorm is decomposed "
                  f"into ReduceMean/Sub/Pow/Sqrt/Div, which overflows in FP16; re-export at "
                  f"opset 17 (moduseg export backbone does by default)"))
    if not ops.get("LayerNormalization", [False])[0] and counts.get("LayerNormalization"):
        add(Issue("error", "layernorm-unsupported",
                  f"TensorRT {table_version} cannot parse LayerNormalization; export at opset "
                  f"<17 or use TensorRT >= 8.6"))

    _check_initializers(model, table_version, add)
    _check_inputs(model, add)
    _check_fp16_patterns(model, nodes, counts, add)
    if model.ByteSize() > 2_000_000_000 or any(
            t.data_location == 1 for t in model.graph.initializer):
        add(Issue("info", "external-data",
                  "weights are stored outside the .onnx file; build with the file path "
                  "(parse_from_file) and keep the .data file beside it"))
    return rep


def _check_initializers(model, table_version: str, add) -> None:
    from onnx import TensorProto, numpy_helper

    int64, big, double = [], [], []
    for t in model.graph.initializer:
        if t.data_type == TensorProto.INT64:
            int64.append(t.name)
            if t.data_location != 1:
                a = numpy_helper.to_array(t)
                if a.size and np.abs(a.astype(np.float64)).max() > INT32_MAX:
                    big.append(t.name)
        elif t.data_type == TensorProto.DOUBLE:
            double.append(t.name)
    for n in model.graph.node:  # Constant nodes hold weights too
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value" and a.t.data_type == TensorProto.INT64:
                    int64.append(n.output[0])
                    arr = numpy_helper.to_array(a.t)
                    if arr.size and np.abs(arr.astype(np.float64)).max() > INT32_MAX:
                        big.append(n.output[0])
    major = _vkey(table_version)[0]
    if int64:
        if major < 10:
            add(Issue("warning", "int64-weights",
                      f"{len(int64)} int64 initializers/constants: TensorRT {table_version} casts "
                      f"int64 down to int32 (parser warnings, clamping)", tuple(int64)))
        else:
            add(Issue("info", "int64-weights",
                      f"{len(int64)} int64 initializers/constants (TensorRT 10 supports INT64; "
                      f"shape arithmetic stays int64)", tuple(int64)))
    if big:
        add(Issue("warning", "int64-out-of-int32-range",
                  f"{len(big)} int64 values exceed the int32 range (e.g. INT64_MAX slice "
                  f"ends); TensorRT clamps them, which is harmless for slice bounds but wrong "
                  f"for data", tuple(big)))
    if double:
        add(Issue("warning", "double-weights",
                  f"{len(double)} float64 initializers are cast down to float32 by TensorRT",
                  tuple(double)))


def _check_inputs(model, add) -> None:
    inits = {t.name for t in model.graph.initializer}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dims = [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?")
                for d in tt.shape.dim]
        dynamic = [i for i, d in enumerate(tt.shape.dim)
                   if not d.HasField("dim_value") or d.dim_value <= 0]
        if dynamic:
            add(Issue("warning", "dynamic-input",
                      f"input {vi.name} {dims} has dynamic axes {dynamic}: the engine needs an "
                      f"optimisation profile (moduseg export engine --min-shape/--opt-shape/"
                      f"--max-shape)" + (", and a dynamic H/W keeps position-embedding "
                                         f"resizing in the engine" if any(i >= 2 for i in dynamic)
                                         else ""),
                      (vi.name,)))
        dt = DTYPE_NAMES.get(tt.elem_type, str(tt.elem_type))
        if dt not in ("float32", "float16"):
            add(Issue("info", "input-dtype", f"input {vi.name} is {dt}", (vi.name,)))


def _check_fp16_patterns(model, nodes, counts, add) -> None:
    """Decomposed LayerNorm (ReduceMean -> Sub -> Pow -> ReduceMean) and FP16-fragile ops."""
    producers = {o: n for n in model.graph.node for o in n.output}
    decomposed = []
    for n in model.graph.node:
        if n.op_type != "ReduceMean":
            continue
        p = producers.get(n.input[0]) if n.input else None
        if p is not None and p.op_type == "Pow":
            q = producers.get(p.input[0])
            if q is not None and q.op_type == "Sub":
                decomposed.append(p.name or p.output[0])
    if decomposed:
        add(Issue("warning", "decomposed-layernorm-fp16",
                  f"{len(decomposed)} LayerNorms are decomposed (Sub -> Pow -> ReduceMean): the "
                  f"squared activations overflow FP16 in ViTs; build FP16 engines with "
                  f"--fp32-layers Pow,ReduceMean, or re-export with moduseg export backbone "
                  f"(opset 17, fused LayerNormalization)", tuple(decomposed)))
    fragile = {op: counts[op] for op in FP16_SENSITIVE if counts.get(op)}
    if fragile:
        add(Issue("info", "fp16-sensitive",
                  "FP16-sensitive layers " + ", ".join(f"{k} x{v}" for k, v in fragile.items())
                  + "; if the FP16 engine's cosine check fails, keep them in FP32 "
                    "(--fp32-layers LayerNormalization,Softmax)"))


def check_file(path: str | Path, trt_version: str = "10.x") -> CompatReport:
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"{path} does not exist; export it first with "
                                 f"'moduseg export backbone'")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf DecodeError and friends
        raise InputError(f"{path} is not a readable ONNX file: {e}") from None
    return check_model(model, trt_version, name=str(path))


@click.command("check")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--trt-version", default="10.x", show_default=True,
              help="Targeted TensorRT version, e.g. 8.6, 10.x, 10.1.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def check_command(model, trt_version, as_json):
    """Report whether TensorRT's ONNX parser supports every op of MODEL, and known hazards
    (no GPU needed). Exits 1 when something would not parse."""
    rep = check_file(model, trt_version)
    if as_json:
        click.echo(json.dumps(rep.to_dict(), indent=1))
    else:
        for line in rep.lines():
            click.echo(line)
    if not rep.ok:
        raise SystemExit(1)
