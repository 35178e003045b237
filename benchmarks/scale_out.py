"""Single process vs the Ray Data engine: whole-command wall times on CamVid frames.

Runs ``moduseg bank build`` and ``moduseg segment`` (each as its own process,
as a user would) with ``--engine local`` and ``--engine ray --workers W``,
checks that the bank files and label maps are identical, and prints a table:
images per second and, for Ray, the extra wall time per image over the single
process (Ray start, actor start-up, data transfer, the actors sharing the
cores). Model loading is inside every timing.

    python benchmarks/scale_out.py --camvid ../shared/data/camvid --frames 40 \
        --segment-frames 40 --out scale-out
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--camvid", required=True, type=Path, help="CamVid root (train.txt, val/).")
    ap.add_argument("--frames", type=int, default=40, help="Train frames for bank build.")
    ap.add_argument("--segment-frames", type=int, default=40, help="Val frames for segment.")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--out", required=True, type=Path)
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    frames = a.out / "frames"
    frames.mkdir(exist_ok=True)
    for p in sorted((a.camvid / "val").glob("*.png"))[::2][:a.segment_frames]:
        if not (frames / p.name).exists():
            (frames / p.name).symlink_to(p.resolve())
    n = len(list(frames.iterdir()))
    moduseg = [sys.executable, "-m", "moduseg.cli"]
    rows, t = [], {}
    for engine in ("local", "ray"):
        extra = ["--engine", engine] + (["--workers", str(a.workers)] if engine == "ray" else [])
        t["bank", engine] = timed(moduseg + [
            "bank", "build", "--dataset", "camvid", "--root", str(a.camvid), "--limit",
            str(a.frames), "--preset", a.preset, "--out", str(a.out / f"bank-{engine}.npz"),
            *extra])
        t["segment", engine] = timed(moduseg + [
            "segment", str(frames), "--bank", str(a.out / "bank-local.npz"), "--preset",
            a.preset, "--no-overlay", "--out", str(a.out / f"seg-{engine}"), *extra])
    same_bank = ((a.out / "bank-local.npz").read_bytes()
                 == (a.out / "bank-ray.npz").read_bytes())
    labels = sorted((a.out / "seg-local" / "labels").iterdir())
    same_labels = all(p.read_bytes() == (a.out / "seg-ray" / "labels" / p.name).read_bytes()
                      for p in labels)
    for task in ("bank", "segment"):
        count = a.frames if task == "bank" else n
        loc, ray = t[task, "local"], t[task, "ray"]
        rows.append({"task": task, "images": count, "local_s": round(loc, 1),
                     "ray_s": round(ray, 1), "local_img_per_s": round(count / loc, 3),
                     "ray_img_per_s": round(count / ray, 3),
                     "ray_overhead_s_per_img": round((ray - loc) / count, 3)})
    result = {"workers": a.workers, "command": " ".join(sys.argv), "preset": a.preset, "cores": len(os.sched_getaffinity(0)),
              "load_average": os.getloadavg(), "identical_bank": same_bank,
              "identical_label_maps": same_labels, "rows": rows}
    (a.out / "results.json").write_text(json.dumps(result, indent=2))
    print(f"| task | images | single process: s, img/s | Ray, {a.workers} actors: s, img/s "
          f"| Ray overhead per image |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['task']} | {r['images']} | {r['local_s']} s, {r['local_img_per_s']} "
              f"| {r['ray_s']} s, {r['ray_img_per_s']} | {r['ray_overhead_s_per_img']:+} s |")
    print(f"identical bank: {same_bank}; identical label maps: {same_labels}; "
          f"load average {result['load_average']}")
    return 0 if same_bank and same_labels else 1


if __name__ == "__main__":
    sys.exit(main())
