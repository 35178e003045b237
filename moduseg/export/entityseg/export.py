"""Export an ``EntitySegModel`` to a fixed-size ONNX graph, check parity, build TensorRT.

The graph: ``image [1, 3, H, W]`` float32 RGB 0..255 (H, W multiples of 32)
-> ``pred_logits [1, Q, K+1]``, ``pred_masks [1, Q, H/4, W/4]``. The runtime
metadata (input size, resize rule, pixel mean) is stored in the ONNX file
under ``moduseg_entityseg`` so the proposer needs nothing else.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ...errors import InputError, ModuSegError
from ...owned import atomic_path
from ...runtime.proposers.entityseg import (METADATA_KEY, EntitySegMeta, entity_postprocess,
                                            preprocess, resized_size)
from .model import SIZE_DIVISIBILITY, EntitySegModel

DEFAULT_OPSET = 17          # GridSample needs 16; 17 adds LayerNormalization
DEFAULT_INPUT_HW = (800, 1344)
DEFAULT_MIN_SIZE, DEFAULT_MAX_SIZE = 800, 1333   # detectron2 MIN/MAX_SIZE_TEST
INPUT_NAME, OUTPUT_NAMES = "image", ("pred_logits", "pred_masks")


class EntitySegParityError(ModuSegError):
    """ONNX Runtime and PyTorch disagree on the exported model."""


def check_input_hw(input_hw) -> tuple[int, int]:
    h, w = (int(v) for v in input_hw)
    if h <= 0 or w <= 0 or h % SIZE_DIVISIBILITY or w % SIZE_DIVISIBILITY:
        raise InputError(f"input size {h}x{w} must be positive multiples of "
                         f"{SIZE_DIVISIBILITY} (Swin/HorNet strides); e.g. 800x1344")
    return h, w


def export_onnx(model: EntitySegModel, out: str | Path, input_hw=DEFAULT_INPUT_HW,
                min_size: int = DEFAULT_MIN_SIZE, max_size: int = DEFAULT_MAX_SIZE,
                opset: int = DEFAULT_OPSET, simplify: bool = True) -> Path:
    """Trace ``model`` at ``input_hw`` and write the ONNX file atomically."""
    import onnx

    if opset < 16:
        raise InputError(f"opset {opset} has no GridSample; use --opset 16 or higher")
    H, W = check_input_hw(input_hw)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    dummy = torch.full((1, 3, H, W), 128.0)
    with atomic_path(out, suffix=".onnx") as tmp:
        tmp = str(tmp)
        _trace_to_onnx(model, dummy, tmp, opset)
        graph = onnx.load(tmp)
        if simplify:
            graph = _simplify(graph)
        meta = EntitySegMeta((H, W), int(min_size), int(max_size),
                             tuple(float(v) for v in model.cfg.pixel_mean),
                             int(model.cfg.num_queries), model.cfg.backbone)
        del graph.metadata_props[:]
        for k, v in ((METADATA_KEY, meta.to_json()), ("moduseg.resolution", f"{H}x{W}"),
                     ("moduseg.kind", "entityseg-proposer"),
                     ("producer", "moduseg export entityseg")):
            p = graph.metadata_props.add()
            p.key, p.value = k, v
        onnx.checker.check_model(graph)
        onnx.save(graph, tmp)
    return out


def _trace_to_onnx(model, dummy, path: str, opset: int) -> None:
    """TorchScript exporter (what this module is tested with, torch 2.4-2.14); the
    dynamo exporter (opset >= 18) only where the TorchScript one is gone."""
    kwargs = dict(input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model, (dummy,), path, opset_version=opset,
                              do_constant_folding=True, dynamo=False, **kwargs)
        except TypeError:   # a torch without the dynamo switch or without TorchScript export
            torch.onnx.export(model, (dummy,), path, opset_version=max(opset, 18), **kwargs)


def _simplify(graph):
    """onnxslim folds the shape arithmetic the tracer leaves; optional."""
    try:
        import onnxslim
    except ImportError:
        return graph
    try:
        return onnxslim.slim(graph)
    except Exception as e:  # noqa: BLE001 - keep the unsimplified, valid graph
        warnings.warn(f"onnxslim failed ({e}); keeping the unsimplified graph")
        return graph


@dataclass
class EntitySegParity:
    """Agreement of ONNX Runtime with PyTorch on one image."""

    logits_max_abs: float
    masks_max_abs: float
    mask_agreement: float      # fraction of pixels with the same entity id
    score_max_abs: float
    entities_torch: int
    entities_onnx: int

    def ok(self, min_agreement: float = 0.999, score_atol: float = 1e-3) -> bool:
        return (self.mask_agreement >= min_agreement and self.score_max_abs <= score_atol
                and np.isfinite(self.masks_max_abs))

    def __str__(self) -> str:
        return (f"class logits max|d| {self.logits_max_abs:.2e}, mask logits max|d| "
                f"{self.masks_max_abs:.2e}, entity-id agreement {self.mask_agreement:.5f}, "
                f"scores max|d| {self.score_max_abs:.2e}, entities {self.entities_torch} "
                f"(torch) / {self.entities_onnx} (onnx)")


def _id_map(masks: np.ndarray) -> np.ndarray:
    ids = np.zeros(masks.shape[1:], np.int32)
    for i, m in enumerate(masks):
        ids[m] = i + 1
    return ids


def compare_outputs(ref, other, input_hw, resized_hw, image_hw, top_k: int = 100
                    ) -> EntitySegParity:
    """Parity of two (class logits, mask logits) pairs, raw and after post-processing."""
    (r_cls, r_masks), (o_cls, o_masks) = ref, other
    rm, rs, rq = entity_postprocess(r_cls, r_masks, input_hw, resized_hw, image_hw, top_k)
    om, os_, oq = entity_postprocess(o_cls, o_masks, input_hw, resized_hw, image_hw, top_k)
    agree = float((_id_map(rm) == _id_map(om)).mean()) if len(rm) and len(om) else \
        float(len(rm) == len(om))
    common = np.intersect1d(rq, oq)
    sd = max((abs(float(rs[rq == q][0]) - float(os_[oq == q][0])) for q in common),
             default=0.0)
    return EntitySegParity(float(np.abs(r_cls - o_cls).max()),
                           float(np.abs(r_masks - o_masks).max()), agree, sd, len(rm), len(om))


def check_parity(model: EntitySegModel, onnx_path: str | Path, image: np.ndarray,
                 providers: str = "cpu", top_k: int = 100) -> EntitySegParity:
    """Run PyTorch and ONNX Runtime on ``image`` and compare outputs and entities."""
    from ...runtime.proposers.entityseg import EntitySegProposer

    prop = EntitySegProposer(onnx_path, providers=providers, top_k=top_k)
    m = prop.meta
    rhw = resized_size(image.shape[:2], m.input_hw, m.min_size, m.max_size)
    x = preprocess(image, m.input_hw, rhw, m.pixel_mean)
    with torch.no_grad():
        t_out = tuple(t[0].numpy() for t in model.eval()(torch.from_numpy(x)))
    return compare_outputs(t_out, prop.infer(x), m.input_hw, rhw, image.shape[:2], top_k)


def check_engine_parity(engine_path: str | Path, onnx_path: str | Path, image: np.ndarray,
                        top_k: int = 100) -> EntitySegParity:
    """TensorRT engine vs ONNX Runtime (CPU) on ``image``, entities included."""
    from ...runtime.proposers.entityseg import EntitySegProposer

    ref = EntitySegProposer(onnx_path, providers="cpu", top_k=top_k)
    eng = EntitySegProposer(engine_path, top_k=top_k)
    try:
        m = ref.meta
        rhw = resized_size(image.shape[:2], m.input_hw, m.min_size, m.max_size)
        x = preprocess(image, m.input_hw, rhw, m.pixel_mean)
        return compare_outputs(ref.infer(x), eng.infer(x), m.input_hw, rhw, image.shape[:2],
                               top_k)
    finally:
        eng.close()


# FP16 moves mask logits near 0 across the threshold; these bound what we accept
ENGINE_TOLERANCE = {"fp32": (0.999, 1e-3), "fp16": (0.98, 0.02), "best": (0.98, 0.02)}


def build_trt_engine(onnx_path: str | Path, engine_path: str | Path, precision: str = "fp16",
                     workspace_mb: int = 4096, timing_cache: str | None = None,
                     device: int = 0, force: bool = False) -> Path:
    """Build the TensorRT engine with the shared builder (``moduseg.export.engine``).

    The builder's own check compares per-patch cosine of backbone features,
    which does not apply to this graph; ``check_engine_parity`` compares
    entities instead (the CLI runs it after the build).
    """
    from ..engine import DEFAULT_FP32_OPS, BuildOptions, build_cached_engine

    opts = BuildOptions(precision=precision, workspace_mb=workspace_mb,
                        timing_cache=timing_cache, fp32_layers=DEFAULT_FP32_OPS, device=device)
    path, _, _ = build_cached_engine(onnx_path, opts, output=engine_path, check=False,
                                     force=force)
    return Path(path)
