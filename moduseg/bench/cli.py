"""``moduseg bench stages|scaling|video|all --out DIR`` (the runtime-vs-reference
comparison is ``python -m benchmarks reference`` in the repository)."""

from __future__ import annotations

import click


def _ints(text):
    return tuple(int(float(x)) for x in str(text).replace(" ", "").split(",") if x) \
        if text else None


ALL = None  # an option every suite takes

# (suites that use the option, the option); each suite's --help lists only its own
OPTIONS = [
    (ALL, click.option("--out", "out_dir", default="bench-results", show_default=True,
                       type=click.Path(), help="Folder for results.json, results.md, *.png.")),
    (ALL, click.option("--profile", type=click.Choice(["quick", "default", "full"]),
                       default=None, help="Sizes and repeats (default: default).")),
    (ALL, click.option("--quick", is_flag=True, help="Tiny sizes for CI (seconds).")),
    (ALL, click.option("--full", is_flag=True, help="Every size (1M-vector banks; slow).")),
    (ALL, click.option("--threads", type=int, default=None,
                       help="Pin BLAS/OpenMP/OpenCV threads (default: libraries' own).")),
    (ALL, click.option("--no-progress", is_flag=True, help="No progress bars.")),
    (ALL, click.option("--no-plots", is_flag=True, help="Skip the PNG plots.")),
    (("stages",),
     click.option("--proposals", default=None, help="Proposal counts, e.g. 100,200.")),
    (("stages",), click.option("--frames", type=int, default=None,
                               help="Frames timed after warm-up.")),
    (("scaling",), click.option("--repeats", type=int, default=None,
                                            help="Repeats per measurement.")),
    (("stages",), click.option("--bank-size", type=int, default=None,
                                           help="Synthetic bank size.")),
    (("scaling",), click.option("--sizes", default=None, help="Bank sizes, e.g. 1000,1e6.")),
    (("scaling",), click.option("--dims", default=None, help="Dimensions, e.g. 384,1152.")),
    (("stages",), click.option("--models", type=click.Choice(["auto", "on", "off"]),
                               default=None,
                               help="Time the backbone/proposer (auto: when installed).")),
    (("video",), click.option("--bank", "bank_path", default=None, type=click.Path(),
                              help="Bank file (default: build one from CamVid train).")),
    (("video",), click.option("--max-frames", type=int, default=None,
                              help="Frames per input.")),
    (("video",), click.option("--preset", "preset_name", default=None,
                              help="Configuration preset (default: the bank's).")),
    (("video",), click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                              help="Override a setting, e.g. --set temporal.max_interval=6.")),
    (("video",), click.option("--temporal", type=click.Choice(["compare", "off"]),
                              default=None,
                              help="compare (default): the temporal path on vs off, "
                                   "alternated, on the videos and moving-camera CamVid clips "
                                   "(cost, temporal consistency, clip mIoU); off: skip it.")),
    (("video",), click.option("--temporal-frames", type=int, default=None,
                              help="Frames per video in the temporal comparison (default 60; "
                                   "0: the CamVid clips only).")),
    (("video",), click.option("--clips/--no-clips", default=None,
                              help="Include the moving-camera CamVid clips (default: yes).")),
    (("stages", "video"), click.option("--home", default=None, type=click.Path(),
                                       help="Model home.")),
    (("video",), click.option("--backend", default=None, help="cpu, cuda, auto, ...")),
    (("stages",), click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None,
                               help="cuda = GPU index, CUDA SMFA and CUDA-event timing.")),
    (("stages", "video"), click.option("--data", "data_root", default=None, type=click.Path(),
                                       help="Data root (default: ../shared/data beside the "
                                            "checkout).")),
]


def options_for(suite: str):
    """Decorator adding the options ``suite`` uses (``all``: every option)."""
    def deco(f):
        for suites, opt in reversed(OPTIONS):   # click lists options in decoration order
            if suites is ALL or suite == "all" or suite in suites:
                f = opt(f)
        return f
    return deco


def _run(suites, out_dir, profile, quick, full, threads, no_progress, no_plots, proposals=None,
         frames=None, repeats=None, bank_size=None, sizes=None, dims=None, models=None,
         bank_path=None, max_frames=None, home=None, backend=None, data_root=None, device=None,
         preset_name=None, temporal=None, temporal_frames=None, clips=None, overrides=()):
    from .report import write_report
    from .suites import run

    prof = profile or ("quick" if quick else "full" if full else "default")
    ov = {"stages": dict(proposals=_ints(proposals), frames=frames, bank_size=bank_size,
                         models=models, home=home, data_root=data_root, device=device),
          "scaling": dict(sizes=_ints(sizes), dims=_ints(dims), repeats=repeats),
          "video": dict(bank_path=bank_path, max_frames=max_frames, folder_frames=max_frames,
                        home=home, backend=backend, data_root=data_root,
                        preset_name=preset_name, overrides=tuple(overrides or ()),
                        temporal=temporal,
                        temporal_frames=temporal_frames, clips=clips)}
    res = run(suites, prof, ov, threads, progress=not no_progress)
    paths = write_report(res, out_dir, plots=not no_plots)
    click.echo(f"wrote {paths['json']}, {paths['markdown']} and {len(paths['plots'])} plot(s)")
    for name, secs in res["seconds"].items():
        click.echo(f"  {name}: {secs:.1f} s")
    return res


@click.group("bench")
def bench_command():
    """Benchmarks: per-stage latency, bank scaling, real video, serving."""


def _make(name, doc):
    @bench_command.command(name, help=doc)
    @options_for(name)
    def cmd(**kw):
        _run([name] if name != "all" else "all", **kw)
    return cmd


_make("stages", "Per-stage latency of one frame (median/p90/p99 after warm-up).")
_make("scaling", "Bank scaling: latency, recall@25 and memory per index kind and size.")
_make("video", "Real video and an image folder end to end with the default models.")
_make("all", "Every suite (default profile: under 10 minutes on 2 CPU cores).")


def _serve():
    from ..serve.cli import bench_serve
    return bench_serve


bench_command.add_command(_serve(), "serve")
