"""``moduseg segment``: images, folders, videos and cameras."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from ..errors import InputError


def build_segmenter(bank_path, home=None, preset=None, overrides=(), need_proposer=True,
                    backend: str = "auto"):
    """Load a bank, the configuration (preset > bank's > default) and the default models."""
    from ..bank.store import load_bank
    from ..models import load_default_proposer
    from ..settings import resolve_config
    from .pipeline import Segmenter

    bank = load_bank(bank_path)
    cfg = resolve_config(preset, overrides, bank.config)
    backbone = load_backbone(backend, home, cfg)
    proposer = (load_default_proposer(home=home, providers=_ort(backend),
                                      **cfg.proposer_options())
                if need_proposer else _NoProposer())
    return Segmenter(backbone, proposer, bank, cfg, pooler=_pooler(backend))


def _ort(backend: str) -> str:
    return "auto" if backend in ("auto", "tensorrt-native") else backend


def load_backbone(backend: str, home, cfg):
    from ..models import load_default_backbone
    if backend == "tensorrt-native":
        from .backbones.trt_backend import TensorRTBackbone  # needs tensorrt + a GPU
        return TensorRTBackbone.from_options(home=home, **cfg.backbone_options())
    return load_default_backbone(home=home, providers=_ort(backend), **cfg.backbone_options())


def _pooler(backend: str):
    if backend in ("cpu",):
        return None
    from .cuda.smfa_gpu import make_smfa_pooler
    return make_smfa_pooler(prefer="gpu" if backend in ("cuda", "tensorrt", "tensorrt-native")
                            else "auto")


DEFAULT_OUT_ROOT = "moduseg-out"


def default_out_dir(input_spec: str, kind: str) -> Path:
    """``moduseg-out/<input name>`` under the working directory (git-ignored in the repo)."""
    if kind == "camera":
        name = f"camera{input_spec}"
    else:
        p = Path(input_spec)
        name = (p.resolve().name if kind == "folder" else p.stem) or "input"
    return Path(DEFAULT_OUT_ROOT) / name


def resolve_bank(bank_path) -> Path:
    """``--bank`` if given, else the embedded default bank."""
    from ..bank.embedded import default_bank_path
    return Path(bank_path) if bank_path else default_bank_path()


class _NoProposer:
    name = "none"

    def __call__(self, image):
        raise InputError("this segmenter was built without a proposer")


@click.command("segment")
@click.argument("input_spec", metavar="INPUT")
@click.option("--bank", "bank_path", default=None, type=click.Path(),
              help="Bank file (.npz); default: the embedded CamVid street-scene bank.")
@click.option("--out", "out_dir", default=None, type=click.Path(),
              help=f"Output folder; default: {DEFAULT_OUT_ROOT}/<input name> in the working "
                   f"directory.")
@click.option("--preset", default=None, help="Configuration preset (default: the bank's).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a setting, e.g. --set runtime.unassigned=nearest.")
@click.option("--backend", default="auto",
              help="auto, cpu, cuda, tensorrt (ONNX Runtime providers) or tensorrt-native.")
@click.option("--home", default=None, type=click.Path(), help="Model home.")
@click.option("--max-frames", type=int, default=None, help="Stop after N frames.")
@click.option("--no-overlay", is_flag=True, help="Do not write colour overlays.")
@click.option("--offline", is_flag=True,
              help="Never fetch the default models (they are fetched on first use otherwise).")
def segment(input_spec, bank_path, out_dir, preset, overrides, backend, home, max_frames,
            no_overlay, offline):
    """Segment INPUT (an image, a folder, a video file or a camera index)."""
    import cv2
    from tqdm import tqdm

    from ..io import overlay, write_image, write_json, write_label_png
    from ..timing import StageTimer
    from .stream import input_kind, iter_frames, run_overlapped, video_info

    from ..models import ensure_models

    kind = input_kind(input_spec)
    bank_path = resolve_bank(bank_path)
    out = Path(out_dir) if out_dir else default_out_dir(input_spec, kind)
    click.echo(f"writing to {out}", err=True)
    ensure_models(home, offline=offline)
    seg = build_segmenter(bank_path, home, preset, overrides, backend=backend)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    if not no_overlay and kind in ("image", "folder"):
        (out / "overlays").mkdir(exist_ok=True)
    total = None
    writer = None
    video_tmp = out / ".overlay.part.mp4"   # OpenCV picks the container by suffix
    if kind in ("video", "camera"):
        fps, total = video_info(input_spec)
        total = min(total, max_frames) if (max_frames and total) else (total or max_frames)
    timings: dict[str, list[float]] = {}
    records = {}
    bar = tqdm(total=total, desc="segment", unit="frame")

    def infer(frame):
        timer = StageTimer()
        return seg(frame.image, timer)

    def write(frame, res):
        nonlocal writer
        write_label_png(out / "labels" / f"{frame.name}.png", res.label_map)
        records[frame.name] = res.to_json()
        for k, v in res.timings_ms.items():
            timings.setdefault(k, []).append(v)
        if not no_overlay:
            ov = overlay(frame.image, res.label_map)
            if kind in ("video", "camera"):
                if writer is None:
                    h, w = ov.shape[:2]
                    writer = cv2.VideoWriter(str(video_tmp), cv2.VideoWriter_fourcc(*"mp4v"),
                                             fps, (w, h))
                    if not writer.isOpened():
                        raise InputError(f"cannot write the overlay video {video_tmp}; "
                                         f"use --no-overlay or check the output folder")
                writer.write(cv2.cvtColor(ov, cv2.COLOR_RGB2BGR))
            else:
                write_image(out / "overlays" / f"{frame.name}.jpg", ov)
        bar.update(1)

    try:
        n = run_overlapped(iter_frames(input_spec, max_frames), infer, write)
    finally:
        bar.close()
        if writer is not None:
            writer.release()
    if writer is not None:
        video_tmp.replace(out / "overlay.mp4")
    from ..io import voc_palette
    write_json(out / "palette.json", {"class_names": seg.bank.class_names,
                                      "colors": voc_palette(len(seg.bank.class_names)).tolist()})
    summary = {k: float(np.median(v)) for k, v in timings.items()}
    write_json(out / "segments.json", {"config": seg.config.__dict__, "frames": records,
                                       "median_ms": summary})
    click.echo(f"{n} frame(s) -> {out}")
    click.echo("median ms per frame: " + ", ".join(f"{k} {v:.1f}" for k, v in summary.items()))
