"""``moduseg export triton``, ``moduseg serve`` and ``moduseg bench serve``."""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path

import click

from ..errors import InputError


def _options(variant, platform, max_queue_delay_us, preferred_batch_sizes, frame_size,
             engine_dir, python_env, instances, pipeline_instances, stream_instances=2,
             stream_path="temporal", settings=()):
    from ..settings import parse_overrides
    from .repository import TritonOptions, parse_batch_sizes, parse_frame_size, \
        python_env_default

    parse_overrides(settings)          # a malformed --set stops here, before any server starts

    return TritonOptions(variant=variant, platform=platform,
                         max_queue_delay_us=max_queue_delay_us,
                         preferred_batch_sizes=parse_batch_sizes(preferred_batch_sizes),
                         frame_hw=parse_frame_size(frame_size), engine_dir=engine_dir,
                         python_env=python_env or python_env_default(),
                         instances=instances,
                         pipeline_instances=pipeline_instances,
                         stream_instances=stream_instances,
                         stream_path=stream_path, settings=tuple(settings)).validate()


def repository_options(f):
    opts = [
        click.option("--max-queue-delay-us", type=int, default=2000, show_default=True,
                     help="Backbone dynamic batching: longest wait for a fuller batch."),
        click.option("--preferred-batch-sizes", default="4,8", show_default=True,
                     help="Backbone dynamic batching: preferred batch sizes (the largest is "
                          "max_batch_size)."),
        click.option("--instances", type=int, default=1, show_default=True,
                     help="Instances of each network model and of the bank model."),
        click.option("--pipeline-instances", type=int, default=1, show_default=True,
                     help="Instances of the 'moduseg' BLS model: frames in flight at once "
                          "(what lets the backbone batch across streams)."),
        click.option("--stream-instances", type=int, default=2, show_default=True,
                     help="Instances of the 'moduseg_stream' model (one Triton sequence per "
                          "camera, its state kept on one instance): streams computed at once."),
        click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
                     help="Override a setting of the bank's configuration in every served "
                          "model, e.g. --set temporal.max_interval=6."),
        click.option("--python-env", default=None, type=click.Path(),
                     help="EXECUTION_ENV_PATH of the Python models (default: this "
                          "interpreter's environment, which must have onnxruntime and faiss)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


@click.command("triton")
@click.option("--bank", "bank_path", required=True, type=click.Path(), help="Bank file (.npz).")
@click.option("--out", "out_dir", required=True, type=click.Path(),
              help="Folder of the model repository (replaced if it holds one).")
@click.option("--variant", type=click.Choice(["cpu", "gpu"]), default="cpu", show_default=True,
              help="cpu: every model a Python-backend model running ONNX Runtime; gpu: the "
                   "networks on Triton's TensorRT or ONNX Runtime backend.")
@click.option("--platform", type=click.Choice(["onnxruntime_onnx", "tensorrt_plan"]),
              default="onnxruntime_onnx", show_default=True, help="gpu variant: network platform.")
@click.option("--frame-size", default="480x360", show_default=True,
              help="gpu variant: frame size the SAM encoder graph is cut for (WxH).")
@click.option("--engine-dir", default=None, type=click.Path(),
              help="tensorrt_plan: folder with backbone.plan, sam_encoder.plan, "
                   "sam_decoder.plan.")
@click.option("--home", default=None, type=click.Path(), help="Model home.")
@repository_options
def export_triton(bank_path, out_dir, variant, platform, frame_size, engine_dir, home,
                  max_queue_delay_us, preferred_batch_sizes, instances, pipeline_instances,
                  stream_instances, settings, python_env):
    """Write a Triton Inference Server model repository for a bank."""
    from .repository import write_repository

    from .repository import MODELS

    opts = _options(variant, platform, max_queue_delay_us, preferred_batch_sizes, frame_size,
                    engine_dir, python_env, instances, pipeline_instances, stream_instances,
                    settings=settings)
    out = write_repository(bank_path, out_dir, opts, home)
    click.echo(f"model repository -> {out} ({variant} variant; models: {', '.join(MODELS)})")


def preflight(bank_path, ports, settings=()) -> None:
    """A bad bank, a bad --set or a busy port: one line, before anything is generated or
    started."""
    from ..bank.segmenter import load_bank_config
    from .server import check_port_free

    load_bank_config(bank_path, None, settings)
    for what, port in (("--http-port", ports.http), ("--grpc-port", ports.grpc),
                       ("--metrics-port", ports.metrics)):
        check_port_free(ports.host, port, what)


def prepare_server(bank_path, home, ports, opts, ready_timeout_s=600.0, workdir=None):
    """Generate the repository into the cache; the server to ``start()`` on it.

    ``workdir`` (default: a folder per bank under the model home) receives the
    repository, the backend folder and the server log.
    """
    from .repository import write_repository
    from .server import TritonServer, find_tritonserver, serve_cache

    preflight(bank_path, ports, opts.settings)
    install = find_tritonserver()
    cache = Path(workdir) if workdir else serve_cache(bank_path, home)
    repo = write_repository(bank_path, cache / "repository", opts, home)
    return TritonServer(repo, ports, cache, install, ready_timeout_s)


def _ports(host, http_port, grpc_port, metrics_port):
    from .server import Ports
    if len({http_port, grpc_port, metrics_port}) != 3:
        raise InputError(f"--http-port, --grpc-port and --metrics-port must differ, got "
                         f"{http_port}, {grpc_port}, {metrics_port}")
    return Ports(http_port, grpc_port, metrics_port, host)


@click.command("serve")
@click.option("--bank", "bank_path", required=True, type=click.Path(), help="Bank file (.npz).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: every interface).")
@click.option("--http-port", type=int, default=8000, show_default=True)
@click.option("--grpc-port", type=int, default=8001, show_default=True)
@click.option("--metrics-port", type=int, default=8002, show_default=True)
@click.option("--home", default=None, type=click.Path(), help="Model home.")
@click.option("--workdir", default=None, type=click.Path(),
              help="Folder for the generated repository and the server log (default: "
                   "serve/<bank sha256> under the model home).")
@click.option("--temporal", type=click.Choice(["on", "off"]), default="on", show_default=True,
              help="moduseg_stream: each stream on the temporal path (keyframes, "
                   "propagation, class memory) or every frame on its own.")
@repository_options
def serve(bank_path, host, http_port, grpc_port, metrics_port, home, workdir, temporal,
          max_queue_delay_us, preferred_batch_sizes, instances, pipeline_instances,
          stream_instances, settings, python_env):
    """Serve a bank with Triton Inference Server (CPU variant) until Ctrl-C or SIGTERM."""
    ports = _ports(host, http_port, grpc_port, metrics_port)
    opts = _options("cpu", "onnxruntime_onnx", max_queue_delay_us, preferred_batch_sizes,
                    "480x360", None, python_env, instances, pipeline_instances,
                    stream_instances, "temporal" if temporal == "on" else "per_frame",
                    settings)
    stop = threading.Event()
    starting = [True]

    def on_signal(signum, frame):
        stop.set()
        if starting[0]:                 # still loading: unwind, the finally stops the server
            raise KeyboardInterrupt

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    server = None
    try:
        preflight(bank_path, ports, opts.settings)
        click.echo("generating the model repository and starting tritonserver ...", err=True)
        server = prepare_server(bank_path, home, ports, opts, workdir=workdir)
        server.start()
        starting[0] = False
        click.echo(f"serving models 'moduseg' (frames) and 'moduseg_stream' (one Triton "
                   f"sequence per camera) from {server.repository}\n"
                   f"  HTTP     {ports.http_url}\n  gRPC     {ports.grpc_url}\n"
                   f"  metrics  {ports.metrics_url}\n  log      {server.log_path}\n"
                   f"Ctrl-C or SIGTERM stops it.")
        sys.stdout.flush()
        while not stop.is_set() and server.alive():
            stop.wait(0.5)
        if not server.alive() and not stop.is_set():
            raise InputError(f"tritonserver stopped on its own; see {server.log_path}")
    finally:
        if server is not None:
            server.stop()
            click.echo("tritonserver stopped", err=True)
        for s, h in old.items():
            signal.signal(s, h)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


@click.command("serve")
@click.option("--video", required=True, type=click.Path(), help="Video whose frames each "
              "stream sends.")
@click.option("--streams", default="1,2,4", show_default=True,
              help="Concurrent client counts to measure, e.g. 1,2,4.")
@click.option("--frames", type=int, default=20, show_default=True,
              help="Frames per stream (the first N of the video).")
@click.option("--bank", "bank_path", default=None, type=click.Path(),
              help="Start a server for this bank on free loopback ports.")
@click.option("--url", default=None, help="Use a running server instead, e.g. 127.0.0.1:8000 "
              "(HTTP) or :8001 with --protocol grpc.")
@click.option("--metrics-url", default=None, help="With --url: its metrics endpoint.")
@click.option("--protocol", type=click.Choice(["http", "grpc"]), default="http",
              show_default=True)
@click.option("--in-process/--no-in-process", default=True, show_default=True,
              help="Also time the in-process Segmenter on the same frames (needs --bank).")
@click.option("--model", "model", type=click.Choice(["moduseg_stream", "moduseg"]),
              default="moduseg_stream", show_default=True,
              help="moduseg_stream: each client is a camera (a Triton sequence with its own "
                   "state); moduseg: independent frames.")
@click.option("--temporal", "temporal", type=click.Choice(["on", "off", "compare"]),
              default="on", show_default=True,
              help="With --bank: each served stream on the temporal path (keyframes, "
                   "propagation, class memory) or per frame; compare: both on one server, "
                   "alternated per stream count (moduseg_stream on the temporal path vs the "
                   "moduseg model, every frame through the pipeline).")
@click.option("--home", default=None, type=click.Path(), help="Model home.")
@click.option("--out", "out_json", default=None, type=click.Path(), help="Write results JSON.")
@repository_options
def bench_serve(video, streams, frames, bank_path, url, metrics_url, protocol, in_process,
                model, temporal, home, out_json, max_queue_delay_us, preferred_batch_sizes,
                instances, pipeline_instances, stream_instances, settings, python_env):
    """N concurrent clients, each sending the frames of VIDEO: latency, fps, server times."""
    from ..io import write_json
    from .client import per_request_ms, process_tree_rss_mb, read_frames, read_metrics, \
        run_streams, summarize
    from .repository import MODELS
    from .server import Ports, free_ports

    try:
        counts = [int(s) for s in streams.split(",") if s.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise InputError(f"--streams must be positive integers such as 1,2,4, got {streams!r}")
    if frames < 1:
        raise InputError(f"--frames must be >= 1, got {frames}")
    if not url and not bank_path:
        raise InputError("bench serve needs --bank (it starts a server) or --url (a running one)")
    compare = temporal == "compare"
    if compare and (model != "moduseg_stream" or url):
        raise InputError("--temporal compare starts its own server (--bank) and alternates "
                         "the moduseg_stream model (temporal path) with the moduseg model "
                         "(every frame through the pipeline); drop --model/--url")
    images = read_frames(video, frames)
    server = None
    # SIGTERM unwinds like Ctrl-C, so the finally below stops the server it started
    old_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    sequences = model == "moduseg_stream"
    stream_path = "temporal" if temporal in ("on", "compare") else "per_frame"
    # (label, sequences): compare alternates the temporal streams with per-frame requests
    modes = [("temporal", True), ("per-frame", False)] if compare else \
        [(stream_path if sequences else "frames", sequences)]
    report: dict = {"video": str(video), "frames_per_stream": len(images), "model": model,
                    "stream_path": stream_path if sequences else None, "runs": []}
    if compare:
        report["compare"] = ("moduseg_stream (temporal path, one Triton sequence per stream) "
                             "vs moduseg (each frame through the whole pipeline), alternated "
                             "on one server")
    try:
        if not url:
            ports = Ports(*free_ports())
            opts = _options("cpu", "onnxruntime_onnx", max_queue_delay_us,
                            preferred_batch_sizes, "480x360", None, python_env, instances,
                            pipeline_instances, stream_instances, stream_path, settings)
            server = prepare_server(bank_path, home, ports, opts)
            server.start()
            url = ports.grpc_url if protocol == "grpc" else ports.http_url
            metrics_url = ports.metrics_url
        for _, seq in modes:                                              # warm-up
            run_streams(url, protocol, images[:1], 1, sequences=seq, first_id=1)
        next_id = 2
        for k, n in enumerate(counts):
            for label, seq in (modes if k % 2 == 0 else modes[::-1]):
                before = read_metrics(metrics_url) if metrics_url else {}
                t0 = time.perf_counter()
                results = run_streams(url, protocol, images, n, sequences=seq,
                                      first_id=next_id)
                next_id += n
                wall = time.perf_counter() - t0
                row = summarize(results, wall)
                row["streams"], row["mode"] = n, label
                # the whole run's time over the frames each stream sent (keyframes included)
                row["amortised_ms"] = wall * 1e3 / len(images)
                if metrics_url:
                    after = read_metrics(metrics_url)
                    row["server"] = {m: per_request_ms(before, after, m) for m in MODELS}
                if server is not None:
                    row["server_rss_mb"] = process_tree_rss_mb(server.proc.pid)
                report["runs"].append(row)
                click.echo(f"{n} stream(s){' ' + label if compare else ''}: {row['frames']} "
                           f"frames, {row['errors']} errors, "
                           f"p50 {row['p50_ms']:.0f} ms, p95 {row['p95_ms']:.0f} ms, "
                           f"p99 {row['p99_ms']:.0f} ms, {row['fps']:.2f} fps "
                           f"({', '.join(f'{v:.2f}' for v in row['fps_per_stream'])} per "
                           f"stream), amortised {row['amortised_ms']:.0f} ms a frame"
                           + (f", keyframes {100 * row['keyframe_rate']:.0f} %"
                              if seq else "")
                           + (f", server RSS {row['server_rss_mb']:.0f} MB"
                              if "server_rss_mb" in row else "")
                           + (f"; first error: {row['first_error']}" if row["errors"] else ""))
                for m, s in row.get("server", {}).items():
                    if s:
                        click.echo(f"    {m:13s} queue {s['queue_ms']:7.1f} ms  compute "
                                   f"{s['compute_infer_ms']:7.1f} ms  per request "
                                   f"(avg batch {s['avg_batch']:.2f})")
    finally:
        if server is not None:
            server.stop()
        signal.signal(signal.SIGTERM, old_term)
    if in_process and bank_path:
        import numpy as np

        from ..bank.segmenter import segmenter_from_bank
        from .sequences import per_frame, stream_factory
        seg = segmenter_from_bank(str(bank_path), home, overrides=tuple(settings),
                                  backend="cpu")
        seg(images[0])
        report["in_process"] = {}
        for label, seq in modes:
            step = stream_factory(stream_path)(seg) if seq else per_frame(seg)
            lat = []
            for im in images:
                t = time.perf_counter()
                step(im)
                lat.append((time.perf_counter() - t) * 1e3)
            row = {"p50_ms": float(np.percentile(lat, 50)),
                   "p90_ms": float(np.percentile(lat, 90)),
                   "amortised_ms": float(np.mean(lat)), "fps": len(lat) / (sum(lat) / 1e3)}
            report["in_process"][label] = row
            click.echo(f"in-process {'stream' if seq else 'Segmenter'}"
                       f"{' ' + label if compare else ''}: p50 {row['p50_ms']:.0f} ms, "
                       f"p90 {row['p90_ms']:.0f} ms, amortised {row['amortised_ms']:.0f} ms, "
                       f"{row['fps']:.2f} fps")
    if out_json:
        write_json(Path(out_json), report)
