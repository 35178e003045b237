"""``moduseg export ...``: each subcommand lives beside its exporter."""

import click

from ..cli import LazyGroup

EXPORT_COMMANDS = {
    "backbone": "moduseg.export.backbone:export_backbone",
    "engine": "moduseg.export.engine:export_engine",
    "check": "moduseg.export.trt_compat:check_command",
    "entityseg": "moduseg.export.entityseg.cli:export_entityseg",
    "clip": "moduseg.export.clip:export_clip",
    "triton": "moduseg.serve.cli:export_triton",
}


@click.group(cls=LazyGroup, lazy=EXPORT_COMMANDS)
def export():
    """Export backbones and proposers to ONNX and TensorRT."""
