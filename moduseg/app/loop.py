"""The frame loop of ``moduseg segment``: frames from a source, through the
segmenter, into the run writer, with decode and write overlapped.

Decoding and writing run in their own threads with bounded queues, so on
a video the CPU never waits for I/O while the models are busy (OpenCV and
ONNX Runtime release the GIL).
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Callable, Iterator

from ..errors import ModuSegError
from ..text import printable
from .run import RunSummary, RunWriter
from .sources import Frame, count_frames, input_kind, iter_frames, video_info


def run_segment(seg, input_spec: str, out: str | Path, *, max_frames: int | None = None,
                overlays: bool = True, progress: bool = True, shard=None,
                results=None, watcher=None, extra_sinks=(), temporal=None) -> RunSummary:
    """Segment an image, folder, video or camera into ``out``: the one call the CLI makes.

    ``seg`` is a ``Segmenter`` (anything with ``bank``, ``full_config`` and
    ``seg(image, timer)``). In a folder an unreadable or truncated image, or a
    frame the pipeline refuses, is reported in one line, listed under
    ``skipped`` in segments.json and skipped; a single image or a run where no
    frame is readable is an error. ``shard`` (``scale.shard.Shard``) takes one
    share of a folder; ``results`` (an iterable of ``(Frame, result or
    Exception)`` in frame order, e.g. from a Ray actor pool) replaces the
    in-process inference. ``watcher`` (``app.hotswap.BankWatcher``) is
    polled before each frame: a changed bank file is used from the next frame.
    ``extra_sinks`` (e.g. ``app.uncertain.UncertainFrames``) get every frame too.
    ``temporal`` (a ``temporal.TemporalConfig``; None = on with its defaults)
    applies to videos and cameras: the temporal path, or with ``enabled=False``
    the per-frame results; images and folders are always per frame.
    """
    import time
    from dataclasses import replace

    from tqdm import tqdm

    from ..temporal import TemporalConfig, TemporalSegmenter
    from ..timing import StageTimer

    kind = input_kind(input_spec)
    temporal = temporal or TemporalConfig()
    live = kind == "camera"
    out = Path(out)
    fps = video_info(input_spec)[0] if kind in ("video", "camera") else 25.0
    total = count_frames(input_spec, max_frames, shard)
    cfg = seg.full_config.to_dict() if hasattr(seg, "full_config") else {}
    unknown = bool(getattr(getattr(seg, "config", None), "unknown", 0))
    writer = RunWriter(out, seg.bank.class_names, cfg, kind=kind, input_spec=input_spec,
                       fps=fps, total=total, overlays=overlays,
                       background_index=seg.bank.background_index, unknown=unknown,
                       extra_sinks=extra_sinks)
    if kind in ("video", "camera") and temporal.enabled and results is None:
        # a live source must not wait for a keyframe: its pipeline runs in a worker
        seg = TemporalSegmenter(seg, replace(temporal, async_keyframes=live))
        writer.temporal_config = seg.config.to_dict()
    captured: dict[int, float] = {}     # frame index -> when it left the source
    latency: dict[int, float] = {}      # live sources: capture -> result, ms
    bar = tqdm(total=total, desc="segment", unit="frame", disable=not progress)

    def on_error(path, err):
        writer.skip(path, err)
        bar.write(f"skipped: {printable(err)}")

    def timed(frames):
        for f in frames:
            captured[f.index] = time.perf_counter()
            yield f

    def infer(frame):
        if watcher is not None:         # between frames: a changed bank file swaps in
            watcher.poll()
        try:
            res = seg(frame.image, StageTimer())
            t0 = captured.pop(frame.index, None)
            if live and t0 is not None:
                latency[frame.index] = (time.perf_counter() - t0) * 1e3
            return res
        except ModuSegError as e:       # one bad frame of a folder fails alone
            if kind != "folder":
                raise
            return e

    def write(frame, res):
        if isinstance(res, Exception):
            on_error(frame.name, res)
        else:
            writer.add(frame, res, latency.pop(frame.index, None))
        bar.update(1)

    try:
        if results is None:
            run_overlapped(timed(iter_frames(input_spec, max_frames, shard,
                                             on_error=on_error)), infer, write)
        else:
            for frame, res in results:
                write(frame, res)
        summary = writer.finish()
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
        if isinstance(seg, TemporalSegmenter):
            seg.close()
    return summary


_DONE = object()


def run_overlapped(frames: Iterator[Frame], infer: Callable[[Frame], object],
                   write: Callable[[Frame, object], None], depth: int = 4) -> int:
    """Decode, infer and write with a bounded queue on each side; returns frames done."""
    q_in: queue.Queue = queue.Queue(maxsize=depth)
    q_out: queue.Queue = queue.Queue(maxsize=depth)
    errors: list[BaseException] = []

    def decode():
        try:
            for f in frames:
                if errors:
                    break
                q_in.put(f)
        except BaseException as e:  # surfaced in the main thread
            errors.append(e)
        finally:
            q_in.put(_DONE)

    def writer():
        while True:
            item = q_out.get()
            if item is _DONE:
                return
            try:
                write(*item)
            except BaseException as e:
                errors.append(e)

    td, tw = threading.Thread(target=decode, daemon=True), threading.Thread(target=writer, daemon=True)
    td.start()
    tw.start()
    n = 0
    try:
        while True:
            f = q_in.get()
            if f is _DONE or errors:
                break
            q_out.put((f, infer(f)))
            n += 1
    finally:
        q_out.put(_DONE)
        tw.join()
        while td.is_alive():           # unblock a decoder waiting on a full queue
            try:
                q_in.get_nowait()
            except queue.Empty:
                pass
            td.join(timeout=0.05)
    if errors:
        raise errors[0]
    return n
