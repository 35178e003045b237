"""The ``--shard`` / ``--engine`` options shared by ``bank build`` and ``segment``."""

from __future__ import annotations

import click

from .ray_engine import RayOptions
from .shard import Shard


def engine_options(f):
    """Add --shard, --engine, --ray-address, --workers, --cpus-per-worker, --num-gpus-per-worker."""
    opts = [
        click.option("--shard", "shard", default=None, metavar="i/N",
                     help="Process only share i of N (0 <= i < N) of the images, "
                          "for Slurm arrays or Kubernetes Jobs."),
        click.option("--engine", type=click.Choice(["local", "ray"]), default="local",
                     show_default=True, help="Where the per-image work runs."),
        click.option("--ray-address", default=None,
                     help="--engine ray: the cluster to join (auto, or HEAD:6379 as 'ray start "
                          "--head' prints it); default: start a local Ray instance."),
        click.option("--workers", type=int, default=2, show_default=True,
                     help="--engine ray: actors in the pool (each loads the models once)."),
        click.option("--cpus-per-worker", type=float, default=None,
                     help="--engine ray: CPUs each actor reserves (default: an equal share "
                          "that leaves half a CPU for Ray Data's own tasks, at most 1)."),
        click.option("--num-gpus-per-worker", type=float, default=0.0, show_default=True,
                     help="--engine ray: GPUs each actor reserves (0: CPU actors)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def parse(shard, engine, ray_address, workers, cpus_per_worker, num_gpus_per_worker):
    """CLI values -> (Shard or None, RayOptions or None)."""
    s = Shard.parse(shard) if shard is not None else None
    if engine != "ray":
        return s, None
    return s, RayOptions(ray_address, workers, cpus_per_worker, num_gpus_per_worker).check()
