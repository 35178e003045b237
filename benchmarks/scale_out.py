"""Single process vs the Ray Data engine: whole-command wall times on CamVid frames.

Runs ``moduseg bank build`` and ``moduseg segment`` (each as its own process,
as a user would) with ``--engine local`` and ``--engine ray --workers W``,
checks that the bank files and label maps are identical, and prints a table:
images per second and, for Ray, the extra wall time per image over the single
process (Ray start, actor start-up, data transfer, the actors sharing the
cores). Model loading is inside every timing.

    python -m benchmarks scale-out --camvid ../shared/data/camvid --frames 40 \
        --segment-frames 40 --out scale-out
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import click


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


@click.command("scale-out")
@click.option("--camvid", required=True, type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="CamVid root (train.txt, val/).")
@click.option("--frames", type=int, default=40, show_default=True, help="Train frames for bank build.")
@click.option("--segment-frames", type=int, default=40, show_default=True, help="Val frames for segment.")
@click.option("--workers", type=int, default=2, show_default=True)
@click.option("--preset", "preset_name", default="paper", show_default=True)
@click.option("--out", required=True, type=click.Path(path_type=Path))
def command(camvid, frames, segment_frames, workers, preset_name, out):
    """Single process vs the Ray Data engine: whole-command wall times on CamVid frames."""
    out.mkdir(parents=True, exist_ok=True)
    folder = out / "frames"
    folder.mkdir(exist_ok=True)
    for p in sorted((camvid / "val").glob("*.png"))[::2][:segment_frames]:
        if not (folder / p.name).exists():
            (folder / p.name).symlink_to(p.resolve())
    n = len(list(folder.iterdir()))
    moduseg = [sys.executable, "-m", "moduseg.cli"]
    rows, t = [], {}
    for engine in ("local", "ray"):
        extra = ["--engine", engine] + (["--workers", str(workers)] if engine == "ray" else [])
        t["bank", engine] = timed(moduseg + [
            "bank", "build", "--dataset", "camvid", "--root", str(camvid), "--limit",
            str(frames), "--preset", preset_name, "--out", str(out / f"bank-{engine}.npz"),
            *extra])
        t["segment", engine] = timed(moduseg + [
            "segment", str(folder), "--bank", str(out / "bank-local.npz"), "--preset",
            preset_name, "--no-overlay", "--out", str(out / f"seg-{engine}"), *extra])
    same_bank = (out / "bank-local.npz").read_bytes() == (out / "bank-ray.npz").read_bytes()
    labels = sorted((out / "seg-local" / "labels").iterdir())
    same_labels = all(p.read_bytes() == (out / "seg-ray" / "labels" / p.name).read_bytes()
                      for p in labels)
    for task in ("bank", "segment"):
        count = frames if task == "bank" else n
        loc, ray = t[task, "local"], t[task, "ray"]
        rows.append({"task": task, "images": count, "local_s": round(loc, 1),
                     "ray_s": round(ray, 1), "local_img_per_s": round(count / loc, 3),
                     "ray_img_per_s": round(count / ray, 3),
                     "ray_overhead_s_per_img": round((ray - loc) / count, 3)})
    result = {"workers": workers, "command": " ".join(sys.argv), "preset": preset_name,
              "cores": len(os.sched_getaffinity(0)), "load_average": os.getloadavg(),
              "identical_bank": same_bank, "identical_label_maps": same_labels, "rows": rows}
    (out / "results.json").write_text(json.dumps(result, indent=2))
    click.echo(f"| task | images | single process: s, img/s | Ray, {workers} actors: s, img/s "
               f"| Ray overhead per image |")
    click.echo("|---|---|---|---|---|")
    for r in rows:
        click.echo(f"| {r['task']} | {r['images']} | {r['local_s']} s, {r['local_img_per_s']} "
                   f"| {r['ray_s']} s, {r['ray_img_per_s']} | {r['ray_overhead_s_per_img']:+} s |")
    click.echo(f"identical bank: {same_bank}; identical label maps: {same_labels}; "
               f"load average {result['load_average']}")
    if not (same_bank and same_labels):
        raise SystemExit(1)
