"""Talking to a served ``moduseg`` model with ``tritonclient``, and ``bench serve``.

``segment_http`` / ``segment_grpc`` are the client example of
docs/guides/serving.md as functions; ``bench_streams`` runs N concurrent clients, each
sending the frames of a video, and reads the server's own queue and compute
times from its metrics endpoint.
"""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..runtime.runners import tritonclient_module

OUTPUTS = ("label_map", "class", "confidence", "box", "class_names")
STREAM_OUTPUTS = OUTPUTS + ("track_id", "keyframe")
MODEL = "moduseg"
STREAM_MODEL = "moduseg_stream"


def connect(url: str, protocol: str = "http", timeout_s: float = 600.0):
    """A client; HTTP timeouts raised from 60 s, as a loaded CPU server is slow."""
    mod = tritonclient_module(protocol)
    if protocol == "grpc":
        return mod.InferenceServerClient(url)
    return mod.InferenceServerClient(url, connection_timeout=timeout_s, network_timeout=timeout_s)


def segment(client, image: np.ndarray, protocol: str = "http") -> dict[str, np.ndarray]:
    """One RGB uint8 frame -> {label_map, class, confidence, box, class_names} from the
    server. ``class_names`` (a list of str) are the names the label values index, from
    the bank that answered (after a hot-swap: the new bank's)."""
    mod = tritonclient_module(protocol)
    inp = mod.InferInput("image", list(image.shape), "UINT8")
    inp.set_data_from_numpy(np.ascontiguousarray(image))
    res = client.infer(MODEL, [inp], outputs=[mod.InferRequestedOutput(n) for n in OUTPUTS])
    return _decoded({n: res.as_numpy(n) for n in OUTPUTS})


def _decoded(out: dict) -> dict:
    """``class_names`` as a list of str (Triton returns bytes)."""
    if "class_names" in out:
        out["class_names"] = [n.decode() if isinstance(n, bytes) else str(n)
                              for n in np.asarray(out["class_names"]).ravel().tolist()]
    return out


def segment_in_stream(client, image: np.ndarray, stream_id: int, *, start: bool = False,
                      end: bool = False, protocol: str = "http") -> dict[str, np.ndarray]:
    """One frame of stream ``stream_id`` (a Triton sequence, id >= 1) through
    ``moduseg_stream``: ``start`` on its first frame, ``end`` on its last. The
    server keeps the stream's state between its frames."""
    mod = tritonclient_module(protocol)
    if int(stream_id) < 1:
        raise InputError(f"a stream id must be an integer >= 1, got {stream_id!r}")
    inp = mod.InferInput("image", [1, *image.shape], "UINT8")
    inp.set_data_from_numpy(np.ascontiguousarray(image)[None])
    res = client.infer(STREAM_MODEL, [inp],
                       outputs=[mod.InferRequestedOutput(n) for n in STREAM_OUTPUTS],
                       sequence_id=int(stream_id), sequence_start=bool(start),
                       sequence_end=bool(end))
    return _decoded({n: res.as_numpy(n)[0] for n in STREAM_OUTPUTS})


# -- metrics ---------------------------------------------------------------------------

_LINE = re.compile(r'^(nv_inference_\w+)\{([^}]*)\}\s+([0-9.eE+-]+)$')


def read_metrics(url: str) -> dict[tuple[str, str], float]:
    """{(metric, model): value} for the nv_inference_* counters of the metrics endpoint."""
    with urllib.request.urlopen(url, timeout=10) as r:
        return parse_metrics(r.read().decode())


def parse_metrics(text: str) -> dict[tuple[str, str], float]:
    """Prometheus text -> {(metric, model): value}, summed over other labels."""
    out: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        m = _LINE.match(line.strip())
        if m:
            model = re.search(r'model="([^"]+)"', m.group(2))
            key = (m.group(1), model.group(1) if model else "")
            out[key] = out.get(key, 0.0) + float(m.group(3))
    return out


def per_request_ms(before, after, model: str) -> dict[str, float]:
    """Mean queue / compute times per request of ``model`` between two metric reads."""
    def delta(name):
        return after.get((name, model), 0.0) - before.get((name, model), 0.0)
    n = delta("nv_inference_request_success")
    execs = delta("nv_inference_exec_count")
    if n <= 0:
        return {}
    return {"requests": n, "executions": execs,
            "avg_batch": (delta("nv_inference_count") / execs) if execs else 0.0,
            "queue_ms": delta("nv_inference_queue_duration_us") / n / 1e3,
            "compute_input_ms": delta("nv_inference_compute_input_duration_us") / n / 1e3,
            "compute_infer_ms": delta("nv_inference_compute_infer_duration_us") / n / 1e3,
            "compute_output_ms": delta("nv_inference_compute_output_duration_us") / n / 1e3,
            "request_ms": delta("nv_inference_request_duration_us") / n / 1e3}


def process_tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (the server and its Python stubs)."""
    import psutil

    try:
        p = psutil.Process(pid)
        procs = [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for q in procs:
        try:
            total += q.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


# -- bench serve --------------------------------------------------------------------------

@dataclass
class StreamResult:
    latencies_ms: list[float] = field(default_factory=list)
    keyframes: int = 0
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0


def read_frames(video: str, max_frames: int) -> list[np.ndarray]:
    import cv2

    from ..io import opencv_path
    from ..text import printable

    frames = []
    with opencv_path(video) as cv_video:          # a non-UTF-8 name would crash OpenCV
        cap = cv2.VideoCapture(cv_video)
        if not cap.isOpened():
            raise InputError(f"cannot open the video {printable(video)}; pass a readable "
                             f"video file")
        try:
            while len(frames) < max_frames:
                ok, bgr = cap.read()
                if not ok:
                    break
                frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        finally:
            cap.release()
    if not frames:
        raise InputError(f"the video {printable(video)} has no readable frame")
    return frames


def run_streams(url: str, protocol: str, frames: list[np.ndarray], streams: int,
                timeout_s: float = 3600.0, sequences: bool = False,
                first_id: int = 1) -> list[StreamResult]:
    """``streams`` concurrent clients, each with its own connection, sending every frame.

    ``sequences``: each client is one stream of ``moduseg_stream`` (its own
    sequence id from ``first_id``, START on the first frame, END on the last).
    """
    results = [StreamResult() for _ in range(streams)]
    start = threading.Barrier(streams)

    def worker(k):
        client = connect(url, protocol)
        res = results[k]
        start.wait()
        t0 = time.perf_counter()
        for i, f in enumerate(frames):
            if time.perf_counter() - t0 > timeout_s:
                res.errors.append("stopped: time limit")
                break
            t = time.perf_counter()
            try:
                if sequences:
                    out = segment_in_stream(client, f, first_id + k, start=i == 0,
                                            end=i == len(frames) - 1, protocol=protocol)
                    res.keyframes += int(out["keyframe"][0])
                else:
                    segment(client, f, protocol)
            except Exception as e:  # noqa: BLE001 - counted and reported
                res.errors.append(str(e).splitlines()[0])
                continue
            res.latencies_ms.append((time.perf_counter() - t) * 1e3)
        res.wall_s = time.perf_counter() - t0
        client.close()

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def summarize(results: list[StreamResult], wall_s: float) -> dict:
    lat = np.array([v for r in results for v in r.latencies_ms], np.float64)
    ok = len(lat)
    q = (lambda p: float(np.percentile(lat, p))) if ok else (lambda p: float("nan"))
    errors = [e for r in results for e in r.errors]
    return {"streams": len(results), "frames": ok, "errors": len(errors),
            "first_error": errors[0] if errors else "",
            "p50_ms": q(50), "p90_ms": q(90), "p95_ms": q(95), "p99_ms": q(99),
            "keyframe_rate": (sum(r.keyframes for r in results) / ok) if ok else 0.0,
            "fps": ok / wall_s if wall_s > 0 else 0.0,
            "fps_per_stream": [len(r.latencies_ms) / r.wall_s if r.wall_s else 0.0
                               for r in results]}
