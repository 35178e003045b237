"""The frame loop of ``moduseg segment``: frames from a source, through the
segmenter, into the run writer, with decode and write overlapped.

Decoding and writing run in their own threads with bounded queues, so on
a video the CPU never waits for I/O while the models are busy (OpenCV and
ONNX Runtime release the GIL).
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from ..errors import ModuSegError
from ..text import printable
from .run import RunSummary, RunWriter
from .sources import (LIVE_KINDS, VIDEO_KINDS, Frame, count_frames, input_kind, iter_frames,
                      video_info)


def run_segment(seg, input_spec: str, out: str | Path, *, max_frames: int | None = None,
                overlays: bool = True, progress: bool = True, shard=None,
                results=None, watcher=None, extra_sinks=(), temporal=None,
                show: bool = False, reconnect: int | None = None,
                say: Callable[[str], None] | None = None,
                opacity: float | None = None) -> RunSummary:
    """Segment an image, folder, video, camera or stream URL into ``out``: the one call
    the CLI makes.

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
    ``temporal`` (True/False: ``--temporal on|off``, with the settings of the
    configuration's ``temporal`` section; or a ``temporal.TemporalConfig``; None = on)
    applies to videos, cameras and streams: the temporal path, or with
    ``enabled=False`` the per-frame results; images and folders are always per frame.

    A camera or stream URL is live: its frames are read as they come and, when
    the segmenter falls behind, the oldest waiting frame is dropped (counted),
    so each frame's latency (read to result) stays bounded; ``max_frames``
    counts segmented frames. A dropped stream is reopened up to ``reconnect``
    times (``netstream``), each attempt said on the console (``say``).
    ``show``: each overlay also appears in a window (``app.display``); closing
    it ends the run with the frames done so far.
    ``opacity``: the class colours' weight in the overlays (default ``render.ALPHA``).
    """
    import time
    from dataclasses import replace

    from tqdm import tqdm

    from ..temporal import TemporalConfig, TemporalSegmenter
    from ..timing import StageTimer

    kind = input_kind(input_spec)
    if not isinstance(temporal, TemporalConfig):
        temporal = TemporalConfig.from_config(seg, enabled=temporal is None or bool(temporal))
    live = kind in LIVE_KINDS and results is None
    out = Path(out)
    bar = tqdm(total=None, desc="segment", unit="frame", disable=not progress)
    say = say or bar.write
    stream = None
    if kind == "stream":
        from .netstream import DEFAULT_RETRIES, StreamReader
        stream = StreamReader(input_spec, say=say,
                              retries=DEFAULT_RETRIES if reconnect is None else reconnect)
        stream.open()
        fps = stream.fps
    else:
        fps = video_info(input_spec)[0] if kind in VIDEO_KINDS else 25.0
    total = count_frames(input_spec, max_frames, shard)
    bar.reset(total=total)
    cfg = seg.full_config.to_dict() if hasattr(seg, "full_config") else {}
    unknown = bool(getattr(getattr(seg, "config", None), "unknown", 0))
    try:
        writer = RunWriter(out, seg.bank.class_names, cfg, kind=kind, input_spec=input_spec,
                           fps=fps, total=total, overlays=overlays,
                           background_index=seg.bank.background_index, unknown=unknown,
                           extra_sinks=extra_sinks, opacity=opacity)
    except BaseException:
        if stream is not None:
            stream.close()
        bar.close()
        raise
    if kind in VIDEO_KINDS and temporal.enabled and results is None:
        # a live source must not wait for a keyframe: its pipeline runs in a worker
        seg = TemporalSegmenter(seg, replace(temporal, async_keyframes=live))
        writer.temporal_config = seg.config.to_dict()
    captured: dict[int, float] = {}     # frame index -> when it left the source
    latency: dict[int, float] = {}      # live sources: capture -> result, ms
    stop = threading.Event()
    window = None
    if show:
        from .display import LiveWindow
        window = LiveWindow(f"moduseg: {input_spec}")

    def on_error(path, err):
        writer.skip(path, err)
        bar.write(f"skipped: {printable(err)}")

    def timed(frames):
        for f in frames:
            captured[f.index] = f.captured or time.perf_counter()
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
            ms = latency.pop(frame.index, None)
            writer.add(frame, res, ms)
            if window is not None and frame.image is not None and not stop.is_set():
                ov = writer.overlay(frame, res)
                caption = frame.name + (f", {ms:.0f} ms" if ms is not None else "")
                if not window.show(ov, caption):
                    say("window closed: ending the run")
                    stop.set()
        bar.update(1)

    try:
        if results is None:
            # a live source is read until max_frames frames were segmented (some are
            # dropped on the way); a file gives its first max_frames
            frames = iter_frames(input_spec, None if live else max_frames, shard,
                                 on_error=on_error, stream=stream)
            counts: dict = {}
            run_overlapped(timed(frames), infer, write, live=live, stop=stop, counts=counts,
                           limit=max_frames if live else None)
            writer.note_live(dropped=counts.get("dropped", 0),
                             reconnects=stream.stats.reconnects if stream else None)
        else:
            for frame, res in results:
                if stop.is_set():
                    break
                write(frame, res)
        summary = writer.finish()
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
        if isinstance(seg, TemporalSegmenter):
            seg.close()
        if window is not None:
            window.close()
        if stream is not None:
            stream.close()
    return summary


_DONE = object()


def run_overlapped(frames: Iterator[Frame], infer: Callable[[Frame], object],
                   write: Callable[[Frame, object], None], depth: int = 4, *,
                   live: bool = False, stop: threading.Event | None = None,
                   counts: dict | None = None, limit: int | None = None) -> int:
    """Decode, infer and write with a bounded queue on each side; returns the frames
    done (``counts["dropped"]``: live frames dropped).

    ``live`` (a camera or stream): the decoder never waits; one frame waits for
    the segmenter, and a newer frame replaces it (the older one is dropped), so
    a slow segmenter works on fresh frames instead of an ever older backlog.
    ``stop``: set it to end the run early (the frames in flight are finished);
    ``limit``: stop after that many frames were inferred.
    """
    q_in: queue.Queue = queue.Queue(maxsize=1 if live else depth)
    q_out: queue.Queue = queue.Queue(maxsize=depth)
    errors: list[BaseException] = []
    stop = stop or threading.Event()
    dropped = [0]

    def decode():
        try:
            for f in frames:
                if errors or stop.is_set():
                    break
                if not live:
                    q_in.put(f)
                    continue
                while True:
                    try:
                        q_in.put_nowait(f)
                        break
                    except queue.Full:
                        try:
                            q_in.get_nowait()       # the older frame is dropped
                            dropped[0] += 1
                        except queue.Empty:
                            pass
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
            if f is _DONE or errors or stop.is_set():
                break
            q_out.put((f, infer(f)))
            n += 1
            if limit is not None and n >= limit:
                stop.set()
                break
    finally:
        q_out.put(_DONE)
        tw.join()
        while td.is_alive():           # unblock a decoder waiting on a full queue
            try:
                q_in.get_nowait()
            except queue.Empty:
                pass
            td.join(timeout=0.05)
    if counts is not None:
        counts["dropped"] = dropped[0]
    if errors:
        raise errors[0]
    return n
