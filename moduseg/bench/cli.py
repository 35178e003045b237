"""``moduseg bench stages|reference|scaling|video|all --out DIR``."""

from __future__ import annotations

import click


def _ints(text):
    return tuple(int(float(x)) for x in str(text).replace(" ", "").split(",") if x) \
        if text else None


def common(f):
    opts = [
        click.option("--out", "out_dir", default="bench-results", show_default=True,
                     type=click.Path(), help="Folder for results.json, results.md, *.png."),
        click.option("--profile", type=click.Choice(["quick", "default", "full"]),
                     default=None, help="Sizes and repeats (default: default)."),
        click.option("--quick", is_flag=True, help="Tiny sizes for CI (seconds)."),
        click.option("--full", is_flag=True, help="Every size (1M-vector banks; slow)."),
        click.option("--threads", type=int, default=None,
                     help="Pin BLAS/OpenMP/OpenCV threads (default: libraries' own)."),
        click.option("--no-progress", is_flag=True, help="No progress bars."),
        click.option("--no-plots", is_flag=True, help="Skip the PNG plots."),
        click.option("--proposals", default=None, help="Proposal counts, e.g. 100,200."),
        click.option("--frames", type=int, default=None, help="stages: frames after warm-up."),
        click.option("--repeats", type=int, default=None, help="reference/scaling repeats."),
        click.option("--bank-size", type=int, default=None, help="stages/reference bank size."),
        click.option("--sizes", default=None, help="scaling: bank sizes, e.g. 1000,1e6."),
        click.option("--dims", default=None, help="scaling: dimensions, e.g. 384,1152."),
        click.option("--models", type=click.Choice(["auto", "on", "off"]), default=None,
                     help="stages: time the backbone/proposer (auto: when installed)."),
        click.option("--bank", "bank_path", default=None, type=click.Path(),
                     help="video: bank file (default: build one from CamVid train)."),
        click.option("--max-frames", type=int, default=None, help="video: frames per input."),
        click.option("--home", default=None, type=click.Path(), help="Model home."),
        click.option("--backend", default=None, help="video: cpu, cuda, auto, ..."),
        click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None,
                     help="stages: cuda = GPU index, CUDA SMFA and CUDA-event timing."),
        click.option("--data", "data_root", default=None, type=click.Path(),
                     help="Data root (default: ../shared/data beside the checkout)."),
    ]
    for opt in reversed(opts):          # click lists options in decoration order
        f = opt(f)
    return f


def _run(suites, out_dir, profile, quick, full, threads, no_progress, no_plots, proposals,
         frames, repeats, bank_size, sizes, dims, models, bank_path, max_frames, home, backend,
         data_root, device):
    from .report import write_report
    from .suites import run

    prof = profile or ("quick" if quick else "full" if full else "default")
    ov = {"stages": dict(proposals=_ints(proposals), frames=frames, bank_size=bank_size,
                         models=models, home=home, data_root=data_root, device=device),
          "reference": dict(proposals=_ints(proposals), repeats=repeats,
                            bank_size=bank_size),
          "scaling": dict(sizes=_ints(sizes), dims=_ints(dims), repeats=repeats),
          "video": dict(bank_path=bank_path, max_frames=max_frames, folder_frames=max_frames,
                        home=home, backend=backend, data_root=data_root)}
    res = run(suites, prof, ov, threads, progress=not no_progress)
    paths = write_report(res, out_dir, plots=not no_plots)
    click.echo(f"wrote {paths['json']}, {paths['markdown']} and {len(paths['plots'])} plot(s)")
    for name, secs in res["seconds"].items():
        click.echo(f"  {name}: {secs:.1f} s")
    ref = res["suites"].get("reference")
    if ref:
        for p, r in ref["runs"].items():
            click.echo(f"  reference {p} proposals: identical={r['identical']} speed-up total "
                       f"{r['speedup']['total']}x (excl. search "
                       f"{r['speedup']['total_excluding_search']}x)")
    return res


@click.group("bench")
def bench_command():
    """Benchmarks: per-stage latency, reference comparison, bank scaling, real video."""


def _make(name, doc):
    @bench_command.command(name, help=doc)
    @common
    def cmd(**kw):
        _run([name] if name != "all" else "all", **kw)
    return cmd


_make("stages", "Per-stage latency of one frame (median/p90/p99 after warm-up).")
_make("reference", "Runtime vs the straightforward reference: identical labels, speed-ups.")
_make("scaling", "Bank scaling: latency, recall@25 and memory per index kind and size.")
_make("video", "Real video and an image folder end to end with the default models.")
_make("all", "Every suite (default profile: under 10 minutes on 2 CPU cores).")


def _serve():
    from ..serve.cli import bench_serve
    return bench_serve


bench_command.add_command(_serve(), "serve")
