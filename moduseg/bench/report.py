"""Benchmark results -> JSON (atomic), a markdown report and PNG plots (Agg)."""

from __future__ import annotations

import json
from pathlib import Path

from ..io import write_json
from ..owned import atomic_path

SCHEMA = "moduseg-bench/1"


def _f(v, nd=2) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def _table(head: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(_f(c) for c in r) + " |" for r in rows]
    return out + [""]


def machine_md(m: dict) -> list[str]:
    v = m.get("versions", {})
    lines = ["## Machine", "",
             f"- CPU: {m.get('cpu_model')} ({m.get('cores_logical')} logical cores), "
             f"RAM {m.get('ram_gib')} GiB, load average {m.get('load_average_1_5_15')}",
             f"- GPU: {'yes' if m.get('gpu', {}).get('available') else 'none'}"
             f"{'' if m.get('gpu', {}).get('available') else ' (' + m['gpu']['reason'] + ')'}",
             "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val),
             f"- threads: {m.get('threads')}", ""]
    return lines


def stages_md(s: dict) -> list[str]:
    out = ["## Per-stage latency (one frame)", "",
           f"Post-backbone stages at {s['frame']['proposals']} proposals, "
           f"{s['config']['bank_size']:,} x {s['config']['dim']} bank "
           f"({s['config'].get('index_kind')}), {s['config']['frames']} frames after "
           f"{s['config']['warmup']} warm-up; clock: {s['config']['clock']}.", ""]
    notes = s.get("notes", {})
    rows = [[k, v.get("median"), v.get("p90"), v.get("p99"), v.get("n"),
             notes.get(k, v.get("note", ""))]
            for k, v in s["frame"]["stages"].items()]
    out += _table(["stage", "median ms", "p90 ms", "p99 ms", "n", "note"], rows)
    for k, why in s.get("skipped", {}).items():
        out.append(f"- {k}: skipped: {why}")
    out.append("")
    stages = ["filter", "pool", "search", "vote", "nms", "raster", "fill", "total"]
    out += ["### Post-backbone stages vs number of proposals (median ms)", ""]
    rows = [[p["proposals"], p["kept_median"]] + [p["stages"].get(st, {}).get("median")
                                                  for st in stages]
            for p in s["post_backbone"].values()]
    out += _table(["proposals", "kept"] + stages, rows)
    if s.get("models"):
        m = s["models"]
        out += [f"### With the default models ({m.get('backbone')}, proposer "
                f"{m.get('proposer')}, {m.get('frames')} CamVid frames, "
                f"{m.get('proposals_median')} proposals median)", ""]
        out += _table(["stage", "median ms", "p90 ms", "p99 ms"],
                      [[k, v["median"], v["p90"], v["p99"]] for k, v in m["stages"].items()])
    out += [mem_line(s.get("memory")), ""]
    return out


def mem_line(m: dict | None) -> str:
    if not m:
        return ""
    gpu = f"{m['peak_gpu_mb']} MB" if m.get("peak_gpu_mb") is not None else \
        f"n/a ({m.get('gpu_note')})"
    return (f"Memory: peak RSS {m['peak_rss_mb']} MB during the suite (started at "
            f"{m['start_rss_mb']} MB; process lifetime peak {m['process_peak_rss_mb']} MB); "
            f"peak GPU memory {gpu}.")


def reference_md(r: dict) -> list[str]:
    out = ["## Runtime vs reference (post-backbone stages)", "",
           f"Same inputs, same process, interleaved: {r['config']['bank_size']:,} x "
           f"{r['config']['dim']} bank, {r['config']['image_hw'][1]}x"
           f"{r['config']['image_hw'][0]} frame, grid {r['config']['grid_hw']} patch "
           f"{r['config']['patch']} ({r['config']['geometry']}); "
           f"{r['config']['repeats']} repeats x {r['config']['scenes_per_size']} scenes. "
           f"Identical label maps and per-proposal classes: "
           f"**{'yes' if r['all_identical'] else 'NO'}**.", ""]
    for run in r["runs"].values():
        out.append(f"### {run['proposals']} proposals (kept "
                   f"{run['checks'][0]['kept']}, painted {run['checks'][0]['painted']}); "
                   f"identical: {'yes' if run['identical'] else 'NO'}")
        out.append("")
        rows = []
        for st in list(run["runtime"].keys()):
            rows.append([st, run["runtime"][st]["median"], run["reference"][st]["median"],
                         run["speedup"].get(st)])
        rows.append(["total excluding search", None, None,
                     run["speedup"].get("total_excluding_search")])
        rows.append(["ceiling (search as fast as the reference's)", None, None,
                     run["speedup"].get("ceiling_with_same_search")])
        out += _table(["stage", "runtime median ms", "reference median ms", "speed-up x"],
                      rows)
        goal = r["target_speedup"]
        out.append(f"Goal {goal:.0f}x on the total: "
                   f"{'met' if run['meets_target'] else 'NOT met'} "
                   f"({_f(run['speedup']['total'])}x). Stages below {goal:.0f}x: "
                   f"{', '.join(run['slower_than_target']) or 'none'}.")
        out.append("")
    return out


def scaling_md(sc: dict) -> list[str]:
    k = sc["config"]["k"]
    out = ["## Bank scaling", "",
           f"{sc['config']['queries']} queries, top-{k}, clustered vectors "
           f"({sc['config']['clusters']} clusters); recall against exact flat search.", ""]
    rows = [[r["n"], r["dim"], r["kind"], r["is_auto_choice"], r["search_ms"]["median"],
             r["per_query_ms"], r[f"recall_at_{k}"], r["index_mb"], r["build_s"]]
            for r in sc["rows"]]
    out += _table(["n", "D", "kind", "auto picks it", "search ms (all queries)",
                   "ms/query", f"recall@{k}", "index MB", "build s"], rows)
    if sc.get("gpu_skipped"):
        out += [f"GPU indexes skipped: {sc['gpu_skipped']}", ""]
    out += ["Automatic choice: " + ", ".join(f"{n} -> {kind}" for n, kind in
                                             sc["auto"]["choice"].items()), ""]
    out += ["```", sc["explanation"], "```", ""]
    return out


def video_md(v: dict) -> list[str]:
    out = ["## Real video, end to end", ""]
    if v.get("skipped"):
        return out + [f"Skipped: {v['skipped']}", ""]
    b = v["bank"]
    out += [f"Bank {b['path']} ({b['vectors']} x {b['dim']}, {b['file_mb']} MB, index "
            f"{b['index_kind']}).", ""]
    stages = ["decode", "backbone", "proposer", "pool", "search", "vote", "nms", "raster",
              "write", "total"]
    runs = dict(v.get("videos", {}))
    if v.get("folder"):
        runs["CamVid val folder"] = v["folder"]
    rows = [[name, r["frames"], r["image_hw"], r["fps"]] +
            [r["stages"].get(s, {}).get("median") for s in stages] for name, r in runs.items()]
    out += _table(["input", "frames", "HxW", "fps (overlapped)"] + [f"{s} ms" for s in stages],
                  rows)
    out += [f"Backbone batch throughput: {json.dumps(v.get('batch'))}", "",
            mem_line(v.get("memory")), "",
            "Files on disk (MB): bank " + str(b["file_mb"]) + "; " + ", ".join(
                f"{k} {val}" for k, val in (v.get("model_files_mb") or {}).items()), ""]
    return out


NOISE_NOTE = [
    "## Noise", "",
    "The machine that produced these figures is shared with other jobs, so absolute "
    "times vary between runs. Compare medians and the ratios measured within one run "
    "(the reference and the runtime are interleaved on the same inputs), not absolute "
    "figures across runs; the machine's load average is recorded above.", ""]


def to_markdown(res: dict) -> str:
    lines = ["# moduseg benchmark", "", f"Command: `{res.get('command', '')}`", ""]
    lines += machine_md(res["machine"])
    s = res["suites"]
    if "stages" in s:
        lines += stages_md(s["stages"])
    if "reference" in s:
        lines += reference_md(s["reference"])
    if "scaling" in s:
        lines += scaling_md(s["scaling"])
    if "video" in s:
        lines += video_md(s["video"])
        if s["video"].get("temporal"):
            from .temporal import temporal_md
            lines += temporal_md(s["video"]["temporal"])
    lines += NOISE_NOTE
    return "\n".join(lines)


def plot(res: dict, out_dir: Path) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    s = res["suites"]

    def save(fig, name):
        path = out_dir / name
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
        plt.close(fig)
        made.append(name)

    if "stages" in s:
        st = {k: v for k, v in s["stages"]["frame"]["stages"].items() if k != "total"}
        fig, ax = plt.subplots(figsize=(7, 4))
        names = list(st)
        ax.barh(names, [st[n]["median"] or 0 for n in names],
                xerr=[[0] * len(names), [max(0, (st[n].get("p90") or 0) - (st[n]["median"] or 0))
                                         for n in names]], color="tab:blue")
        ax.invert_yaxis()
        ax.set_xscale("log")               # models take seconds, post stages milliseconds
        ax.set_xlabel("median ms per frame, log scale (error bar to p90)")
        ax.set_title(f"Stage breakdown, {s['stages']['frame']['proposals']} proposals")
        save(fig, "stage_breakdown.png")

        fig, ax = plt.subplots(figsize=(7, 4))
        post = list(s["stages"]["post_backbone"].values())
        ps = [p["proposals"] for p in post]
        bottom = [0.0] * len(ps)
        for stage in ("filter", "pool", "search", "vote", "nms", "raster", "fill"):
            vals = [p["stages"].get(stage, {}).get("median") or 0 for p in post]
            ax.bar([str(p) for p in ps], vals, bottom=bottom, label=stage)
            bottom = [b + v for b, v in zip(bottom, vals)]
        if "reference" in s:
            ref = s["reference"]["runs"]
            xs = [str(p) for p in ps if str(p) in ref]
            ax.plot(xs, [ref[x]["reference"]["total"]["median"] for x in xs], "k--o",
                    label="reference total")
        ax.set_xlabel("proposals")
        ax.set_ylabel("median ms")
        ax.set_title("Post-backbone latency vs proposals (runtime, stacked)")
        ax.legend(fontsize=7)
        save(fig, "latency_vs_proposals.png")

    if "reference" in s:
        fig, ax = plt.subplots(figsize=(7, 4))
        runs = list(s["reference"]["runs"].values())
        stages = [k for k in runs[0]["speedup"]]
        width = 0.8 / max(1, len(runs))
        for i, run in enumerate(runs):
            ax.bar([j + i * width for j in range(len(stages))],
                   [run["speedup"].get(k) or 0 for k in stages], width,
                   label=f"{run['proposals']} proposals")
        ax.axhline(s["reference"]["target_speedup"], color="r", ls="--", label="goal")
        ax.axhline(1.0, color="k", lw=0.5)
        ax.set_yscale("log")
        ax.set_xticks([j + width * (len(runs) - 1) / 2 for j in range(len(stages))])
        ax.set_xticklabels(stages, rotation=30, fontsize=8)
        ax.set_ylabel("speed-up vs reference (x)")
        ax.legend(fontsize=7)
        save(fig, "reference_speedup.png")

    if "scaling" in s:
        sc = s["scaling"]
        k = sc["config"]["k"]
        fig, axes = plt.subplots(1, 3, figsize=(13, 4))
        for dim, ls in zip(sc["config"]["dims"], ("-", "--", ":")):
            for kind in sc["config"]["kinds"]:
                rows = [r for r in sc["rows"] if r["dim"] == dim and r["kind"] == kind]
                if not rows:
                    continue
                n = [r["n"] for r in rows]
                axes[0].plot(n, [r["search_ms"]["median"] for r in rows], ls, marker="o",
                             label=f"{kind} D={dim}")
                axes[1].plot(n, [r[f"recall_at_{k}"] for r in rows], ls, marker="o",
                             label=f"{kind} D={dim}")
                axes[2].plot(n, [r["index_mb"] or 0 for r in rows], ls, marker="o",
                             label=f"{kind} D={dim}")
        for ax, yl in zip(axes, (f"search ms ({sc['config']['queries']} queries)",
                                 f"recall@{k}", "index MB")):
            ax.set_xscale("log")
            ax.set_xlabel("bank vectors")
            ax.set_ylabel(yl)
            for x in (sc["auto"]["FP16_FROM"], sc["auto"]["IVF_FROM"]):
                ax.axvline(x, color="grey", lw=0.7, ls=":")
        axes[0].set_yscale("log")
        axes[2].set_yscale("log")
        axes[0].legend(fontsize=6)
        fig.suptitle("Bank scaling (dotted: auto switches to fp16, then IVF)")
        save(fig, "bank_scaling.png")
    return made


def write_report(res: dict, out_dir: str | Path, plots: bool = True) -> dict:
    """Write ``results.json``, ``results.md`` and the plots; returns their names."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    res.setdefault("schema", SCHEMA)
    names = plot(res, out) if plots else []
    res["plots"] = names
    write_json(out / "results.json", res)
    md = to_markdown(res)
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text(md + "\n" + "\n".join(f"![{n}]({n})" for n in names) + "\n")
    return {"json": str(out / "results.json"), "markdown": str(out / "results.md"),
            "plots": names}
