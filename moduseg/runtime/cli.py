"""``moduseg segment``: images, folders, videos and cameras."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import InputError


def build_segmenter(bank_path, home=None, preset=None, overrides=(), need_proposer=True,
                    backend: str = "auto", proposer: str | None = None):
    """``runtime.assemble.load_segmenter`` (the name earlier code imports)."""
    from .assemble import load_segmenter
    return load_segmenter(bank_path, home, preset, overrides, backend, need_proposer, proposer)


def load_backbone(backend: str, home, cfg):
    """``runtime.assemble.build_backbone`` (the name earlier code imports)."""
    from .assemble import build_backbone
    return build_backbone(cfg, backend, home)


BACKEND_HELP = ("auto (cuda when a GPU is usable, else cpu), cpu, cuda, tensorrt (ONNX Runtime "
                "providers; bank search and SMFA on the GPU) or tensorrt-native (TensorRT "
                "engines).")
PROPOSER_HELP = ("Proposer: sam (installed) or entityseg (the paper's; its export through "
                 "--set proposer.model=PATH). Default: the bank's.")


@click.command("segment")
@click.argument("input_spec", metavar="INPUT")
@click.option("--bank", "bank_path", required=True, type=click.Path(), help="Bank file (.npz).")
@click.option("--out", "out_dir", required=True, type=click.Path(), help="Output folder.")
@click.option("--preset", default=None, help="Configuration preset (default: the bank's).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a setting, e.g. --set runtime.unassigned=nearest.")
@click.option("--backend", default="auto", help=BACKEND_HELP)
@click.option("--proposer", default=None, type=click.Choice(["sam", "entityseg"]),
              help=PROPOSER_HELP)
@click.option("--home", default=None, type=click.Path(), help="Model home.")
@click.option("--max-frames", type=click.IntRange(min=1), default=None,
              help="Stop after N frames (N >= 1).")
@click.option("--no-overlay", is_flag=True, help="Do not write colour overlays.")
def segment(input_spec, bank_path, out_dir, preset, overrides, backend, proposer, home,
            max_frames, no_overlay):
    """Segment INPUT (an image, a folder, a video file or a camera index).

    Writes labels/, overlays/ (or overlay.mp4), segments.json, palette.json and
    index.html into --out, replacing a previous run's files as a set.
    """
    from .outputs import prepare_output, run_segment
    from .stream import input_kind, probe_input

    input_kind(input_spec)
    out = prepare_output(out_dir)          # before any model loads
    probe_input(input_spec)
    seg = build_segmenter(bank_path, home, preset, overrides, backend=backend, proposer=proposer)
    summary = run_segment(seg, input_spec, out, max_frames=max_frames,
                          overlays=not no_overlay)
    click.echo(f"{summary.frames} frame(s) -> {out} (open {out / 'index.html'})"
               + (f"; {len(summary.skipped)} unreadable file(s) skipped"
                  if summary.skipped else ""))
    click.echo("median ms per frame: " + ", ".join(f"{k} {v:.1f}"
                                                   for k, v in summary.median_ms.items()))
