"""``moduseg segment``: images, folders, videos and cameras."""

from __future__ import annotations

from pathlib import Path

import click

from ..cli_options import backend_option, proposer_option
from ..errors import InputError
from ..text import printable
from ..scale.options import engine_options
from ..settings import preset_option


DEFAULT_OUT_ROOT = "moduseg-out"
LIVE_KINDS = ("camera", "stream")     # inputs that run until stopped: the bank is watched


def default_out_dir(input_spec: str, kind: str) -> Path:
    """``moduseg-out/<input name>`` under the working directory (git-ignored in the repo)."""
    if kind == "camera":
        name = f"camera{input_spec}"
    else:
        p = Path(input_spec)
        name = (p.resolve().name if kind == "folder" else p.stem) or "input"
    return Path(DEFAULT_OUT_ROOT) / name


@click.command("segment")
@click.argument("input_spec", metavar="INPUT")
@click.option("--bank", "bank_path", default=None, type=click.Path(),
              help="Bank file (.npz); default: the embedded CamVid street-scene bank.")
@click.option("--out", "out_dir", default=None, type=click.Path(),
              help=f"Output folder; default: {DEFAULT_OUT_ROOT}/<input name> in the working "
                   f"directory.")
@preset_option("Configuration preset (default: the bank's).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a setting, e.g. --set runtime.unassigned=nearest.")
@backend_option()
@proposer_option()
@click.option("--home", default=None, type=click.Path(), help="Model home.")
@click.option("--max-frames", type=click.IntRange(min=1), default=None,
              help="Stop after N frames (N >= 1).")
@click.option("--no-overlay", is_flag=True, help="Do not write colour overlays.")
@click.option("--temporal", type=click.Choice(["on", "off"]), default="on", show_default=True,
              help="Videos and cameras: keyframes with the full pipeline, the frames between "
                   "propagated by optical flow, a temporal class memory and track ids (on); "
                   "or every frame segmented alone (off). Images and folders are always "
                   "per frame.")
@click.option("--offline", is_flag=True,
              help="Never fetch the default models (they are fetched on first use otherwise).")
@click.option("--save-uncertain", "uncertain_dir", default=None, type=click.Path(),
              help="Write frames whose unknown or low-confidence share passes a threshold "
                   "(image, label map, unknown mask, why) here, ready for 'bank add'.")
@click.option("--uncertain-unknown", type=click.FloatRange(0.0, 1.0), default=0.05,
              show_default=True,
              help="--save-uncertain: keep a frame when this share of it is unknown (0: never).")
@click.option("--uncertain-low-confidence", type=click.FloatRange(0.0, 1.0), default=0.25,
              show_default=True,
              help="--save-uncertain: keep a frame when this share of it is painted by "
                   "proposals whose vote confidence is below 0.5 (0: never).")
@click.option("--watch-bank/--no-watch-bank", default=None,
              help="Use a changed bank file from the next frame on (default: on for a "
                   "camera or stream, off for files).")
@engine_options
def segment(input_spec, bank_path, out_dir, preset, overrides, backend, proposer, home,
            max_frames, no_overlay, temporal, offline, uncertain_dir, uncertain_unknown,
            uncertain_low_confidence, watch_bank, **engine):
    """Segment INPUT (an image, a folder, a video file or a camera index).

    Writes labels/, overlays/ (or overlay.mp4), segments.json, palette.json and
    index.html into --out, replacing a previous run's files as a set. A folder's
    images can be split over jobs (--shard i/N) or a Ray actor pool (--engine
    ray); frames that fail are listed under "skipped" in segments.json.
    """
    from ..bank.embedded import resolve_bank
    from ..models import ensure_models
    from ..scale import options
    from ..bank.segmenter import ModelRecipe, build_for
    from .loop import run_segment
    from .run import prepare_output
    from .sources import image_paths, input_kind, probe_input

    kind = input_kind(input_spec)
    shard, ray_options = options.parse(**engine)
    bank_path = resolve_bank(bank_path)
    recipe = ModelRecipe(backend, home, preset, tuple(overrides), str(bank_path), proposer)
    work = None
    if shard is not None or ray_options is not None:
        work = image_paths(input_spec, max_frames, shard)    # refuses videos and cameras
    out = prepare_output(out_dir or default_out_dir(input_spec, kind))   # before any model loads
    extra_sinks = []
    if uncertain_dir is not None:
        from .uncertain import UncertainFrames, UncertainRule
        if ray_options is not None:
            raise InputError("--save-uncertain writes frames from this process: run it "
                             "without --engine ray")
        extra_sinks.append(UncertainFrames(uncertain_dir, UncertainRule(
            unknown_share=uncertain_unknown, low_confidence_share=uncertain_low_confidence)))
    probe_input(input_spec)
    click.echo(f"writing to {printable(out)}", err=True)
    if backend != "tensorrt-native":
        ensure_models(home, offline=offline)
    results = None
    if ray_options is None:
        seg = build_for(recipe, "segmenter")
    else:
        seg = _outputs_only(recipe)
        results = _ray_results(recipe, work, ray_options, need_image=not no_overlay)
    if seg.full_config.runtime.reuse_proposals_below > 0 and work is not None:
        raise InputError("runtime.reuse_proposals_below > 0 makes a frame depend on the one "
                         "before it, so the frames cannot be split over workers; drop "
                         "that --set or run without --shard/--engine ray")
    watcher = None
    if watch_bank or (watch_bank is None and kind in LIVE_KINDS):
        if ray_options is not None:
            raise InputError("--watch-bank swaps the bank of this process: run it without "
                             "--engine ray")
        from .hotswap import BankWatcher
        watcher = BankWatcher(bank_path, seg, report=lambda m: click.echo(m, err=True))
    from ..temporal import TemporalConfig
    summary = run_segment(seg, input_spec, out, max_frames=max_frames,
                          overlays=not no_overlay, shard=shard, results=results,
                          watcher=watcher, extra_sinks=extra_sinks,
                          temporal=TemporalConfig(enabled=temporal == "on"))
    click.echo(f"{summary.frames} frame(s) -> {printable(out)} (open "
               f"{printable(out / 'index.html')})"
               + (f"; {len(summary.skipped)} frame(s) skipped (listed in segments.json)"
                  if summary.skipped else ""))
    for e in summary.skipped[:20]:
        click.echo(f"  skipped {printable(e['file'])}: {printable(e['error'])}", err=True)
    for sink in extra_sinks:
        hard = sink.folder
        click.echo(f"{sink.kept} uncertain frame(s) -> {printable(hard)} (add them with "
                   f"'moduseg bank add BANK --dataset folder --root {printable(hard / 'images')} "
                   f"--labels {printable(hard / 'labels')} --classes "
                   f"{printable(hard / 'classes.txt')} --out NEW.npz')")
    click.echo("median ms per frame: " + ", ".join(f"{k} {v:.1f}"
                                                   for k, v in summary.median_ms.items()))
    if summary.temporal:
        t = summary.temporal
        tc = t.get("consistency", {}).get("mean")
        click.echo(f"temporal: {t['keyframes']} keyframe(s) of {t['frames']} frames "
                   f"(rate {t['keyframe_rate']}); ms per frame amortised "
                   f"{t['frame_ms']['amortised']:.1f}, p50 {t['frame_ms']['p50']:.1f}, p95 "
                   f"{t['frame_ms']['p95']:.1f}"
                   + (f"; latency p50 {t['latency_ms']['p50']:.1f}, p95 "
                      f"{t['latency_ms']['p95']:.1f}" if "latency_ms" in t else "")
                   + (f"; temporal consistency {tc:.1f} %" if tc is not None else ""))


def _outputs_only(recipe):
    """What segment's outputs need from the segmenter (bank, configuration), without models."""
    from types import SimpleNamespace

    from ..bank.segmenter import load_bank_config
    bank, cfg = load_bank_config(recipe.bank_path, recipe.preset, recipe.overrides,
                                 recipe.proposer)
    return SimpleNamespace(bank=bank, config=cfg.runtime, full_config=cfg)


def _ray_results(recipe, work, ray_options, need_image: bool):
    """``(Frame, result or InputError)`` of ``work`` [(position, path)] from a Ray actor
    pool, in frame order."""
    from functools import partial

    from ..io import read_image
    from ..scale import ray_engine
    from ..bank.segmenter import build_for
    from ..scale.work import FrameError, SegmentTask
    from .sources import Frame

    task = SegmentTask(partial(build_for, recipe, "segmenter"))
    for k, res in ray_engine.run(task, [str(f.path) for f in work], ray_options):
        index, path, name = work[k]
        if isinstance(res, FrameError):
            yield Frame(index, name, None, path.name), InputError(res.message)
            continue
        image = read_image(path) if need_image else None
        yield Frame(index, name, image, path.name), res
