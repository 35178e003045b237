"""Per-stage latency of one frame: decode, preprocessing, backbone, proposer and
the post-backbone stages, median/p90/p99 over N frames after warm-up.

The post-backbone stages always run (synthetic, realistic inputs); decode
and preprocessing use the real clips and CamVid frames when present; the
backbone and proposer run when the default models are installed.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from ..config import RuntimeConfig
from ..runtime.backbones.onnx_backbone import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    plan_geometry,
    preprocess,
)
from ..runtime.pipeline import assign
from .common import default_data_root, progress, try_models
from .gpu import make_timer
from .inputs import DEFAULT_FRAME_HW, make_bank, make_scene
from .memory import MemorySampler
from .stats import summarize, summarize_stages

POST_STAGES = ("filter", "pool", "search", "vote", "nms", "raster", "fill")
FRAME_STAGES = ("decode", "preprocess", "backbone", "proposer") + POST_STAGES


def _timed(fn, n: int, warmup: int) -> list[float]:
    out = []
    for i in range(warmup + n):
        t0 = time.perf_counter()
        fn(i)
        if i >= warmup:
            out.append((time.perf_counter() - t0) * 1e3)
    return out


def time_decode(data_root: Path, n: int, warmup: int) -> tuple[dict, dict, np.ndarray]:
    """Video-frame and image-file decode times, and one frame to preprocess."""
    out, notes = {}, {}
    video = data_root / "video" / "bikes.mp4"
    frame = None
    if video.is_file():
        cap = cv2.VideoCapture(str(video))
        times = []
        for i in range(warmup + n):
            t0 = time.perf_counter()
            ok, bgr = cap.read()
            if not ok:
                cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                ok, bgr = cap.read()
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1e3)
        cap.release()
        out["decode"] = summarize(times)
        notes["decode"] = f"{video.name} ({rgb.shape[1]}x{rgb.shape[0]}), cv2.VideoCapture + " \
                          f"BGR->RGB"
    images = sorted((data_root / "camvid" / "val").glob("*.png"))[: max(1, n)]
    if images:
        def read(i):
            nonlocal frame
            bgr = cv2.imread(str(images[i % len(images)]), cv2.IMREAD_COLOR)
            frame = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        out["decode_image"] = summarize(_timed(read, n, warmup))
        notes["decode_image"] = f"CamVid val PNG ({frame.shape[1]}x{frame.shape[0]})"
    else:
        rng = np.random.default_rng(0)
        H, W = DEFAULT_FRAME_HW
        synth = cv2.GaussianBlur(rng.integers(0, 255, (H, W, 3), dtype=np.uint8), (9, 9), 3)
        buf = cv2.imencode(".jpg", synth)[1]

        def dec(i):
            nonlocal frame
            frame = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        out["decode_image"] = summarize(_timed(dec, n, warmup))
        notes["decode_image"] = "synthetic 480x360 JPEG (no CamVid data found)"
    if "decode" not in out:
        out["decode"] = out["decode_image"]
        notes["decode"] = notes["decode_image"] + " (no video found)"
    return out, notes, frame


def time_preprocess(frame: np.ndarray, n: int, warmup: int, backbone=None) -> dict:
    """The backbone's resize/normalise/pad step alone (no model needed)."""
    if backbone is not None and hasattr(backbone, "prepare"):
        return summarize(_timed(lambda i: backbone.prepare(frame), n, warmup))
    geo = plan_geometry(frame.shape[:2], 14, 360, "pad")
    return summarize(_timed(lambda i: preprocess(frame, geo, IMAGENET_MEAN, IMAGENET_STD), n,
                            warmup))


def split_backbone(backbone, image, timer):
    """Run ``backbone(image)`` with preprocessing timed apart when the backbone exposes it."""
    if all(hasattr(backbone, a) for a in ("runner", "prepare", "input_name", "output_name")) \
            and not getattr(backbone, "views", False) and not hasattr(backbone, "device_features"):
        from ..types import FeatureMap
        with timer("preprocess"):
            x, geo = backbone.prepare(image)
        with timer("backbone"):
            y = backbone.runner.run({backbone.input_name: x},
                                    [backbone.output_name])[backbone.output_name]
        return FeatureMap(np.ascontiguousarray(y[0], dtype=np.float32), geo)
    with timer("backbone"):
        return backbone(image)


def device_index_pooler(bank, cfg, device: str):
    """The index and pooler ``moduseg.build`` builds for ``device`` (cpu or cuda)."""
    from ..config import ModuSegConfig
    from ..build import build_bank_index as assembled_index, build_pooler

    full = ModuSegConfig(runtime=cfg)
    backend = "cuda" if device == "cuda" else "cpu"
    return assembled_index(bank, full, backend), build_pooler(full, backend)


def run_stages(proposals=(25, 50, 100, 200), frames: int = 20, warmup: int = 3,
               bank_size: int = 20_000, dim: int = 384, n_scenes: int = 4, seed: int = 0,
               data_root: Path | None = None, models: str = "auto", home=None,
               model_frames: int = 3, device: str = "cpu", show_progress: bool = True) -> dict:
    """``models``: ``auto`` (use them when installed), ``off``, ``on`` (required)."""
    data_root = Path(data_root) if data_root else default_data_root()
    cfg = RuntimeConfig(index="auto")
    result: dict = {"config": {"proposals": list(proposals), "frames": frames,
                               "warmup": warmup, "bank_size": bank_size, "dim": dim,
                               "scenes": n_scenes, "image_hw": list(DEFAULT_FRAME_HW),
                               "runtime_config": cfg.__dict__, "device": device,
                               "clock": "CUDA events" if device == "cuda"
                               else "time.perf_counter (monotonic)"},
                    "skipped": {}}
    bar = progress(len(proposals) * (warmup + frames) + 2, "stages", show_progress)
    with MemorySampler() as mem:
        front, notes, frame = time_decode(data_root, frames, warmup)
        bar.update(1)
        front["preprocess"] = time_preprocess(frame, frames, warmup)
        notes["preprocess"] = "resize (short side 360) + normalise + pad to 14 px, float32 NCHW"
        bar.update(1)
        bank, centres = make_bank(bank_size, dim, seed=seed)
        index, pooler = device_index_pooler(bank, cfg, device)
        result["config"]["index_kind"] = getattr(index, "kind", type(index).__name__)
        result["config"]["bank_mb"] = round(bank.vectors.nbytes / 2 ** 20, 2)
        post = {}
        for P in proposals:
            scenes = [make_scene(P, bank, centres, padded=True, seed=seed + 10 * s + P)
                      for s in range(n_scenes)]
            per_frame, kept, painted = [], [], []
            for i in range(warmup + frames):
                sc = scenes[i % n_scenes]
                timer = make_timer(device)
                res = assign(sc.fmap, sc.proposals, bank, index, cfg, timer, pooler)
                if i >= warmup:
                    per_frame.append(timer.as_dict())
                    kept.append(len(res.segments))
                    painted.append(sum(s.painted_pixels > 0 for s in res.segments))
                bar.update(1)
            post[str(P)] = {"proposals": P, "stages": summarize_stages(per_frame, POST_STAGES),
                            "kept_median": float(np.median(kept)),
                            "painted_median": float(np.median(painted))}
        result["post_backbone"] = post
        result["frontend"] = front
        result["notes"] = notes
        real = None
        if models == "off":
            result["skipped"]["backbone"] = result["skipped"]["proposer"] = \
                "models=off (the 'all' command takes them from the video suite)"
        else:
            backbone, proposer, why = try_models(home, "cuda" if device == "cuda" else "cpu")
            if backbone is None:
                if models == "on":
                    from ..errors import ModelNotFoundError
                    raise ModelNotFoundError(why)
                result["skipped"]["backbone"] = result["skipped"]["proposer"] = why
            else:
                real = run_model_frames(backbone, proposer, data_root, model_frames, cfg,
                                        device, seed)
                result["models"] = real
    bar.close()
    result["memory"] = mem.as_dict()
    # one frame, stage by stage: decode/preprocess from above, models if run,
    # post-backbone at 100 proposals (or the nearest size measured)
    ref_p = min(proposals, key=lambda p: abs(p - 100))
    frame_stages = {"decode": front["decode"], "preprocess": front["preprocess"]}
    if real:
        frame_stages.update({k: v for k, v in real["stages"].items()
                             if k in ("backbone", "proposer")})
    frame_stages.update({k: v for k, v in post[str(ref_p)]["stages"].items() if k != "total"})
    frame_stages["total"] = {"median": round(sum(v["median"] for k, v in frame_stages.items()
                                                 if v.get("median") is not None), 4),
                             "note": "sum of stage medians"}
    result["frame"] = {"proposals": ref_p, "stages": frame_stages}
    return result


def run_model_frames(backbone, proposer, data_root: Path, n: int, cfg, device: str,
                     seed: int) -> dict:
    """Backbone and proposer on real frames, post stages against a synthetic bank of the
    backbone's dimension (the runtime does not care where the bank came from)."""
    images = sorted((data_root / "camvid" / "val").glob("*.png"))[: n + 1]
    if not images:
        return {"note": "no CamVid frames found", "stages": {}}
    bank, _ = make_bank(20_000, backbone.identity.feature_dim, seed=seed)
    index, pooler = device_index_pooler(bank, cfg, device)
    per_frame, n_props = [], []
    for i, p in enumerate(images):
        timer = make_timer(device)
        with timer("decode"):
            img = cv2.cvtColor(cv2.imread(str(p), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        fmap = split_backbone(backbone, img, timer)
        with timer("proposer"):
            props = proposer(img)
        assign(fmap, props, bank, index, cfg, timer, pooler)
        if i >= 1:                       # first frame is the warm-up
            per_frame.append(timer.as_dict())
            n_props.append(len(props))
    return {"frames": len(per_frame), "proposals_median": float(np.median(n_props)),
            "backbone": repr(backbone), "proposer": getattr(proposer, "name", "?"),
            "stages": summarize_stages(per_frame, FRAME_STAGES)}
