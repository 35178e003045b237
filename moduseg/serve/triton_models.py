"""The Python-backend models of the Triton repository (``repository.MODELS``).

Each model builds the pipeline exactly as ``moduseg segment`` does
(``bank.segmenter.segmenter_from_bank``, the one construction call, on the CPU) and keeps
only its own stage: the runner of a network, the bank with its index, or, for the
BLS models ``moduseg`` and ``moduseg_stream``, a segmenter built on a backend whose
runners call the network models (``runtime.runners.TritonRunners``). So the
served algorithm is the package's own code: ``OnnxBackbone`` preprocessing,
``SamAutomaticMaskGenerator`` prompting and filtering, and ``assign``.

``triton_python_backend_utils`` exists only inside Triton's Python stub, so
it is imported in the methods that run there.
"""

from __future__ import annotations

import dataclasses
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..errors import InputError, ModuSegError
from .repository import BACKBONE, BANK, DECODER, ENCODER, STREAM

# the graph each network model serves, by the runner role that opens it
SERVED_ROLES = {"backbone": BACKBONE, "sam_encoder": ENCODER, "sam_decoder": DECODER}


def _pb():
    import triton_python_backend_utils as pb_utils  # only inside Triton's Python stub
    return pb_utils


def _setup(args):
    """(model name, parameters, repository root) from the backend's ``initialize`` args."""
    cfg = json.loads(args["model_config"])
    params = {k: v.get("string_value", "") for k, v in cfg.get("parameters", {}).items()}
    root = Path(args["model_repository"]).parent
    return cfg, params, root


def served_backend(url: str | None = None):
    """The ``cpu`` backend with runners that call the served network models (BLS inside
    Triton, or ``tritonclient`` at ``url``); the encoder model takes any frame size."""
    from ..build import resolve_backend
    from ..runtime.runners import TritonRunners

    return dataclasses.replace(resolve_backend("cpu"), runners=TritonRunners(
        SERVED_ROLES, url=url, dynamic_hw=("sam_encoder",)))


def _parts(args, remote: bool = False):
    """(config, parameters, ``Segmenter``): networks run here (ONNX Runtime on the CPU),
    or, ``remote``, by the network models."""
    cfg, params, root = _setup(args)
    from ..bank.segmenter import segmenter_from_bank

    seg = segmenter_from_bank(str(root / params["bank"]), params.get("home") or None,
                              overrides=tuple(json.loads(params.get("settings") or "[]")),
                              backend=served_backend() if remote else "cpu")
    return cfg, params, seg


def _error_response(e: Exception):
    """An error for the client: bad input is the caller's (400), anything else ours (500)."""
    pb = _pb()
    code = getattr(pb.TritonError, "INVALID_ARG" if isinstance(e, InputError) else "INTERNAL",
                   None)
    err = pb.TritonError(str(e)) if code is None else pb.TritonError(str(e), code)
    return pb.InferenceResponse(output_tensors=[], error=err)


def _io_names(cfg):
    return [t["name"] for t in cfg["input"]], [t["name"] for t in cfg["output"]]


class OnnxStageModel:
    """``backbone``, ``sam_encoder`` or ``sam_decoder`` on ONNX Runtime (CPU variant).

    The backbone has dynamic batching: requests of one input size are stacked
    into one session run.
    """

    def initialize(self, args):
        cfg, _, seg = _parts(args)
        self.name = cfg["name"]
        self.inputs, self.outputs = _io_names(cfg)
        self.batched = int(cfg.get("max_batch_size", 0)) > 0
        if self.name == BACKBONE:
            self.runner = seg.backbone.runner
        elif self.name == DECODER:
            self.runner = seg.proposer.decoder
        elif self.name == ENCODER:
            self.proposer = seg.proposer          # content-sized encoders, made per size
            self.runner = None
        else:
            raise ModuSegError(f"OnnxStageModel cannot serve a model named {self.name!r}")

    def _runner(self, feed):
        if self.runner is not None:
            return self.runner
        return self.proposer.encoder.runner_for(next(iter(feed.values())).shape[2:])

    def _run(self, feed):
        out = self._runner(feed).run(feed, self.outputs)
        return [out[n] for n in self.outputs]

    def execute(self, requests):
        pb = _pb()
        feeds = [{n: pb.get_input_tensor_by_name(r, n).as_numpy() for n in self.inputs}
                 for r in requests]
        results: list = [None] * len(requests)
        if self.batched:
            groups: dict = {}
            for i, f in enumerate(feeds):
                groups.setdefault(tuple(v.shape[1:] for v in f.values()), []).append(i)
            for idx in groups.values():
                try:
                    stacked = {n: np.concatenate([feeds[i][n] for i in idx]) for n in self.inputs}
                    outs = self._run(stacked)
                    at = 0
                    for i in idx:
                        b = len(feeds[i][self.inputs[0]])
                        results[i] = [o[at:at + b] for o in outs]
                        at += b
                except Exception as e:  # noqa: BLE001 - reported to the caller
                    for i in idx:
                        results[i] = e
        else:
            for i, f in enumerate(feeds):
                try:
                    results[i] = self._run(f)
                except Exception as e:  # noqa: BLE001
                    results[i] = e
        return [_error_response(r) if isinstance(r, Exception) else pb.InferenceResponse(
            [pb.Tensor(n, np.ascontiguousarray(o)) for n, o in zip(self.outputs, r)])
            for r in results]


def segment_boxes(masks: np.ndarray, image_hw) -> np.ndarray:
    """``[P, Hm, Wm]`` masks -> ``[P, 4]`` boxes x0, y0, x1, y1 (exclusive) in image pixels."""
    P, mh, mw = masks.shape
    H, W = image_hw
    boxes = np.zeros((P, 4), np.int32)
    for i in range(P):
        rows, cols = np.flatnonzero(masks[i].any(1)), np.flatnonzero(masks[i].any(0))
        if len(rows):
            boxes[i] = (int(np.floor(cols[0] * W / mw)), int(np.floor(rows[0] * H / mh)),
                        int(np.ceil((cols[-1] + 1) * W / mw)),
                        int(np.ceil((rows[-1] + 1) * H / mh)))
    return boxes


def result_arrays(result, masks: np.ndarray):
    """A ``SegmentationResult`` as the served outputs: the segments painted in the map."""
    shown = [s for s in result.segments if s.label >= 0 and s.painted_pixels > 0]
    idx = np.array([s.proposal for s in shown], np.int64)
    boxes = (segment_boxes(masks[idx], result.label_map.shape) if len(idx)
             else np.zeros((0, 4), np.int32))
    return {"label_map": np.ascontiguousarray(result.label_map, np.uint8),
            "class": np.array([s.label for s in shown], np.int32),
            "confidence": np.array([s.confidence for s in shown], np.float32),
            "box": boxes,
            "class_names": np.array([str(n).encode() for n in result.class_names], object)}


class BankModel:
    """``moduseg_bank``: the bank (loaded once) and ``assign``: SMFA to painting."""

    watcher = None

    def initialize(self, args):
        _, params, seg = _parts(args, remote=True)   # no network runs here
        self.seg = seg
        # no network runs here (its runners only name the served models); the
        # backbone's identity does (a hot-swapped bank must match it)
        seg.backbone, seg.proposer = _IdentityOnly(seg.backbone.identity), None
        self.watcher = watch_bank(params, seg)

    def execute(self, requests):
        from ..runtime.pipeline import assign
        from ..types import FeatureMap, GridGeometry, Proposals

        pb = _pb()
        if self.watcher is not None:      # a changed bank file: used from this batch on
            self.watcher.poll()
        s = self.seg
        bank, index, prior = s._state     # the whole batch runs on one bank
        out = []
        for r in requests:
            try:
                get = {n: pb.get_input_tensor_by_name(r, n).as_numpy()
                       for n in ("features", "geometry", "masks", "scores", "image")}
                g = [int(v) for v in get["geometry"]]
                geo = GridGeometry((g[0], g[1]), (g[2], g[3]), (g[4], g[5]), g[6])
                fmap = FeatureMap(np.ascontiguousarray(get["features"], np.float32), geo)
                image = get["image"]
                props = Proposals(get["masks"].astype(bool, copy=False), get["scores"],
                                  tuple(image.shape[:2]))
                res = assign(fmap, props, bank, index, s.config, None, s.pooler, prior,
                             None, image)
                arrays = result_arrays(res, props.masks)
                out.append(pb.InferenceResponse([pb.Tensor(k, v) for k, v in arrays.items()]))
            except Exception as e:  # noqa: BLE001 - reported to the caller
                out.append(_error_response(e))
        return out


class _IdentityOnly:
    def __init__(self, identity):
        self.identity = identity


def watch_bank(params: dict, seg, model: str = BANK):
    """A ``BankWatcher`` on the user's bank file (``bank_source``, written by
    ``repository._write``) when the repository asks for hot-swapping, else None.
    Messages go to the server's log (stderr)."""
    import sys

    from ..app.hotswap import BankWatcher

    src = params.get("bank_source")
    if not src or params.get("watch_bank", "1") != "1":
        return None
    return BankWatcher(src, seg, report=lambda m: print(f"{model}: {m}", file=sys.stderr,
                                                        flush=True))


class PipelineModel:
    """``moduseg``: one frame through backbone and SAM (beside each other), then the bank."""

    def initialize(self, args):
        cfg, params, seg = _parts(args, remote=True)
        self.outputs = [t["name"] for t in cfg["output"]]
        self.backbone, self.proposer = seg.backbone, seg.proposer
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="proposer")
        from ..runtime.runners import TritonRunner

        self.bank = TritonRunner(BANK, ["features", "geometry", "masks", "scores", "image"],
                                 self.outputs)

    def _one(self, image):
        from ..io import check_image
        from ..runtime.pipeline import run_beside

        check_image(image)
        if min(image.shape[:2]) < 1:
            raise InputError(f"image must be a non-empty H x W x 3 uint8 RGB array, got shape "
                             f"{image.shape}")
        def features():
            fmap = self.backbone(image)
            fmap.check_finite()
            return fmap

        fmap, props = run_beside(self.pool, lambda: self.proposer(image), features)
        geo = fmap.geometry
        geometry = np.array([*geo.image_hw, *geo.resized_hw, *geo.grid_hw, geo.patch], np.int64)
        feed = {"features": fmap.features, "geometry": geometry,
                "masks": np.ascontiguousarray(props.masks, bool),
                "scores": np.ascontiguousarray(props.scores, np.float32), "image": image}
        out = self.bank.run(feed, self.outputs)
        return [out[n] for n in self.outputs]

    def execute(self, requests):
        pb = _pb()
        out = []
        for r in requests:
            try:
                image = pb.get_input_tensor_by_name(r, "image").as_numpy()
                outs = self._one(image)
                out.append(pb.InferenceResponse(
                    [pb.Tensor(n, np.ascontiguousarray(o)) for n, o in zip(self.outputs, outs)]))
            except Exception as e:  # noqa: BLE001 - reported to the caller
                out.append(_error_response(e))
        return out

    def finalize(self):
        self.pool.shutdown(wait=False)


class StreamModel:
    """``moduseg_stream``: frames of many streams, each a Triton sequence with its own state.

    The sequence batcher (``oldest`` strategy) keeps every frame of a sequence on
    one instance and hands ``execute`` up to ``max_batch_size`` requests, each of
    another sequence, with the START / END / CORRID controls. Each instance runs
    the package's ``Segmenter`` (networks served by the network models, the bank
    here) under ``sequences.SequenceTable``: the local streaming path, per stream.
    """

    def initialize(self, args):
        from .sequences import SequenceTable, stream_factory

        cfg, params, seg = _parts(args, remote=True)
        self.outputs = [t["name"] for t in cfg["output"]]
        idle_us = int(cfg.get("sequence_batching", {}).get("max_sequence_idle_microseconds")
                      or 60_000_000)
        self.table = SequenceTable(seg, stream_factory(params.get("stream_path", "per_frame")),
                                   idle_s=idle_us / 1e6 + 5.0)
        # a changed bank file swaps in between batches, as in the bank model; each
        # stream's next frame is then a keyframe on it, its memory carried by class name
        # (``temporal.segmenter.remap_classes``)
        self.watcher = watch_bank(params, seg, model=STREAM)

    def execute(self, requests):
        pb = _pb()
        if self.watcher is not None:
            self.watcher.poll()
        out = []
        for r in requests:
            try:
                get = lambda n: pb.get_input_tensor_by_name(r, n).as_numpy()  # noqa: E731
                image = get("image")
                if image.ndim != 4 or image.shape[0] != 1:
                    raise InputError(f"moduseg_stream takes one frame per request, shaped "
                                     f"[1, H, W, 3] uint8; got {list(image.shape)}")
                corrid = get("CORRID").ravel()[0]
                corrid = corrid.decode() if isinstance(corrid, bytes) else int(corrid)
                res = self.table.step(corrid, bool(get("START").ravel()[0]),
                                      bool(get("END").ravel()[0]), image[0])
                arrays = stream_arrays(res)
                out.append(pb.InferenceResponse(
                    [pb.Tensor(n, np.ascontiguousarray(arrays[n])[None]) for n in self.outputs]))
            except Exception as e:  # noqa: BLE001 - reported to the caller
                out.append(_error_response(e))
        return out


def stream_arrays(result) -> dict[str, np.ndarray]:
    """A streamed frame's outputs: ``result_arrays``, each shown segment's track id
    (-1: none) and whether the frame was a keyframe."""
    props = result.proposals
    masks = props.masks if props is not None else np.zeros((0, 1, 1), bool)
    arrays = result_arrays(result, masks)
    ids = list(getattr(result, "track_ids", None) or [])
    shown = [i for i, s in enumerate(result.segments) if s.label >= 0 and s.painted_pixels > 0]
    arrays["track_id"] = np.array([int(ids[i]) if i < len(ids) and ids[i] is not None else -1
                                   for i in shown], np.int32)
    arrays["keyframe"] = np.array([bool(getattr(result, "keyframe", True))], bool)
    return arrays
