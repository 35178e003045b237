"""End to end on real footage with the embedded default models.

Frames per second with decode, inference and writing overlapped
(``app.loop.run_overlapped``), per-stage medians, backbone batch
throughput where the graph takes a batch, memory and model sizes.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from ..timing import StageTimer
from .common import default_data_root, progress
from .gpu import make_timer
from .memory import MemorySampler, file_mb, model_files
from .stats import summarize, summarize_stages

VIDEOS = ("bikes.mp4", "vtest.avi")
STAGE_ORDER = ("decode", "backbone", "proposer", "filter", "pool", "search", "vote", "nms",
               "raster", "fill", "refine", "write")


def camvid_bank(backbone, data_root: Path, limit: int, out: Path):
    """Build (or reuse) a CamVid-train bank with ``backbone``; returns (bank, path, seconds)."""
    from ..bank.builder import build_bank
    from ..bank.datasets import open_dataset
    from ..bank.store import load_bank, save_bank
    from ..config import preset
    from ..errors import BankError, InputError

    if out.is_file():
        try:
            return load_bank(out, expect=backbone.identity), out, 0.0
        except (BankError, InputError):
            pass
    cfg = preset("default")
    ds = open_dataset("camvid", data_root / "camvid", "train")
    t0 = time.perf_counter()
    bank = build_bank(ds, backbone, cfg.bank, limit=limit, progress=True,
                      config_record=cfg.to_dict())
    secs = time.perf_counter() - t0
    save_bank(bank, out)
    return bank, out, secs


class _TimedFrames:
    """Wraps a frame iterator and records how long each ``next`` (decode) took."""

    def __init__(self, frames):
        self.frames, self.ms = iter(frames), {}

    def __iter__(self):
        return self

    def __next__(self):
        t0 = time.perf_counter()
        f = next(self.frames)
        self.ms[f.index] = (time.perf_counter() - t0) * 1e3
        return f


def stream_run(seg, spec: str, max_frames: int, out_dir: Path, bar=None,
               warmup: bool = True, device: str = "cpu") -> dict:
    """An optional warm-up frame, then ``max_frames`` frames overlapped; fps and stage
    medians. The warm-up frame is not counted (nor is it skipped in the stream)."""
    from ..app.loop import run_overlapped
    from ..app.sources import iter_frames
    from ..io import write_label_png

    first = next(iter_frames(spec, 1))
    if warmup:
        seg(first.image, StageTimer())                  # allocations, caches, lazy init
    frames = _TimedFrames(iter_frames(spec, max_frames))
    per_frame: dict[int, dict] = {}
    n_props = []

    def infer(frame):
        timer = make_timer(device)
        res = seg(frame.image, timer)
        return res, timer

    def write(frame, out):
        res, timer = out
        t0 = time.perf_counter()
        write_label_png(out_dir / f"{frame.name}.png", res.label_map)
        d = timer.as_dict()
        d["write"] = (time.perf_counter() - t0) * 1e3
        per_frame[frame.index] = d
        n_props.append(len(res.segments))
        if bar is not None:
            bar.update(1)

    t0 = time.perf_counter()
    n = run_overlapped(frames, infer, write)
    wall = time.perf_counter() - t0
    for i, d in per_frame.items():
        d["decode"] = frames.ms.get(i, 0.0)
    stages = summarize_stages(list(per_frame.values()), STAGE_ORDER)
    stages["total"]["note"] = ("wall time of inference per frame (backbone and proposer run "
                               "side by side; decode and write overlap inference)")
    return {"frames": n, "wall_s": round(wall, 3), "fps": round(n / wall, 4) if wall else None,
            "image_hw": list(first.image.shape[:2]), "proposals_kept_median":
            float(np.median(n_props)) if n_props else None, "stages": stages}


def batch_throughput(backbone, image: np.ndarray, sizes=(1, 2, 4), repeats: int = 2) -> dict:
    """Backbone images/s per batch size, when the graph's batch axis is dynamic."""
    sess = getattr(backbone, "session", None)
    if sess is None:
        return {"skipped": "backbone is not an ONNX Runtime session"}
    b0 = sess.get_inputs()[0].shape[0]
    if isinstance(b0, int):
        return {"skipped": f"the backbone graph has a fixed batch of {b0}; export it with a "
                           f"dynamic batch axis to batch frames"}
    x1, _ = backbone.prepare(image)
    out = {}
    for b in sizes:
        x = np.repeat(x1, b, axis=0)
        times = []
        for r in range(repeats + 1):
            t0 = time.perf_counter()
            sess.run([backbone.output_name], {backbone.input_name: x})
            if r:
                times.append((time.perf_counter() - t0) * 1e3)
        med = float(np.median(times))
        out[str(b)] = {"batch_ms": summarize(times), "images_per_s": round(b * 1e3 / med, 3)}
    return out


def run_video(bank_path=None, videos=VIDEOS, max_frames: int = 2, folder_frames: int = 2,
              home=None, backend: str = "cpu", data_root: Path | None = None,
              build_limit: int = 40, bank_out: Path | None = None, batch_sizes=(1, 2),
              preset_name: str | None = None, overrides=(),
              show_progress: bool = True, temporal: str | None = "compare",
              temporal_frames: int = 60, clips: bool | None = True,
              clip_dir: Path | None = None) -> dict:
    from ..bank.store import load_bank
    from ..settings import resolve_config
    from .common import try_models

    data_root = Path(data_root) if data_root else default_data_root()
    result: dict = {"config": {"videos": list(videos), "max_frames": max_frames,
                               "folder_frames": folder_frames, "backend": backend,
                               "overlapped": "decode thread -> queue(4) -> infer -> "
                                             "queue(4) -> writer thread"}}
    present = [v for v in videos if (data_root / "video" / v).is_file()]
    if not present:
        result["skipped"] = f"no videos found under {data_root / 'video'}"
        return result
    from ..build import assemble, resolve_backend

    be = resolve_backend(backend or "auto")
    # the models of the configuration the run uses: the bank's (with --preset / --set)
    stored = load_bank(bank_path) if bank_path else None
    cfg = resolve_config(preset_name, overrides, stored.config if stored else None)
    backbone, proposer, why = try_models(home, be, cfg.needs_proposer, cfg=cfg)
    if backbone is None:
        result["skipped"] = why
        return result
    with MemorySampler() as mem:
        if stored is not None:
            bank, bpath, build_s = stored, Path(bank_path), 0.0
        else:
            bank_out = Path(bank_out or Path(tempfile.gettempdir()) /
                            f"moduseg-bench-camvid{build_limit}.npz")
            bank, bpath, build_s = camvid_bank(backbone, data_root, build_limit, bank_out)
        seg = assemble(cfg, bank, be, home, backbone=backbone, proposer=proposer)
        result["bank"] = {"path": str(bpath), "vectors": len(bank), "dim": bank.dim,
                          "file_mb": file_mb(bpath), "build_s": round(build_s, 1),
                          "index_kind": seg.index.kind}
        result["config"]["runtime_config"] = seg.config.__dict__
        result["config"]["configuration"] = seg.full_config.to_dict()
        device = "cuda" if be.gpu else "cpu"
        result["config"]["clock"] = "CUDA events" if device == "cuda" else "time.perf_counter"
        folder = data_root / "camvid" / "val"
        total = len(present) * max_frames + (folder_frames if folder.is_dir() else 0)
        bar = progress(total, "video", show_progress)
        with tempfile.TemporaryDirectory(prefix="moduseg-bench-") as tmp:
            runs = {}
            for i, v in enumerate(present):
                out = Path(tmp) / Path(v).stem
                out.mkdir()
                runs[v] = stream_run(seg, str(data_root / "video" / v), max_frames, out, bar,
                                     warmup=i == 0, device=device)
            result["videos"] = runs
            if folder.is_dir():
                out = Path(tmp) / "folder"
                out.mkdir()
                result["folder"] = stream_run(seg, str(folder), folder_frames, out, bar,
                                              warmup=False, device=device)
                result["folder"]["path"] = str(folder)
        bar.close()
        from ..io import read_image
        img = read_image(min(folder.glob("*.png"))) if folder.is_dir() else \
            np.zeros((360, 480, 3), np.uint8)
        result["batch"] = batch_throughput(backbone, img, batch_sizes)
        if (temporal or "compare") == "compare":
            from .temporal import run_temporal
            result["temporal"] = run_temporal(
                lambda b: assemble(cfg, b, be, home, backbone=backbone, proposer=proposer),
                seg, {v: data_root / "video" / v for v in present}, data_root,
                temporal_frames, clips=clips is not False and (data_root / "camvid").is_dir(),
                clip_dir=clip_dir, show_progress=show_progress)
    result["memory"] = mem.as_dict()
    result["model_files_mb"] = model_files(home)
    return result
