"""``moduseg segment``: images, folders, videos and cameras."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from ..errors import InputError
from ..scale.options import engine_options


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


class _NoProposer:
    name = "none"

    def __call__(self, image):
        raise InputError("this segmenter was built without a proposer")


@click.command("segment")
@click.argument("input_spec", metavar="INPUT")
@click.option("--bank", "bank_path", required=True, type=click.Path(), help="Bank file (.npz).")
@click.option("--out", "out_dir", required=True, type=click.Path(), help="Output folder.")
@click.option("--preset", default=None, help="Configuration preset (default: the bank's).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a setting, e.g. --set runtime.unassigned=nearest.")
@click.option("--backend", default="auto",
              help="auto, cpu, cuda, tensorrt (ONNX Runtime providers) or tensorrt-native.")
@click.option("--home", default=None, type=click.Path(), help="Model home.")
@click.option("--max-frames", type=int, default=None, help="Stop after N frames.")
@click.option("--no-overlay", is_flag=True, help="Do not write colour overlays.")
@engine_options
def segment(input_spec, bank_path, out_dir, preset, overrides, backend, home, max_frames,
            no_overlay, **engine):
    """Segment INPUT (an image, a folder, a video file or a camera index).

    A folder's images can be split over jobs (--shard i/N) or a Ray actor pool
    (--engine ray); frames that fail are listed in OUT/errors.json.
    """
    import cv2
    from tqdm import tqdm

    from ..io import overlay, write_image, write_json, write_label_png
    from ..scale import options
    from ..scale.work import FrameError, ModelSpec, segment_image
    from .stream import image_paths, input_kind, iter_frames, run_overlapped, video_info

    kind = input_kind(input_spec)
    shard, ray_options = options.parse(**engine)
    spec = ModelSpec(backend, home, preset, tuple(overrides), bank_path)
    if shard is not None or ray_options is not None:
        work = image_paths(input_spec, max_frames, shard)    # refuses videos and cameras
        seg = _outputs_only(spec)
        if seg.config.reuse_proposals_below > 0:
            raise InputError("runtime.reuse_proposals_below > 0 makes a frame depend on the one "
                             "before it, so the frames cannot be split over workers; drop "
                             "that --set or run without --shard/--engine ray")
    if ray_options is None:
        from ..scale.work import assemble
        seg = assemble(spec, "segmenter")
    out = Path(out_dir)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    if not no_overlay and kind in ("image", "folder"):
        (out / "overlays").mkdir(exist_ok=True)
    total = None
    writer = None
    video_tmp = out / ".overlay.part.mp4"   # OpenCV picks the container by suffix
    if kind in ("video", "camera"):
        fps, total = video_info(input_spec)
        total = min(total, max_frames) if (max_frames and total) else (total or max_frames)
    if ray_options is not None:
        total = len(work)
    timings: dict[str, list[float]] = {}
    records = {}
    errors = []
    bar = tqdm(total=total, desc="segment", unit="frame")

    def infer(frame):
        if frame.error is not None:
            return FrameError(frame.error)
        return segment_image(seg, frame.image)

    def write(frame, res):
        nonlocal writer
        if isinstance(res, FrameError):
            errors.append({"frame": frame.name, "error": res.message})
            bar.update(1)
            return
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
        if ray_options is None:
            n = run_overlapped(iter_frames(input_spec, max_frames, shard), infer, write)
        else:
            n = _run_ray(spec, work, ray_options, write, need_image=not no_overlay)
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
    write_json(out / "errors.json", {"failed": errors})
    click.echo(f"{n} frame(s) -> {out}")
    if errors:
        click.echo(f"{len(errors)} frame(s) failed (listed in {out / 'errors.json'}):", err=True)
        for e in errors[:20]:
            click.echo(f"  {e['frame']}: {e['error']}", err=True)
    click.echo("median ms per frame: " + ", ".join(f"{k} {v:.1f}" for k, v in summary.items()))


def _outputs_only(spec):
    """What segment's outputs need from the segmenter (bank, runtime config), without models."""
    from types import SimpleNamespace

    from ..bank.store import load_bank
    from ..settings import resolve_config
    bank = load_bank(spec.bank_path)
    cfg = resolve_config(spec.preset, spec.overrides, bank.config)
    cfg.runtime.validate()
    return SimpleNamespace(bank=bank, config=cfg.runtime)


def _run_ray(spec, work, ray_options, write, need_image: bool) -> int:
    """Segment ``work`` [(position, path)] on a Ray actor pool; write results in order."""
    from functools import partial

    from ..io import read_image
    from ..scale import ray_engine
    from ..scale.work import FrameError, SegmentTask, assemble
    from .stream import Frame

    task = SegmentTask(partial(assemble, spec, "segmenter"))
    n = 0
    for k, res in ray_engine.run(task, [str(p) for _, p in work], ray_options):
        index, path = work[k]
        image = read_image(path) if need_image and not isinstance(res, FrameError) else None
        write(Frame(index, path.stem, image), res)
        n += 1
    return n
