"""``moduseg segment``: images, folders, videos, cameras and stream URLs."""

from __future__ import annotations

from pathlib import Path

import click

from ..cli_options import backend_option, proposer_option
from ..errors import InputError
from ..registry import BACKENDS
from ..text import printable
from ..scale.options import engine_options
from ..settings import preset_option



DEFAULT_OUT_ROOT = "moduseg-out"
from .sources import LIVE_KINDS  # noqa: E402  inputs that run until stopped: the bank is watched


def default_out_dir(input_spec: str, kind: str) -> Path:
    """``moduseg-out/<input name>`` under the working directory (git-ignored in the repo)."""
    if kind == "camera":
        name = f"camera{input_spec}"
    elif kind == "stream":
        from urllib.parse import urlsplit
        parts = urlsplit(input_spec)
        tail = "-".join(p for p in parts.path.split("/") if p)
        name = "".join(c if c.isalnum() or c in "-_." else "-"
                       for c in f"{parts.hostname}-{tail}".strip("-"))[:80] or "stream"
    else:
        p = Path(input_spec)
        name = (p.resolve().name if kind == "folder" else p.stem) or "input"
    return Path(DEFAULT_OUT_ROOT) / name


@click.command("segment")
@click.argument("input_spec", metavar="INPUT")
@click.option("--bank", "bank_path", default=None, type=click.Path(),
              help="Bank file (.npz); default: the embedded CamVid street-scene bank of the "
                   "preset.")
@click.option("--out", "out_dir", default=None, type=click.Path(),
              help=f"Output folder; default: {DEFAULT_OUT_ROOT}/<input name> in the working "
                   f"directory.")
@preset_option("Configuration preset (default: the bank's).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a setting, e.g. --set runtime.unassigned=nearest.")
@backend_option()
@proposer_option()
@click.option("--min-confidence", "--conf", "min_confidence", default=None,
              type=click.FloatRange(0.0, 1.0), metavar="C",
              help="Leave segments whose class confidence is below C (0-1) unassigned (255) "
                   "instead of painting them (runtime.min_confidence).")
@click.option("--classes", "classes", default=None, metavar="NAMES",
              help="Paint only these of the bank's classes, comma-separated (e.g. "
                   "car,pedestrian); every other pixel is left unassigned (runtime.classes).")
@click.option("--opacity", default=None, type=click.FloatRange(0.0, 1.0), metavar="A",
              help="Weight of the class colours in the overlays, 0-1 (0: the frame only, "
                   "1: solid colours; default 0.45).")
@click.option("--home", default=None, type=click.Path(), help="Model home.")
@click.option("--max-frames", type=click.IntRange(min=1), default=None,
              help="Stop after N frames (N >= 1).")
@click.option("--no-overlay", is_flag=True, help="Do not write colour overlays.")
@click.option("--show", is_flag=True,
              help="Show each overlay live in a window (needs a display and pygame: pip "
                   "install 'moduseg[show]'); closing it ends the run.")
@click.option("--reconnect", type=click.IntRange(min=0), default=5, show_default=True,
              help="Stream URLs: reopen a dropped stream up to N times in a row (a pause "
                   "doubling from 0.5 s), each attempt said on the console.")
@click.option("--temporal", type=click.Choice(["on", "off"]), default="on", show_default=True,
              help="Videos, cameras and streams: keyframes with the full pipeline, the frames between "
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
def segment(input_spec, bank_path, out_dir, preset, overrides, backend, proposer,
            min_confidence, classes, opacity, home, max_frames, no_overlay, show, reconnect,
            temporal, offline, uncertain_dir, uncertain_unknown, uncertain_low_confidence,
            watch_bank, **engine):
    """Segment INPUT (an image, a folder, a video file, a camera index, or an
    rtsp:// or http(s):// stream URL).

    Writes labels/, overlays/ (or overlay.mp4), segments.json, palette.json and
    index.html into --out, replacing a previous run's files as a set. A folder's
    images can be split over jobs (--shard i/N) or a Ray actor pool (--engine
    ray); frames that fail are listed under "skipped" in segments.json.
    """
    from ..bank.embedded import resolve_bank
    from ..models import ensure_models
    from ..scale import options
    from ..timing import format_stage_ms
    from ..bank.segmenter import ModelRecipe, build_for
    from .loop import run_segment
    from .run import prepare_output
    from .sources import image_paths, input_kind, probe_input

    kind = input_kind(input_spec)
    overrides = tuple(overrides) + shorthand_settings(min_confidence, classes)
    shard, ray_options = options.parse(**engine)
    bank_path = resolve_bank(bank_path, preset)
    spec = ModelRecipe(backend, home, preset, overrides, bank_path, proposer)
    if classes is not None:                # names checked against the bank before any work
        from ..runtime.pipeline import class_filter
        checked = _outputs_only(spec)
        class_filter(checked.config.classes, checked.bank.class_names)
    work = None
    ray_video = ray_options is not None and kind == "video" and shard is None
    if (shard is not None or ray_options is not None) and not ray_video:
        work = image_paths(input_spec, max_frames, shard)    # refuses cameras and streams
    if show:
        from .display import check_display
        check_display()                                      # before any model loads
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
    if not BACKENDS[backend].native_trt:     # engines need no model pull
        ensure_models(home, offline=offline)
    results = None
    if ray_options is None:
        seg = build_for(spec, "segmenter")
    else:
        seg = _outputs_only(spec)
        results = (_ray_video_results(spec, input_spec, max_frames, ray_options,
                                      temporal=temporal == "on",
                                      need_image=not no_overlay or show) if ray_video else
                   _ray_results(spec, work, ray_options, need_image=not no_overlay or show))
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
    summary = run_segment(seg, input_spec, out, max_frames=max_frames,
                          overlays=not no_overlay, shard=shard, results=results,
                          watcher=watcher, extra_sinks=extra_sinks,
                          temporal=temporal == "on", show=show,
                          reconnect=reconnect, opacity=opacity,
                          say=lambda m: click.echo(m, err=True))
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
    click.echo(format_stage_ms(summary.median_ms))
    if summary.temporal:
        t = summary.temporal
        tc = (t.get("consistency") or {}).get("mean")
        votes = f", {t['vote_frames']} vote frame(s)" if t.get("vote_frames") else ""
        click.echo(f"temporal: {t['keyframes']} keyframe(s){votes} of {t['frames']} frames "
                   f"(rate {t['keyframe_rate']}); ms per frame amortised "
                   f"{t['frame_ms']['amortised']:.1f}, p50 {t['frame_ms']['p50']:.1f}, p95 "
                   f"{t['frame_ms']['p95']:.1f}"
                   + (f"; temporal consistency {tc:.1f} %" if tc is not None else ""))
    if summary.live:
        click.echo(live_line(summary.live))


def live_line(live: dict) -> str:
    """One console line for a camera or stream run: latency (read to result), keyframe
    rate, frames dropped while the segmenter was busy, reconnects."""
    lat, rate = live["latency_ms"], live["keyframe_rate"]
    parts = [f"latency p50 {lat['p50']:.0f} ms, p95 {lat['p95']:.0f} ms" if lat["p50"] is not None
             else "latency n/a",
             "keyframes " + ("n/a" if rate is None else f"{100 * rate:.0f}%"),
             f"{live['dropped']} frame(s) dropped while busy"]
    if live.get("reconnects") is not None:
        parts.append(f"{live['reconnects']} reconnect(s)")
    return "live: " + ", ".join(parts)


def parse_classes(text: str) -> tuple[str, ...]:
    """``--classes car,pedestrian`` -> ``("car", "pedestrian")`` (names checked against
    the bank when the segmenter is built)."""
    names = tuple(n.strip() for n in str(text).split(","))
    if not names or any(not n for n in names):
        raise InputError(f"--classes {text!r}: give class names separated by commas, e.g. "
                         f"--classes car,pedestrian")
    return tuple(dict.fromkeys(names))


def shorthand_settings(min_confidence, classes) -> tuple[str, ...]:
    """``--min-confidence`` and ``--classes`` as the ``--set`` lines they stand for."""
    out = ()
    if min_confidence is not None:
        out += (f"runtime.min_confidence={float(min_confidence)!r}",)
    if classes is not None:
        out += (f"runtime.classes={list(parse_classes(classes))!r}",)
    return out


def _outputs_only(spec):
    """What segment's outputs need from the segmenter (bank, configuration), without models."""
    from types import SimpleNamespace

    from ..bank.segmenter import load_bank_config
    bank, cfg = load_bank_config(spec.bank_path, spec.preset, spec.overrides, spec.proposer)
    return SimpleNamespace(bank=bank, config=cfg.runtime, full_config=cfg)


def _ray_video_results(spec, input_spec, max_frames, ray_options, need_image: bool,
                       temporal: bool = True):
    """``(Frame, result or InputError)`` of a video from one Ray actor: the video is one
    ordered task on the temporal path (never split across actors), its results
    streamed back in frame order; the frames for the overlays are decoded here."""
    from functools import partial

    from ..scale import ray_engine
    from ..bank.segmenter import build_for
    from ..scale.work import FrameError, VideoTask
    from .sources import Frame, iter_frames, video_images

    task = VideoTask(partial(build_for, spec, "segmenter"),
                     partial(video_images, max_frames=max_frames), temporal=temporal)
    frames = iter_frames(input_spec, max_frames)
    for k, res in ray_engine.run_ordered(task, str(input_spec), ray_options):
        frame = next(frames, None) if need_image else None
        if frame is None:
            frame = Frame(k, f"frame_{k:06d}", None)
        if isinstance(res, FrameError):
            yield frame, InputError(res.message)
            continue
        yield frame, res


def _ray_results(spec, work, ray_options, need_image: bool):
    """``(Frame, result or InputError)`` of ``work`` [(position, path)] from a Ray actor
    pool, in frame order."""
    from functools import partial

    from ..io import read_image
    from ..scale import ray_engine
    from ..bank.segmenter import build_for
    from ..scale.work import FrameError, SegmentTask
    from .sources import Frame

    task = SegmentTask(partial(build_for, spec, "segmenter"))
    for k, res in ray_engine.run(task, [str(f.path) for f in work], ray_options):
        index, path, name = work[k]
        if isinstance(res, FrameError):
            yield Frame(index, name, None, path.name), InputError(res.message)
            continue
        image = read_image(path) if need_image else None
        yield Frame(index, name, image, path.name), res
