"""What does not computing on the zero padding buy the SAM proposer?

Runs the proposer on CamVid val frames (480x360) and on frames of
``bikes.mp4`` (640x272) with four settings, interleaved frame by frame so
load from other jobs hits all of them alike:

* ``full``: 1024x1024 encoder input, decoder over all 64x64 embedding cells
  (SAM as exported);
* ``decoder_content``: decoder over the content cells only
  (``padding_pool=0``);
* ``content``: also the encoder rewritten for the content size
  (``encoder_crop``);
* ``pooled_padding`` (the default): content-sized encoder, decoder over the
  content cells plus the padding cells of an all-padding input pooled in
  4x4 blocks with their count as attention weight (``padding_pool=4``).

Reports medians over frames (best of ``--repeat`` runs per frame) of the
encoder, decoder (and per prompt) and total ms, wall and process CPU, the
number of proposals, and the mask agreement with ``full``: for each of its
proposals the best IoU with the variant's proposals (and the reverse), and
per prompt: the mean IoU of the three multimask outputs for the same 4x6
grid of prompts (no filtering in between).

    python -m benchmarks sam-content-crop --frames 10 --video-frames 5
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import cv2
import numpy as np

from .proposer_oracle import DATA, CpuWallTimer

VIDEO = DATA.parent / "video" / "bikes.mp4"
SETTINGS = {"full": {"padding_pool": 1, "encoder_crop": False},
            "decoder_content": {"padding_pool": 0, "encoder_crop": False},
            "content": {"padding_pool": 0, "encoder_crop": True},
            "pooled_padding": {"padding_pool": 4, "encoder_crop": True}}


def best_match_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For each mask of ``a`` ``[K, H, W]`` the best IoU with any mask of ``b``."""
    if len(a) == 0:
        return np.zeros(0)
    if len(b) == 0:
        return np.zeros(len(a))
    fa = a.reshape(len(a), -1).astype(np.float32)
    fb = b.reshape(len(b), -1).astype(np.float32)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return (inter / np.maximum(union, 1)).max(1)


def per_prompt_iou(gens: dict, img: np.ndarray, rows: int = 4, cols: int = 6) -> dict:
    """Mean IoU of each setting's multimask outputs with ``full``'s for the same prompts."""
    from moduseg.runtime.proposers.mask_ops import point_grid

    h, w = img.shape[:2]
    pts = point_grid(rows, cols) * np.array([w, h], np.float32)
    masks = {}
    for k, g in gens.items():
        g.set_image(img)
        masks[k] = g.predict(pts).logits > 0
    ref = masks["full"]
    out = {}
    for k, m in masks.items():
        inter, union = (m & ref).sum((2, 3)), (m | ref).sum((2, 3))
        out[k] = float(np.where(union > 0, inter / np.maximum(union, 1), 1.0).mean())
    return out


def video_frames_of(path: Path, n: int, step: int = 15) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    out, i = [], 0
    while len(out) < n:
        ok, f = cap.read()
        if not ok:
            break
        if i % step == 0:
            out.append(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))
        i += 1
    cap.release()
    return out


def measure(gens: dict, frames: list[np.ndarray], repeat: int) -> dict:
    rows = {k: {"encoder": [], "decoder": [], "dec_per_prompt": [], "total": [],
                "encoder_cpu": [], "decoder_cpu": [], "total_cpu": [], "masks": [],
                "iou_ref_to_var": [], "iou_var_to_ref": [], "iou_per_prompt": []}
            for k in gens}
    for img in frames:
        props = {}
        for _ in range(repeat):
            for k, g in gens.items():       # interleaved: a load burst hits every setting
                t0, c0 = time.perf_counter(), time.process_time()
                p = g(img)
                tot, cpu = (time.perf_counter() - t0) * 1e3, (time.process_time() - c0) * 1e3
                t = g.last_stats["timings_ms"]
                best = props.get(k)
                if best is None or tot < best[1]["total"]:
                    props[k] = (p, dict(t, total=tot, total_cpu=cpu,
                                        prompts=g.last_stats["prompts"]))
        ref = props["full"][0].masks
        pp = per_prompt_iou(gens, img)
        for k, (p, t) in props.items():
            r = rows[k]
            for s in ("encoder", "decoder", "total", "encoder_cpu", "decoder_cpu", "total_cpu"):
                r[s].append(t[s])
            r["dec_per_prompt"].append(t["decoder"] / max(t["prompts"], 1))
            r["masks"].append(len(p))
            r["iou_ref_to_var"] += best_match_iou(ref, p.masks).tolist()
            r["iou_var_to_ref"] += best_match_iou(p.masks, ref).tolist()
            r["iou_per_prompt"].append(pp[k])
    return {k: {s: float(np.median(v)) if not s.startswith("iou") and s != "masks"
                else float(np.mean(v)) for s, v in r.items()} for k, r in rows.items()}


@click.command("sam-content-crop")
@click.option("--frames", type=int, default=10, show_default=True, help="CamVid val frames.")
@click.option("--stride", type=int, default=5, show_default=True, help="Every n-th val frame.")
@click.option("--video-frames", type=int, default=5, show_default=True, help="bikes.mp4 frames.")
@click.option("--repeat", type=int, default=2, show_default=True)
@click.option("--threads", type=int, default=2, show_default=True)
@click.option("--cache", "cache_dir", default=None, help="Derived-model cache folder.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Also write the results as JSON here.")
def command(frames, stride, video_frames, repeat, threads, cache_dir, out):
    """SAM encoder/decoder time and mask agreement with and without the content-size crop."""
    from moduseg.build import load_default_proposer

    gens = {}
    for k, kw in SETTINGS.items():
        gens[k] = load_default_proposer(threads=threads, cache_dir=cache_dir, **kw)
        gens[k].timer_cls = CpuWallTimer
    camvid = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in
              sorted((DATA / "val").glob("*.png"))[::stride][:frames]]
    sets = {"camvid 480x360": camvid, "bikes 640x272": video_frames_of(VIDEO, video_frames)}
    for g in gens.values():                     # warm-up: builds the content-sized encoders
        for fr in sets.values():
            if fr:
                g(fr[0])
    results = {}
    click.echo("| frames | setting | encoder ms | decoder ms | decoder ms/prompt | total ms | "
               "CPU ms enc/dec/total | proposals | IoU full->var | IoU var->full | IoU per prompt |")
    click.echo("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, frs in sets.items():
        if not frs:
            continue
        res = measure(gens, frs, repeat)
        results[name] = res
        for k, r in res.items():
            click.echo(f"| {name} ({len(frs)}) | {k} | {r['encoder']:.0f} | {r['decoder']:.0f} | "
                       f"{r['dec_per_prompt']:.1f} | {r['total']:.0f} | "
                       f"{r['encoder_cpu']:.0f}/{r['decoder_cpu']:.0f}/{r['total_cpu']:.0f} | "
                       f"{r['masks']:.1f} | {r['iou_ref_to_var']:.3f} | {r['iou_var_to_ref']:.3f} | "
                       f"{r['iou_per_prompt']:.3f} |")
    if out:
        out.write_text(json.dumps(results, indent=1))
