"""Run a task's per-image work as Ray Data ``map_batches`` on an actor pool.

Each actor calls ``task.setup()`` once (model sessions load once per actor)
and then maps item keys. Ray Data's actor pools are restartable and retry
their tasks by default (``max_restarts=-1``, ``max_task_retries=-1``), so a
killed worker costs a retry, not the job (tests/test_scale_ray_engine.py kills one). Results come back in item order (``preserve_order``).
"""

from __future__ import annotations

import math
import pickle
import queue
import socket
import threading
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
    # bounded waits: for the actors' resources to be granted, for Ray to be reachable, and
    # for the first result (model loading included) / between two results
    schedule_timeout_s: float = 60.0
    connect_timeout_s: float = 10.0
    result_timeout_s: float = 1800.0

    def check(self) -> "RayOptions":
        if not isinstance(self.workers, int) or self.workers < 1:
            raise InputError(f"--workers {self.workers}: need at least 1")
        if self.workers > MAX_WORKERS:
            raise InputError(f"--workers {self.workers}: at most {MAX_WORKERS}")
        if self.cpus_per_worker is not None and not (
                math.isfinite(self.cpus_per_worker) and 0 < self.cpus_per_worker <= MAX_CPUS):
            raise InputError(f"--cpus-per-worker {self.cpus_per_worker}: must be a number "
                             f"above 0 (and at most {MAX_CPUS}), e.g. --cpus-per-worker 1")
        if not (math.isfinite(self.gpus_per_worker) and 0 <= self.gpus_per_worker <= MAX_GPUS):
            raise InputError(f"--num-gpus-per-worker {self.gpus_per_worker}: must be a number "
                             f">= 0 (0: CPU actors), e.g. --num-gpus-per-worker 1")
        if self.batch_size < 1:
            raise InputError(f"batch size {self.batch_size}: need at least 1")
        for name in ("schedule_timeout_s", "connect_timeout_s", "result_timeout_s"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise InputError(f"{name} {v}: must be a positive number of seconds")
        return self


MAX_WORKERS, MAX_CPUS, MAX_GPUS = 4096, 1024.0, 64.0


def check_fits(opts: RayOptions, cpus: float, nodes: list[dict]) -> None:
    """Refuse, before anything is submitted, an actor pool the cluster can never run.

    ``nodes`` are the alive nodes' total resources (``ray.nodes()``'s
    ``Resources``). Each actor must fit on one node, all ``workers`` actors
    together, and ``CPU_HEADROOM`` must stay free for Ray Data's own tasks.
    """
    gpus = opts.gpus_per_worker
    where = "the Ray cluster" if opts.address else "this machine's local Ray instance"
    total_cpu = sum(float(n.get("CPU", 0)) for n in nodes)
    total_gpu = sum(float(n.get("GPU", 0)) for n in nodes)
    if gpus > 0 and total_gpu == 0:
        raise InputError(f"--num-gpus-per-worker {gpus:g}: {where} has no GPU; use "
                         f"--num-gpus-per-worker 0 (CPU actors) or a cluster with GPUs")
    if gpus > 0 and not any(float(n.get("GPU", 0)) >= gpus for n in nodes):
        most = max(float(n.get("GPU", 0)) for n in nodes)
        raise InputError(f"--num-gpus-per-worker {gpus:g}: no node of {where} has that many "
                         f"GPUs (at most {most:g} on one node); ask for at most {most:g}")
    if not any(float(n.get("CPU", 0)) >= cpus for n in nodes):
        most = max([float(n.get("CPU", 0)) for n in nodes], default=0.0)
        raise InputError(f"--cpus-per-worker {cpus:g}: no node of {where} has that many CPUs "
                         f"(at most {most:g} on one node); ask for at most {most:g}")
    fit = sum(min(int(float(n.get("CPU", 0)) // cpus),
                  int(float(n.get("GPU", 0)) // gpus) if gpus > 0 else MAX_WORKERS)
              for n in nodes)
    need = opts.workers * cpus + CPU_HEADROOM
    if fit < opts.workers or need > total_cpu + 1e-9:
        raise InputError(
            f"--workers {opts.workers} x --cpus-per-worker {cpus:g}"
            + (f" x --num-gpus-per-worker {gpus:g}" if gpus else "")
            + f" does not fit {where} ({total_cpu:g} CPUs"
            + (f", {total_gpu:g} GPUs" if gpus else "")
            + f"; {CPU_HEADROOM:g} CPU stays free for Ray Data's own tasks): use fewer "
              f"--workers or a smaller --cpus-per-worker")


def probe_address(address: str | None, timeout_s: float) -> None:
    """Fail in seconds, not minutes, on a ``--ray-address`` nothing listens on (Ray's
    own client retries for minutes)."""
    if not address or address == "auto" or address.startswith("local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise InputError(f"--ray-address {address!r}: expected HOST:PORT (as 'ray start "
                         f"--head' prints it, e.g. 10.0.0.5:6379) or auto")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as e:
        raise InputError(f"--ray-address {address}: nothing answers there "
                         f"({e.strerror or e}); start the head with 'ray start --head' and "
                         f"pass the address it prints, or leave --ray-address out for a "
                         f"local instance") from None


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
    probe_address(opts.address, opts.connect_timeout_s)
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


def alive_nodes(ray) -> list[dict]:
    return [dict(n.get("Resources", {})) for n in ray.nodes() if n.get("Alive", n.get("alive"))]


def wait_schedulable(ray, opts: RayOptions, cpus: float) -> None:
    """Ask the cluster for the whole pool's resources (a placement group), wait at
    most ``schedule_timeout_s`` for them, and give them back: a pool that cannot be
    placed now (other jobs hold the resources) is one line, not an endless wait."""
    from ray.util.placement_group import placement_group, remove_placement_group
    bundle = {"CPU": cpus, **({"GPU": opts.gpus_per_worker} if opts.gpus_per_worker else {})}
    pg = placement_group([bundle] * opts.workers, strategy="PACK")
    try:
        ready, _ = ray.wait([pg.ready()], timeout=opts.schedule_timeout_s)
        if not ready:
            raise InputError(
                f"Ray could not start {opts.workers} worker(s) of {cpus:g} CPU"
                + (f" + {opts.gpus_per_worker:g} GPU" if opts.gpus_per_worker else "")
                + f" within {opts.schedule_timeout_s:g} s (the cluster's resources are "
                  f"taken or too small); use fewer --workers, smaller --cpus-per-worker / "
                  f"--num-gpus-per-worker, or free the cluster")
    finally:
        remove_placement_group(pg)


def _bounded(it: Iterator, timeout_s: float, what: str) -> Iterator:
    """Items of ``it`` (consumed in a thread); a wait longer than ``timeout_s`` for
    the next one is an error instead of a hang."""
    q: queue.Queue = queue.Queue(maxsize=4)
    done = object()
    stop = threading.Event()

    def pump():
        try:
            for x in it:
                while not stop.is_set():
                    try:
                        q.put((None, x), timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((None, done))
        except BaseException as e:     # surfaced in the caller's thread
            q.put((e, None))

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    try:
        while True:
            try:
                err, x = q.get(timeout=timeout_s)
            except queue.Empty:
                raise InputError(f"no result from the Ray workers for {timeout_s:g} s "
                                 f"({what}); check the cluster ('ray status') and its "
                                 f"logs") from None
            if err is not None:
                raise err
            if x is done:
                return
            yield x
    finally:
        stop.set()


def _stream(opts: RayOptions, items: list[dict], actor, task, batch_size: int, what: str,
            progress=None) -> Iterator[tuple[int, object]]:
    """Run ``actor`` over ``items`` on a checked, bounded actor pool and yield its
    ``(position, result)`` rows in order (the one place ``run`` and ``run_ordered``
    connect, check the pool against the cluster, submit and shut down)."""
    ray = import_ray()
    started = connect(opts)
    try:
        cpus = actor_cpus(opts, float(ray.cluster_resources().get("CPU", 1.0)))
        check_fits(opts, cpus, alive_nodes(ray))
        wait_schedulable(ray, opts, cpus)
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = False
        ds = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
        ds = ds.map_batches(
            actor, fn_constructor_kwargs={"task": task}, batch_size=batch_size,
            batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=opts.workers),
            num_cpus=cpus, num_gpus=opts.gpus_per_worker or None,
            runtime_env={"env_vars": blas_env()})
        batches = ds.iter_batches(batch_size=1, batch_format="numpy", prefetch_batches=0)
        for batch in _bounded(batches, opts.result_timeout_s, what):
            for pos, blob in zip(batch["position"], batch["result"]):
                yield int(pos), pickle.loads(blob)
                if progress is not None:
                    progress(1)
    finally:
        if started:
            ray.shutdown()


def run(task, keys: list[str], opts: RayOptions, progress=None) -> Iterator[tuple[int, object]]:
    """``(position, result)`` for every key, in order; ``progress(n)`` after each.

    The pool is checked against the cluster before anything is submitted
    (``check_fits``, then ``wait_schedulable``) and every wait is bounded.
    """
    opts.check()
    items = [{"position": i, "key": k} for i, k in enumerate(keys)]
    yield from _stream(opts, items, _Actor, task, opts.batch_size, "--engine ray", progress)


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
    """``(frame position, result)`` of one ordered item (a video), computed by one
    actor (its frames depend on each other: never split) and streamed back in order
    as the actor produces them; the same checks and bounded waits as ``run``."""
    import dataclasses

    opts = dataclasses.replace(opts, workers=1).check()
    yield from _stream(opts, [{"position": 0, "key": key}], _OrderedActor, task, 1,
                       "--engine ray, a video", progress)
