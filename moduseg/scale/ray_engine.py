"""Run a task's per-image work as Ray Data ``map_batches`` on an actor pool.

Each actor calls ``task.setup()`` once (model sessions load once per actor)
and then maps item keys. Ray Data's actor pools are restartable and retry
their tasks by default (``max_restarts=-1``, ``max_task_retries=-1``), so a
killed worker costs a retry, not the job (tests/test_scale.py kills one). Results come back in item order (``preserve_order``).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ..errors import InputError

# Leave this much CPU unreserved so Ray Data's own read/split tasks can be
# scheduled next to the actor pool; a pool that reserves every CPU can starve
# them and hang.
CPU_HEADROOM = 0.5


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None          # None: start a local Ray instance
    workers: int = 2
    cpus_per_worker: float | None = None   # None: fit the pool under the cluster's CPUs
    gpus_per_worker: float = 0.0
    batch_size: int = 1

    def check(self) -> "RayOptions":
        if self.workers < 1:
            raise InputError(f"--workers {self.workers}: need at least 1")
        if self.cpus_per_worker is not None and self.cpus_per_worker <= 0:
            raise InputError(f"--cpus-per-worker {self.cpus_per_worker}: must be > 0")
        if self.gpus_per_worker < 0:
            raise InputError(f"--num-gpus-per-worker {self.gpus_per_worker}: must be >= 0")
        if self.batch_size < 1:
            raise InputError(f"batch size {self.batch_size}: need at least 1")
        return self


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise InputError("--engine ray needs Ray Data: pip install 'moduseg[ray]' "
                         "(or pip install 'ray[data]')") from None
    return ray


def connect(opts: RayOptions) -> bool:
    """Connect to ``opts.address`` or start a local instance; True if this call started it."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    import logging
    try:
        ray.init(address=opts.address, include_dashboard=False,
                 logging_level=logging.WARNING, log_to_driver=True)
    except (ConnectionError, ValueError, RuntimeError) as e:
        where = opts.address or "a local instance"
        raise InputError(f"cannot start or reach Ray at {where}: {e}; check --ray-address "
                         f"('ray start --head' prints it)") from None
    return True


def actor_cpus(opts: RayOptions, cluster_cpus: float) -> float:
    """CPUs each actor reserves: as asked, else an equal share below the cluster's total."""
    if opts.cpus_per_worker is not None:
        return opts.cpus_per_worker
    if opts.gpus_per_worker > 0:
        return 1.0
    share = (cluster_cpus - CPU_HEADROOM) / opts.workers
    return max(0.1, min(1.0, round(share, 2)))


def blas_env() -> dict:
    """The BLAS thread counts a local run uses, for the actors.

    Ray sets ``OMP_NUM_THREADS`` to an actor's CPU reservation, and OpenBLAS
    splits its sums by thread count, which changes the last bits of pooled
    vectors; giving actors the driver's count keeps results identical to a
    single-process run on the same kind of machine.
    """
    import os
    env = {k: os.environ[k] for k in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
           if k in os.environ}
    env["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS") or str(len(os.sched_getaffinity(0)))
    return env


class _Actor:
    """One pool actor: models built once, then per-item work on each batch."""

    def __init__(self, task):
        self.fn = task.setup()

    def __call__(self, batch: dict) -> dict:
        out = [pickle.dumps(self.fn(str(k)), protocol=pickle.HIGHEST_PROTOCOL)
               for k in batch["key"]]
        return {"position": np.asarray(batch["position"], np.int64),
                "result": np.asarray(out, dtype=object)}


class _OrderedActor:
    """One actor runs a whole item (a video) and streams its results back frame by
    frame: a generator batch function, one output row per frame."""

    def __init__(self, task):
        self.fn = task.setup()

    def __call__(self, batch: dict):
        for key in batch["key"]:
            for i, res in enumerate(self.fn(str(key))):
                yield {"position": np.asarray([i], np.int64),
                       "result": np.asarray([pickle.dumps(res, protocol=pickle.HIGHEST_PROTOCOL)],
                                            dtype=object)}


def run_ordered(task, key: str, opts: RayOptions, progress=None) -> Iterator[tuple[int, object]]:
    """``(frame position, result)`` of one ordered item (a video) computed by one Ray
    actor, streamed back in order as the actor produces them."""
    opts.check()
    ray = import_ray()
    started = connect(opts)
    try:
        cpus = actor_cpus(opts, float(ray.cluster_resources().get("CPU", 1.0)))
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = False
        ds = ray.data.from_items([{"position": 0, "key": key}], override_num_blocks=1)
        ds = ds.map_batches(
            _OrderedActor, fn_constructor_kwargs={"task": task}, batch_size=1,
            batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=1),
            num_cpus=cpus, num_gpus=opts.gpus_per_worker or None,
            runtime_env={"env_vars": blas_env()})
        for batch in ds.iter_batches(batch_size=1, batch_format="numpy", prefetch_batches=0):
            for pos, blob in zip(batch["position"], batch["result"]):
                yield int(pos), pickle.loads(blob)
                if progress is not None:
                    progress(1)
    finally:
        if started:
            ray.shutdown()


def run(task, keys: list[str], opts: RayOptions, progress=None) -> Iterator[tuple[int, object]]:
    """``(position, result)`` for every key, in order; ``progress(n)`` after each."""
    opts.check()
    ray = import_ray()
    started = connect(opts)
    try:
        cpus = actor_cpus(opts, float(ray.cluster_resources().get("CPU", 1.0)))
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = False
        items = [{"position": i, "key": k} for i, k in enumerate(keys)]
        ds = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
        ds = ds.map_batches(
            _Actor, fn_constructor_kwargs={"task": task}, batch_size=opts.batch_size,
            batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=opts.workers),
            num_cpus=cpus, num_gpus=opts.gpus_per_worker or None,
            runtime_env={"env_vars": blas_env()})
        for batch in ds.iter_batches(batch_size=1, batch_format="numpy", prefetch_batches=0):
            for pos, blob in zip(batch["position"], batch["result"]):
                yield int(pos), pickle.loads(blob)
                if progress is not None:
                    progress(1)
    finally:
        if started:
            ray.shutdown()
