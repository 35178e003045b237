"""``moduseg export triton``: a Triton Inference Server model repository.

Six models (``MODELS``)::

    moduseg        BLS, Python backend: RGB uint8 HxWx3 in; label map and per-segment
                   class, confidence and box out. Calls the networks and the bank.
    moduseg_stream BLS, Python backend, sequence batcher: one frame of a stream (a
                   Triton sequence: correlation id, START / END) in, the same outputs
                   plus ``keyframe``; each stream keeps its own state (serve/sequences.py)
    backbone       DINOv2 patch features, dynamic batching across requests
    sam_encoder    SAM image encoder
    sam_decoder    SAM prompt decoder (prompt batches are data-dependent, hence BLS)
    moduseg_bank   Python backend holding the bank: SMFA, retrieval, vote, NMS, paint

``variant="cpu"``: every model is a Python-backend model running ONNX Runtime
(what runs on a machine without a GPU or without Triton's ONNX Runtime
backend). ``variant="gpu"``: the three networks use ``platform`` =
``onnxruntime_onnx`` (graphs copied in) or ``tensorrt_plan`` (engines from
``moduseg export engine``) on ``KIND_GPU``; the two Python models stay on the CPU.
Tensor names, types and shapes come from the ONNX graphs themselves.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

MODELS = ("moduseg", "backbone", "sam_encoder", "sam_decoder", "moduseg_bank", "moduseg_stream")
PIPELINE, BACKBONE, ENCODER, DECODER, BANK, STREAM = MODELS
PLATFORMS = ("onnxruntime_onnx", "tensorrt_plan")
ENGINE_FILES = {BACKBONE: "backbone.plan", ENCODER: "sam_encoder.plan",
                DECODER: "sam_decoder.plan"}
MANIFEST = "moduseg_repository.json"

_ONNX_TO_TRITON = {1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 6: "TYPE_INT32",
                   7: "TYPE_INT64", 9: "TYPE_BOOL", 10: "TYPE_FP16", 11: "TYPE_FP64"}

# The Python models' own tensors (name, Triton type, dims)
BANK_INPUTS = [("features", "TYPE_FP32", [-1, -1, -1]),      # [D, h, w]
               ("geometry", "TYPE_INT64", [7]),              # image, resized, grid hw; patch
               ("masks", "TYPE_BOOL", [-1, -1, -1]),         # [P, Hm, Wm]
               ("scores", "TYPE_FP32", [-1]),
               ("image", "TYPE_UINT8", [-1, -1, 3])]
RESULT_OUTPUTS = [("label_map", "TYPE_UINT8", [-1, -1]),
                  ("class", "TYPE_INT32", [-1]),
                  ("confidence", "TYPE_FP32", [-1]),
                  ("box", "TYPE_INT32", [-1, 4]),             # x0, y0, x1, y1 (exclusive)
                  # the names the answer's label values index: the bank that answered it
                  # (a hot-swapped bank's classes from its first answer on)
                  ("class_names", "TYPE_STRING", [-1])]
PIPELINE_INPUTS = [("image", "TYPE_UINT8", [-1, -1, 3])]
STREAM_OUTPUTS = RESULT_OUTPUTS + [("track_id", "TYPE_INT32", [-1]),
                                   ("keyframe", "TYPE_BOOL", [1])]
STREAM_IDLE_US = 60_000_000     # a stream silent this long is forgotten
STREAM_MAX_BATCH = 4            # requests of different streams in one execute


@dataclass(frozen=True)
class TritonOptions:
    variant: str = "cpu"                       # cpu | gpu
    platform: str = "onnxruntime_onnx"         # gpu variant only
    max_queue_delay_us: int = 2000
    preferred_batch_sizes: tuple[int, ...] = (4, 8)
    frame_hw: tuple[int, int] = (360, 480)     # gpu variant: the SAM encoder's frame size
    engine_dir: str | None = None              # tensorrt_plan: backbone.plan, sam_encoder.plan...
    python_env: str | None = None              # EXECUTION_ENV_PATH of the Python models
    instances: int = 1                         # of each network and of the bank model
    pipeline_instances: int = 1                # of the BLS model: frames in flight at once
    watch_bank: bool = True                    # hot-swap a changed bank file (bank model)
    stream_instances: int = 2                  # of moduseg_stream: streams computed at once
    stream_path: str = "temporal"              # temporal | per_frame: a stream's state
    settings: tuple[str, ...] = ()             # --set KEY=VALUE over the bank's configuration

    def validate(self) -> "TritonOptions":
        if self.variant not in ("cpu", "gpu"):
            raise InputError(f"--variant must be 'cpu' or 'gpu', got {self.variant!r}")
        if self.platform not in PLATFORMS:
            raise InputError(f"--platform must be one of {', '.join(PLATFORMS)}, got "
                             f"{self.platform!r}")
        if self.max_queue_delay_us < 0:
            raise InputError(f"--max-queue-delay-us must be >= 0, got {self.max_queue_delay_us}")
        if not self.preferred_batch_sizes or min(self.preferred_batch_sizes) < 1:
            raise InputError(f"--preferred-batch-sizes must be positive integers such as 4,8, "
                             f"got {list(self.preferred_batch_sizes)}")
        if self.instances < 1 or self.pipeline_instances < 1 or self.stream_instances < 1:
            raise InputError(f"--instances, --pipeline-instances and --stream-instances must "
                             f"be >= 1, got {self.instances}, {self.pipeline_instances}, "
                             f"{self.stream_instances}")
        from .sequences import stream_factory
        stream_factory(self.stream_path)
        if min(self.frame_hw) < 1:
            raise InputError(f"--frame-size must be WxH with positive sides, got {self.frame_hw}")
        if self.variant == "gpu" and self.platform == "tensorrt_plan":
            if not self.engine_dir:
                raise InputError("--platform tensorrt_plan needs --engine-dir DIR holding "
                                 + ", ".join(ENGINE_FILES.values())
                                 + " (built with 'moduseg export engine')")
            missing = [f for f in ENGINE_FILES.values() if not (Path(self.engine_dir) / f).is_file()]
            if missing:
                raise InputError(f"--engine-dir {self.engine_dir} lacks {', '.join(missing)}; "
                                 f"build them with 'moduseg export engine' from the ONNX graphs "
                                 f"'moduseg export triton --platform onnxruntime_onnx' writes")
        return self

    @property
    def max_batch_size(self) -> int:
        return max(self.preferred_batch_sizes)


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise InputError(f"--preferred-batch-sizes must be positive integers separated by "
                         f"commas such as 4,8, got {text!r}")
    return tuple(sorted(set(sizes)))


def parse_frame_size(text: str) -> tuple[int, int]:
    """``WxH`` -> (H, W)."""
    w, sep, h = str(text).lower().partition("x")
    if not sep or not w.strip().isdigit() or not h.strip().isdigit() or min(int(w), int(h)) < 1:
        raise InputError(f"--frame-size must be WIDTHxHEIGHT such as 480x360, got {text!r}")
    return int(h), int(w)


# -- config.pbtxt text ---------------------------------------------------------------

def _q(s: str) -> str:
    return json.dumps(str(s))


def _tensors(kind: str, specs) -> str:
    rows = [f"  {{ name: {_q(n)} data_type: {t} dims: [ {', '.join(str(d) for d in dims)} ] }}"
            for n, t, dims in specs]
    return f"{kind} [\n" + ",\n".join(rows) + "\n]\n"


def config_text(name: str, specs_in, specs_out, *, backend: str | None = None,
                platform: str | None = None, max_batch_size: int = 0,
                dynamic_batching: tuple[tuple[int, ...], int] | None = None,
                kind: str = "KIND_CPU", count: int = 1,
                parameters: dict[str, str] | None = None,
                sequence_batching: str | None = None) -> str:
    """One ``config.pbtxt`` (protobuf text of Triton's ``ModelConfig``)."""
    out = [f"name: {_q(name)}\n"]
    if backend:
        out.append(f"backend: {_q(backend)}\n")
    if platform:
        out.append(f"platform: {_q(platform)}\n")
    out.append(f"max_batch_size: {int(max_batch_size)}\n")
    out.append(_tensors("input", specs_in))
    out.append(_tensors("output", specs_out))
    if dynamic_batching is not None:
        sizes, delay = dynamic_batching
        out.append("dynamic_batching {\n"
                   f"  preferred_batch_size: [ {', '.join(str(s) for s in sizes)} ]\n"
                   f"  max_queue_delay_microseconds: {int(delay)}\n}}\n")
    if sequence_batching:
        out.append(sequence_batching)
    out.append(f"instance_group [ {{ kind: {kind} count: {int(count)} }} ]\n")
    for k, v in (parameters or {}).items():
        out.append(f"parameters: {{ key: {_q(k)} value: {{ string_value: {_q(v)} }} }}\n")
    return "".join(out)


def sequence_batching_text(idle_us: int = STREAM_IDLE_US, candidates: int = 64) -> str:
    """The sequence batcher of ``moduseg_stream``: the ``oldest`` strategy keeps each
    sequence on one instance and batches requests of different sequences; the
    controls reach the model as the START, END (int32 0/1) and CORRID (uint64) inputs."""
    ctl = [("START", "CONTROL_SEQUENCE_START", "int32_false_true: [ 0, 1 ]"),
           ("END", "CONTROL_SEQUENCE_END", "int32_false_true: [ 0, 1 ]"),
           ("CORRID", "CONTROL_SEQUENCE_CORRID", "data_type: TYPE_UINT64")]
    rows = ",\n".join(f"    {{ name: {_q(n)} control [ {{ kind: {k} {v} }} ] }}"
                      for n, k, v in ctl)
    return ("sequence_batching {\n"
            f"  max_sequence_idle_microseconds: {int(idle_us)}\n"
            f"  oldest {{ max_candidate_sequences: {int(candidates)} "
            f"max_queue_delay_microseconds: 0 }}\n"
            f"  control_input [\n{rows}\n  ]\n}}\n")


def onnx_io(path: str | Path, batched: bool = False):
    """(inputs, outputs) as (name, Triton type, dims) read from an ONNX graph.

    ``batched``: the first axis is Triton's batch axis and left out of ``dims``.
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}

    def spec(v):
        t = v.type.tensor_type
        if t.elem_type not in _ONNX_TO_TRITON:
            raise InputError(f"{path}: tensor {v.name} has ONNX type {t.elem_type}, which "
                             f"the repository writer does not map to a Triton type")
        dims = [d.dim_value if d.dim_value > 0 else -1 for d in t.shape.dim]
        return v.name, _ONNX_TO_TRITON[t.elem_type], dims[1:] if batched else dims

    ins = [spec(v) for v in model.graph.input if v.name not in inits]
    return ins, [spec(v) for v in model.graph.output]


# -- the repository ------------------------------------------------------------------

_MODEL_PY = '''# Written by 'moduseg export triton'. The model is the package's own code:
# moduseg/serve/triton_models.py ({cls}).
import sys

sys.path.insert(0, {src!r})
from moduseg.serve.triton_models import {cls} as TritonPythonModel  # noqa: E402,F401
'''


def _write_python_model(folder: Path, cls: str) -> None:
    src = str(Path(__file__).resolve().parents[2])
    (folder / "1").mkdir(parents=True, exist_ok=True)
    (folder / "1" / "model.py").write_text(_MODEL_PY.format(cls=cls, src=src))


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        dst.unlink()
    except FileNotFoundError:
        pass
    shutil.copyfile(src, dst)


def network_files(seg, opts: TritonOptions) -> dict[str, Path]:
    """The ONNX graph behind each network model, as the in-process pipeline uses it."""
    from ..graphs.sam_encoder import content_input_hw, cropped_encoder_path
    from ..runtime.proposers.sam_model import resized_size

    prop = seg.proposer
    encoder = prop.encoder_file
    if opts.variant == "gpu" and getattr(getattr(prop, "options", None), "encoder_crop", False):
        # an engine takes one input size: the content-sized encoder of the frame size
        encoder = cropped_encoder_path(encoder, content_input_hw(resized_size(opts.frame_hw)),
                                       prop.encoder._cache_dir)
    return {BACKBONE: Path(seg.backbone.path), ENCODER: Path(encoder),
            DECODER: Path(prop.decoder_file)}


def write_repository(bank_path: str | Path, out: str | Path, opts: TritonOptions,
                     home: str | None = None) -> Path:
    """Write the model repository under ``out`` (replaced if it holds one already)."""
    from ..bank.segmenter import segmenter_from_bank
    from ..bank.store import load_bank
    from ..io import sha256_file

    opts.validate()
    bank_path = Path(bank_path)
    load_bank(bank_path)                      # a bad bank stops here, with its own message
    seg = segmenter_from_bank(str(bank_path), home, overrides=opts.settings, backend="cpu")
    seg.proposer.padding_embedding()          # cached on disk: the served pipeline reads it
    files = network_files(seg, opts)
    out = Path(out)
    if out.exists() and not (out / MANIFEST).is_file() and any(out.iterdir()):
        raise InputError(f"--out {out} exists and is not a moduseg model repository; "
                         f"choose an empty or new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent))
    try:
        _write(tmp, bank_path, seg, files, opts, home)
        (tmp / MANIFEST).write_text(json.dumps({
            "bank_sha256": sha256_file(bank_path), "variant": opts.variant,
            "platform": opts.platform if opts.variant == "gpu" else "python",
            "class_names": list(seg.bank.class_names)}, indent=1))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _write(root: Path, bank_path: Path, seg, files: dict[str, Path], opts: TritonOptions,
           home) -> None:
    from ..home import model_home

    common = {"home": str(model_home(home)), "bank": f"{BANK}/1/bank.npz"}
    if opts.python_env:
        common["EXECUTION_ENV_PATH"] = str(opts.python_env)
    if opts.settings:                # every model builds the configuration the same way
        common["settings"] = json.dumps(list(opts.settings))
    batching = (opts.preferred_batch_sizes, opts.max_queue_delay_us)
    for name in (BACKBONE, ENCODER, DECODER):
        batched = name == BACKBONE
        ins, outs = onnx_io(files[name], batched=batched)
        folder = root / name
        folder.mkdir()
        extra = dict(max_batch_size=opts.max_batch_size if batched else 0,
                     dynamic_batching=batching if batched else None, count=opts.instances)
        if opts.variant == "cpu":
            if name == ENCODER:      # the content-sized encoder takes the frame's own size
                ins = [(n, t, [d if i < 2 else -1 for i, d in enumerate(dims)])
                       for n, t, dims in ins]
                outs = [(n, t, [d if i < 2 else -1 for i, d in enumerate(dims)])
                        for n, t, dims in outs]
            text = config_text(name, ins, outs, backend="python", kind="KIND_CPU",
                               parameters=common, **extra)
            _write_python_model(folder, "OnnxStageModel")
        else:
            text = config_text(name, ins, outs, platform=opts.platform, kind="KIND_GPU",
                               **extra)
            if opts.platform == "onnxruntime_onnx":
                _copy(files[name], folder / "1" / "model.onnx")
            else:
                _copy(Path(opts.engine_dir) / ENGINE_FILES[name], folder / "1" / "model.plan")
        (folder / "config.pbtxt").write_text(text)

    folder = root / BANK
    _write_python_model(folder, "BankModel")
    _copy(bank_path, folder / "1" / "bank.npz")
    # hot-swap: the bank model (and every stream instance, which holds its own bank)
    # watches the user's file and swaps a changed bank in between batches
    # (``triton_models.watch_bank``)
    watch = dict(bank_source=str(Path(bank_path).resolve()),
                 watch_bank="1" if opts.watch_bank else "0")
    (folder / "config.pbtxt").write_text(config_text(
        BANK, BANK_INPUTS, RESULT_OUTPUTS, backend="python", count=opts.instances,
        parameters=dict(common, **watch)))

    folder = root / PIPELINE
    _write_python_model(folder, "PipelineModel")
    params = dict(common, class_names=json.dumps(list(seg.bank.class_names)),
                  variant=opts.variant)
    (folder / "config.pbtxt").write_text(config_text(
        PIPELINE, PIPELINE_INPUTS, RESULT_OUTPUTS, backend="python",
        count=opts.pipeline_instances,
        parameters=params))

    folder = root / STREAM
    _write_python_model(folder, "StreamModel")
    (folder / "config.pbtxt").write_text(config_text(
        STREAM, PIPELINE_INPUTS, STREAM_OUTPUTS, backend="python",
        max_batch_size=STREAM_MAX_BATCH, count=opts.stream_instances,
        parameters=dict(params, stream_path=opts.stream_path, **watch),
        sequence_batching=sequence_batching_text()))


def python_env_default() -> str:
    """The environment running this code: it has onnxruntime, faiss and numpy."""
    return sys.prefix
