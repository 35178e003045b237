"""``moduseg export entityseg``: checkpoint -> ONNX (-> parity check) -> TensorRT engine."""

from __future__ import annotations

from pathlib import Path

import click

from ...errors import InputError


def _parse_hw(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().replace("*", "x").split("x"))
    except ValueError:
        raise InputError(f"--input-size must look like 800x1344 (HxW), got {text!r}") from None
    return h, w


def _load_image(path: Path | None, hw: tuple[int, int]):
    import numpy as np

    if path is None:
        # a smooth synthetic scene: a few flat regions with soft edges
        H, W = hw
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
        img = np.stack([xx / W * 255, yy / H * 255, ((xx // (W / 4) + yy // (H / 3)) % 2) * 200],
                       -1)
        return img.clip(0, 255).astype(np.uint8)
    from ...io import read_image
    from ...text import printable

    try:
        return read_image(path)
    except InputError:
        raise InputError(f"--parity-image {printable(path)} is not a readable image") from None


def _report_trt_compat(path: Path) -> None:
    """TensorRT parser support of the graph (no GPU needed); warnings and errors only."""
    try:
        from ..trt_compat import check_file
    except ImportError:
        return
    report = check_file(path, "10.x")
    for line in report.lines():
        if not line.lstrip().startswith("INFO"):
            click.echo(line)


@click.command("entityseg")
@click.option("--checkpoint", type=click.Path(path_type=Path),
              help="EntitySeg / Mask2Former detectron2 checkpoint (.pth or .pkl).")
@click.option("--random", "random_preset", default=None,
              type=click.Choice(["tiny", "swin_t", "swin_l", "hornet_l", "r50"]),
              help="Export random weights of this architecture instead (pipeline tests).")
@click.option("--output", "-o", type=click.Path(path_type=Path), required=True,
              help="ONNX file to write.")
@click.option("--input-size", default="800x1344", show_default=True,
              help="Fixed network input HxW (multiples of 32); EntitySeg-exact when it is "
                   "ceil32 of the resized image, e.g. 800x1088 for 4:3 images.")
@click.option("--min-size", default=800, show_default=True,
              help="Resize: shortest image side (detectron2 MIN_SIZE_TEST).")
@click.option("--max-size", default=1333, show_default=True,
              help="Resize: longest side cap (detectron2 MAX_SIZE_TEST).")
@click.option("--opset", default=17, show_default=True, help="ONNX opset (>= 16).")
@click.option("--no-simplify", is_flag=True, help="Skip onnxslim.")
@click.option("--parity-image", type=click.Path(path_type=Path), default=None,
              help="Image for the torch vs ONNX Runtime check (default: synthetic).")
@click.option("--skip-parity", is_flag=True, help="Do not run the parity check.")
@click.option("--engine", type=click.Path(path_type=Path), default=None,
              help="Also build a TensorRT engine here (needs an NVIDIA GPU).")
@click.option("--precision", type=click.Choice(["fp16", "fp32"]), default="fp16",
              show_default=True, help="Engine precision.")
@click.option("--workspace", "workspace_mb", default=4096, show_default=True,
              help="TensorRT builder workspace in MiB.")
@click.option("--heads", default=8, show_default=True,
              help="Attention heads (MASK_FORMER.NHEADS); not recorded in the weights.")
@click.option("--gn-groups", default=32, show_default=True,
              help="GroupNorm groups of the pixel decoder; not recorded in the weights.")
@click.option("--trust-pickle", is_flag=True,
              help="Allow unpickling (.pkl checkpoints, .pth with optimizer objects).")
def export_entityseg(checkpoint, random_preset, output, input_size, min_size, max_size, opset,
                     no_simplify, parity_image, skip_parity, engine, precision, workspace_mb,
                     heads, gn_groups, trust_pickle):
    """Export the EntitySeg Mask2Former entity proposer to ONNX (and TensorRT).

    Example: moduseg export entityseg --checkpoint Mask2Former_swin_large_w7_3x.pth
    -o models/entityseg_swinl_800x1344.onnx --engine models/entityseg_swinl.engine
    """
    from .config import PRESETS, tiny_test_config
    from .export import (ENGINE_TOLERANCE, EntitySegParityError, build_trt_engine,
                         check_engine_parity, check_parity, export_onnx)
    from .model import random_model

    if (checkpoint is None) == (random_preset is None):
        raise InputError("give exactly one of --checkpoint FILE or --random ARCH")
    hw = _parse_hw(input_size)
    if checkpoint is not None:
        from .checkpoint import load_model

        model, report = load_model(checkpoint, trust_pickle=trust_pickle, enc_heads=heads,
                                   dec_heads=heads, gn_groups=gn_groups)
        cfg = model.cfg
        click.echo(f"loaded {checkpoint}: {report.describe()}; backbone {cfg.backbone}, "
                   f"{cfg.num_queries} queries, {cfg.dec_layers} decoder layers")
    else:
        cfg = tiny_test_config() if random_preset == "tiny" else PRESETS[random_preset]()
        model = random_model(cfg)
        click.echo(f"random {random_preset} model (NOT a trained proposer)")
    path = export_onnx(model, output, hw, min_size, max_size, opset, simplify=not no_simplify)
    click.echo(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB), input {hw[0]}x{hw[1]}")
    _report_trt_compat(path)
    img = _load_image(parity_image, hw)
    if not skip_parity:
        parity = check_parity(model, path, img)
        click.echo(f"parity torch vs onnxruntime: {parity}")
        if not parity.ok():
            raise EntitySegParityError(f"ONNX export disagrees with PyTorch: {parity}")
    if engine is not None:
        built = build_trt_engine(path, engine, precision=precision, workspace_mb=workspace_mb)
        click.echo(f"wrote TensorRT engine {built}")
        parity = check_engine_parity(built, path, img)
        click.echo(f"parity TensorRT vs onnxruntime: {parity}")
        agree, atol = ENGINE_TOLERANCE[precision]
        if not parity.ok(agree, atol):
            raise EntitySegParityError(
                f"the {precision} engine disagrees with ONNX Runtime: {parity}; try "
                f"--precision fp32")
