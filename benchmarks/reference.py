"""Runtime vs the straightforward reference, same inputs, same process.

Every repeat runs both on the same scene (interleaved, so load on a shared
machine hits both alike), checks that the label maps and per-proposal classes
are identical, and reports per-stage medians and their ratio. The reference
(``reference_impl.py``) is test code, so it lives here, not in the package:

    python -m benchmarks reference --threads 1 --repeats 8 --out bench-results
"""

from __future__ import annotations

import shlex
import sys
import time
from datetime import datetime, timezone

import click
import numpy as np

from moduseg.bench.common import progress, ratio
from moduseg.bench.inputs import (
    DEFAULT_FRAME_HW,
    DEFAULT_GRID_HW,
    DEFAULT_PATCH,
    make_bank,
    make_scene,
)
from moduseg.bench.stats import summarize_stages
from moduseg.config import ModuSegConfig, RuntimeConfig
from moduseg.build import build_bank_index as assembled_index
from moduseg.runtime.pipeline import assign
from moduseg.timing import StageTimer

from .reference_impl import ReferenceFlatIndex, reference_assign

STAGES = ("filter", "pool", "search", "vote", "nms", "raster", "fill")
TARGET_SPEEDUP = 10.0


def compare_config(**kw) -> RuntimeConfig:
    return RuntimeConfig(voting="count", unassigned="background", index="flat", **kw)


def check_same(res, ref) -> dict:
    """Label map and per-proposal class agreement between runtime and reference."""
    rt_kept = [s.proposal for s in res.segments]
    rt_labels = [s.label for s in res.segments]
    same_map = bool(np.array_equal(res.label_map, ref.label_map))
    return {"identical_label_map": same_map,
            "mismatched_pixels": int((res.label_map != ref.label_map).sum()),
            "identical_kept": rt_kept == list(ref.kept),
            "identical_classes": rt_kept == list(ref.kept) and rt_labels == list(ref.labels),
            "mismatched_classes": int(sum(a != b for a, b in zip(rt_labels, ref.labels))
                                      + abs(len(rt_labels) - len(ref.labels)))}


def run_reference(proposals=(100, 200), repeats: int = 5, warmup: int = 1,
                  bank_size: int = 20_000, dim: int = 384, n_scenes: int = 2,
                  image_hw=DEFAULT_FRAME_HW, grid_hw=DEFAULT_GRID_HW,
                  patch: int = DEFAULT_PATCH, seed: int = 0, show_progress: bool = True) -> dict:
    cfg = compare_config()
    bank, centres = make_bank(bank_size, dim, seed=seed)
    rt_index = assembled_index(bank, ModuSegConfig(runtime=cfg), "cpu")
    ref_index = ReferenceFlatIndex(bank.vectors)
    runs = {}
    all_same = True
    bar = progress(len(proposals) * n_scenes * (warmup + repeats), "reference", show_progress)
    for P in proposals:
        scenes = [make_scene(P, bank, centres, image_hw, grid_hw, patch, padded=False,
                             seed=seed + 100 * s + P) for s in range(n_scenes)]
        rt_times, ref_times, checks = [], [], []
        for it in range(warmup + repeats):
            for sc in scenes:
                t_rt, t_ref = StageTimer(), StageTimer()
                res = assign(sc.fmap, sc.proposals, bank, rt_index, cfg, t_rt)
                ref = reference_assign(sc.fmap, sc.proposals, bank, ref_index, cfg, t_ref)
                if it >= warmup:
                    rt_times.append(t_rt.as_dict())
                    ref_times.append(t_ref.as_dict())
                if it == 0:
                    checks.append(check_same(res, ref) | {"kept": len(ref.kept),
                                                          "painted": len(ref.painted)})
                bar.update(1)
        rt_s, ref_s = summarize_stages(rt_times, STAGES), summarize_stages(ref_times, STAGES)
        speed = {s: ratio(ref_s[s]["median"], rt_s[s]["median"]) for s in list(STAGES) +
                 ["total"]}
        rt_ns = np.median([sum(v for k, v in d.items() if k != "search") for d in rt_times])
        ref_ns = np.median([sum(v for k, v in d.items() if k != "search") for d in ref_times])
        speed["total_excluding_search"] = ratio(float(ref_ns), float(rt_ns))
        # both searches are exact (the reference: FAISS's flat index; the runtime: its
        # pruned exact index); this is what the total could reach if the runtime's search
        # were only as fast as the reference's
        speed["ceiling_with_same_search"] = ratio(ref_s["total"]["median"],
                                                  ref_s["search"]["median"])
        same = all(c["identical_label_map"] and c["identical_classes"] for c in checks)
        all_same &= same
        runs[str(P)] = {"proposals": P, "runtime": rt_s, "reference": ref_s, "speedup": speed,
                        "identical": same, "checks": checks,
                        "meets_target": (speed["total"] or 0) >= TARGET_SPEEDUP,
                        "slower_than_target": [s for s in STAGES
                                               if (speed[s] or 0) < TARGET_SPEEDUP]}
    bar.close()
    return {"config": {"proposals": list(proposals), "repeats": repeats, "warmup": warmup,
                       "scenes_per_size": n_scenes, "bank_size": bank_size, "dim": dim,
                       "image_hw": list(image_hw), "grid_hw": list(grid_hw), "patch": patch,
                       "geometry": "unpadded (grid covers the image exactly)",
                       "runtime_config": cfg.__dict__, "seed": seed},
            "target_speedup": TARGET_SPEEDUP, "all_identical": bool(all_same), "runs": runs}


PROFILES = {
    "quick": dict(proposals=(20, 40), repeats=1, warmup=0, bank_size=2_000, dim=64, n_scenes=1),
    "default": dict(proposals=(100, 200), repeats=5, warmup=1),
    "full": dict(proposals=(50, 100, 200), repeats=10, warmup=2),
}


def run(profile: str = "default", threads: int | None = None, progress_bar: bool = True,
        **overrides) -> dict:
    """The reference suite as a ``moduseg bench`` result (same schema, one suite)."""
    from moduseg.bench.stats import machine_info, set_threads

    set_threads(threads)
    opts = dict(PROFILES[profile])
    opts.update({k: v for k, v in overrides.items() if v is not None})
    t0 = time.perf_counter()
    suite = run_reference(show_progress=progress_bar, **opts)
    suite.setdefault("options", {k: (list(v) if isinstance(v, tuple) else v)
                                 for k, v in opts.items()})
    return {"schema": "moduseg-bench/1",
            "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(shlex.quote(a) for a in sys.argv),
            "profile": profile, "threads": threads, "machine": machine_info(),
            "suites": {"reference": suite},
            "seconds": {"reference": round(time.perf_counter() - t0, 1)}}


def _ints(text):
    return tuple(int(float(x)) for x in str(text).split(",") if x.strip()) if text else None


@click.command("reference")
@click.option("--out", "out_dir", default="bench-results", show_default=True,
              type=click.Path(), help="Folder for results.json, results.md, *.png.")
@click.option("--profile", type=click.Choice(sorted(PROFILES)), default=None,
              help="Sizes and repeats (default: default).")
@click.option("--quick", is_flag=True, help="Tiny sizes for CI (seconds).")
@click.option("--full", is_flag=True, help="More sizes and repeats.")
@click.option("--threads", type=int, default=None,
              help="Pin BLAS/OpenMP/OpenCV threads (default: libraries' own).")
@click.option("--proposals", default=None, help="Proposal counts, e.g. 100,200.")
@click.option("--repeats", type=int, default=None, help="Repeats per measurement.")
@click.option("--bank-size", type=int, default=None, help="Synthetic bank size.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@click.option("--no-plots", is_flag=True, help="Skip the PNG plots.")
def command(out_dir, profile, quick, full, threads, proposals, repeats, bank_size, no_progress,
            no_plots):
    """Runtime vs the straightforward reference: identical labels, speed-ups per stage."""
    from moduseg.bench.report import write_report

    prof = profile or ("quick" if quick else "full" if full else "default")
    res = run(prof, threads, not no_progress, proposals=_ints(proposals), repeats=repeats,
              bank_size=bank_size)
    paths = write_report(res, out_dir, plots=not no_plots)
    click.echo(f"wrote {paths['json']}, {paths['markdown']} and {len(paths['plots'])} plot(s)")
    for p, r in res["suites"]["reference"]["runs"].items():
        click.echo(f"  reference {p} proposals: identical={r['identical']} speed-up total "
                   f"{r['speedup']['total']}x (excl. search "
                   f"{r['speedup']['total_excluding_search']}x)")
