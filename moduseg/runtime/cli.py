"""``moduseg segment``: images, folders, videos and cameras."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import InputError


def build_segmenter(bank_path, home=None, preset=None, overrides=(), need_proposer=True,
                    backend: str = "auto"):
    """Load a bank, the configuration (preset > bank's > default) and the default models."""
    from ..bank.store import load_bank
    from ..models import load_default_proposer
    from ..settings import resolve_config
    from .pipeline import Segmenter

    bank = load_bank(bank_path)
    cfg = resolve_config(preset, overrides, bank.config)
    backbone = load_backbone(backend, home, cfg)
    proposer = (load_default_proposer(home=home, providers=_ort(backend),
                                      **cfg.proposer_options())
                if need_proposer else _NoProposer())
    return Segmenter(backbone, proposer, bank, cfg, pooler=_pooler(backend))


def _ort(backend: str) -> str:
    return "auto" if backend in ("auto", "tensorrt-native") else backend


def load_backbone(backend: str, home, cfg):
    from ..models import load_default_backbone
    if backend == "tensorrt-native":
        from .backbones.trt_backend import TensorRTBackbone  # needs tensorrt + a GPU
        return TensorRTBackbone.from_options(home=home, **cfg.backbone_options())
    return load_default_backbone(home=home, providers=_ort(backend), **cfg.backbone_options())


def _pooler(backend: str):
    if backend in ("cpu",):
        return None
    from .cuda.smfa_gpu import make_smfa_pooler
    return make_smfa_pooler(prefer="gpu" if backend in ("cuda", "tensorrt", "tensorrt-native")
                            else "auto")


class _NoProposer:
    name = "none"

    def __call__(self, image):
        raise InputError("this segmenter was built without a proposer")


@click.command("segment")
@click.argument("input_spec", metavar="INPUT")
@click.option("--bank", "bank_path", required=True, type=click.Path(), help="Bank file (.npz).")
@click.option("--out", "out_dir", required=True, type=click.Path(), help="Output folder.")
@click.option("--preset", default=None, help="Configuration preset (default: the bank's).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a setting, e.g. --set runtime.unassigned=nearest.")
@click.option("--backend", default="auto",
              help="auto, cpu, cuda, tensorrt (ONNX Runtime providers) or tensorrt-native.")
@click.option("--home", default=None, type=click.Path(), help="Model home.")
@click.option("--max-frames", type=click.IntRange(min=1), default=None,
              help="Stop after N frames (N >= 1).")
@click.option("--no-overlay", is_flag=True, help="Do not write colour overlays.")
def segment(input_spec, bank_path, out_dir, preset, overrides, backend, home, max_frames,
            no_overlay):
    """Segment INPUT (an image, a folder, a video file or a camera index).

    Writes labels/, overlays/ (or overlay.mp4), segments.json, palette.json and
    index.html into --out, replacing a previous run's files as a set.
    """
    from .outputs import prepare_output, run_segment
    from .stream import input_kind, probe_input

    input_kind(input_spec)
    out = prepare_output(out_dir)          # before any model loads
    probe_input(input_spec)
    seg = build_segmenter(bank_path, home, preset, overrides, backend=backend)
    summary = run_segment(seg, input_spec, out, max_frames=max_frames,
                          overlays=not no_overlay)
    click.echo(f"{summary.frames} frame(s) -> {out} (open {out / 'index.html'})"
               + (f"; {len(summary.skipped)} unreadable file(s) skipped"
                  if summary.skipped else ""))
    click.echo("median ms per frame: " + ", ".join(f"{k} {v:.1f}"
                                                   for k, v in summary.median_ms.items()))
