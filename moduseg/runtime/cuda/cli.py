"""``moduseg cuda ...`` (or ``python -m moduseg.runtime.cuda``): compile, inspect, time, self-check."""

from __future__ import annotations

import json
import sys
import tempfile

import click

from ...errors import ModuSegError


def _archs(text: str) -> list[int]:
    return [int(a.strip().removeprefix("sm_")) for a in text.split(",") if a.strip()]


@click.group()
def cuda():
    """The CUDA SMFA and top-K kernels (NVRTC, cuda-python)."""


@cuda.command()
def info():
    """Which NVRTC compilers, GPU and faiss-gpu this machine has."""
    from ..gpu_index import faiss_gpu_available
    from .device import gpu_available
    from .nvrtc import TARGET_ARCHS, choose_compiler, describe_compilers

    click.echo(f"compilers: {describe_compilers()}")
    for a in TARGET_ARCHS:
        try:
            click.echo(f"  sm_{a}: {choose_compiler(a)!r}")
        except ModuSegError as e:
            click.echo(f"  sm_{a}: unavailable ({e})")
    ok, why = gpu_available()
    click.echo(f"gpu: {'yes' if ok else 'no'}: {why}")
    ok, why = faiss_gpu_available()
    click.echo(f"faiss-gpu: {'yes' if ok else 'no'}: {why}")


@cuda.command("compile")
@click.option("--arch", "archs", default="72,75,80,86,87,89,90", show_default=True,
              help="comma-separated compute capabilities")
@click.option("--cache-dir", default=None, help="default: <model home>/cache/cuda")
def compile_command(archs, cache_dir):
    """Compile smfa.cu and topk.cu to CUBIN for each arch into the disk cache."""
    from .nvrtc import compile_kernel

    for a in _archs(archs):
        for k in ("smfa", "topk"):
            ck = compile_kernel(k, a, cache_dir=cache_dir)
            click.echo(f"{k}.cu sm_{a}: {len(ck.image)} B by NVRTC {ck.nvrtc_version[0]}."
                       f"{ck.nvrtc_version[1]} ({ck.nvrtc_origin}){' [cached]' if ck.from_cache else ''}"
                       f" -> {ck.cache_path}")


@cuda.command()
@click.option("--masks", "P", default=200, show_default=True)
@click.option("--dim", "D", default=1152, show_default=True)
@click.option("--grid", default=32, show_default=True, help="square patch grid side")
@click.option("--mask-size", default=512, show_default=True)
@click.option("--dtype", type=click.Choice(["float16", "float32"]), default="float16", show_default=True)
@click.option("--repeats", default=50, show_default=True)
def bench(P, D, grid, mask_size, dtype, repeats):
    """Time the two SMFA launches with CUDA events (needs a GPU)."""
    from .smfa_gpu import benchmark

    patch = max(1, mask_size // grid)
    click.echo(json.dumps(benchmark(P, D, (grid, grid), (grid * patch, grid * patch), patch,
                                    dtype, repeats), indent=1))


@cuda.command("emulate-check")
@click.option("--seed", default=0, show_default=True)
def emulate_check(seed):
    """Build the kernels for the host (g++) and compare them with numpy SMFA and search."""
    import numpy as np

    from ...smfa import smfa
    from ...types import FeatureMap, GridGeometry
    from .emulate import Emulator, build_emulator

    rng = np.random.default_rng(seed)
    emu = Emulator(build_emulator(tempfile.gettempdir() + "/moduseg-cuda-emu"), seed=seed)
    geo = GridGeometry((100, 140), (95, 131), (7, 10), 14)
    masks = rng.random((40, 75, 105)) < 0.4
    feats = rng.standard_normal((80, 7, 10)).astype(np.float16)
    v, w, _ = emu.smfa(masks, feats, geo)
    rv, rw = smfa(masks, FeatureMap(feats.astype(np.float32), geo))
    bank = rng.standard_normal((700, 80)).astype(np.float32)
    _, i = emu.topk(v, bank, 25)
    ref = np.argsort(-(v @ bank.T), axis=1, kind="stable")[:, :25]
    out = {"smfa_max_abs_err": float(np.abs(v - rv).max()),
           "weight_sum_max_rel_err": float((np.abs(w - rw) / np.maximum(rw, 1e-9)).max()),
           "topk_ids_equal": bool((i == ref).all()), "barriers": emu.barriers()}
    click.echo(json.dumps(out))
    if out["smfa_max_abs_err"] > 1e-5 or not out["topk_ids_equal"]:
        sys.exit(1)


def main(argv=None):
    try:
        return cuda.main(args=argv, prog_name="python -m moduseg.runtime.cuda", standalone_mode=False)
    except ModuSegError as e:
        click.echo(f"Error: {e}", err=True)
        return 2
    except click.ClickException as e:
        e.show()
        return e.exit_code
