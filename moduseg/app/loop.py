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
from ..timing import StageTimer
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
    from tqdm import tqdm

    kind = input_kind(input_spec)
    temporal = _temporal_config(seg, temporal)
    live = kind in LIVE_KINDS and results is None
    bar = tqdm(total=None, desc="segment", unit="frame", disable=not progress)
    say = say or bar.write
    stream, fps = _open_source(kind, input_spec, reconnect, say)
    total = count_frames(input_spec, max_frames, shard)
    bar.reset(total=total)
    try:
        writer = _open_writer(seg, Path(out), kind, input_spec, fps, total, overlays,
                              extra_sinks, opacity)
    except BaseException:
        if stream is not None:
            stream.close()
        bar.close()
        raise
    seg = _with_temporal(seg, temporal, writer, kind, live, results)
    loop = _FrameLoop(seg, writer, bar, say, kind=kind, live=live, watcher=watcher,
                      window=_open_window(input_spec) if show else None)
    try:
        if results is None:
            loop.run(input_spec, max_frames, shard, stream)
        else:
            loop.replay(results)
        summary = writer.finish()
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
        loop.close()
        if stream is not None:
            stream.close()
    return summary


def _temporal_config(seg, temporal):
    """``temporal`` as a ``TemporalConfig`` (True/False/None: the configuration's
    ``temporal`` section, on unless False)."""
    from ..temporal import TemporalConfig

    if isinstance(temporal, TemporalConfig):
        return temporal
    return TemporalConfig.from_config(seg, enabled=temporal is None or bool(temporal))


def _open_source(kind: str, input_spec: str, reconnect: int | None, say):
    """``(stream or None, fps)``: a stream URL is opened here (its reader is the source)."""
    if kind != "stream":
        return None, (video_info(input_spec)[0] if kind in VIDEO_KINDS else 25.0)
    from .netstream import DEFAULT_RETRIES, StreamReader

    stream = StreamReader(input_spec, say=say,
                          retries=DEFAULT_RETRIES if reconnect is None else reconnect)
    stream.open()
    return stream, stream.fps


def _open_writer(seg, out: Path, kind: str, input_spec: str, fps: float, total, overlays: bool,
                 extra_sinks, opacity) -> RunWriter:
    cfg = seg.full_config.to_dict() if hasattr(seg, "full_config") else {}
    unknown = bool(getattr(getattr(seg, "config", None), "unknown", 0))
    return RunWriter(out, seg.bank.class_names, cfg, kind=kind, input_spec=input_spec,
                     fps=fps, total=total, overlays=overlays,
                     background_index=seg.bank.background_index, unknown=unknown,
                     extra_sinks=extra_sinks, opacity=opacity)


def _with_temporal(seg, temporal, writer: RunWriter, kind: str, live: bool, results):
    """The temporal path around ``seg`` for a video-like source run in process."""
    from dataclasses import replace

    from ..temporal import TemporalSegmenter

    if kind not in VIDEO_KINDS or not temporal.enabled or results is not None:
        return seg
    # a live source must not wait for a keyframe: its pipeline runs in a worker
    seg = TemporalSegmenter(seg, replace(temporal, async_keyframes=live))
    writer.temporal_config = seg.config.to_dict()
    return seg


def _open_window(input_spec: str):
    from .display import LiveWindow

    return LiveWindow(f"moduseg: {input_spec}")


class _FrameLoop:
    """One run's frames: infer (in process) or take given results, write each, keep
    the live latencies, show the overlay window."""

    def __init__(self, seg, writer: RunWriter, bar, say, *, kind: str, live: bool, watcher,
                 window):
        self.seg, self.writer, self.bar, self.say = seg, writer, bar, say
        self.kind, self.live, self.watcher, self.window = kind, live, watcher, window
        self.captured: dict[int, float] = {}     # frame index -> when it left the source
        self.latency: dict[int, float] = {}      # live sources: capture -> result, ms
        self.stop = threading.Event()

    def run(self, input_spec: str, max_frames, shard, stream) -> None:
        """Decode, infer and write overlapped. A live source is read until
        ``max_frames`` frames were segmented (some are dropped on the way); a file
        gives its first ``max_frames``."""
        frames = iter_frames(input_spec, None if self.live else max_frames, shard,
                             on_error=self.on_error, stream=stream)
        counts: dict = {}
        run_overlapped(self.timed(frames), self.infer, self.write, live=self.live,
                       stop=self.stop, counts=counts,
                       limit=max_frames if self.live else None)
        self.writer.note_live(dropped=counts.get("dropped", 0),
                              reconnects=stream.stats.reconnects if stream else None)

    def replay(self, results) -> None:
        """Write ``(Frame, result or Exception)`` pairs inferred elsewhere."""
        for frame, res in results:
            if self.stop.is_set():
                break
            self.write(frame, res)

    def on_error(self, path, err) -> None:
        self.writer.skip(path, err)
        self.bar.write(f"skipped: {printable(err)}")

    def timed(self, frames):
        for f in frames:
            self.captured[f.index] = f.captured or time.perf_counter()
            yield f

    def infer(self, frame):
        if self.watcher is not None:       # between frames: a changed bank file swaps in
            self.watcher.poll()
        try:
            res = self.seg(frame.image, StageTimer())
            t0 = self.captured.pop(frame.index, None)
            if self.live and t0 is not None:
                self.latency[frame.index] = (time.perf_counter() - t0) * 1e3
            return res
        except ModuSegError as e:          # one bad frame of a folder fails alone
            if self.kind != "folder":
                raise
            return e

    def write(self, frame, res) -> None:
        if isinstance(res, Exception):
            self.on_error(frame.name, res)
        else:
            ms = self.latency.pop(frame.index, None)
            self.writer.add(frame, res, ms)
            self.show(frame, res, ms)
        self.bar.update(1)

    def show(self, frame, res, ms) -> None:
        if self.window is None or frame.image is None or self.stop.is_set():
            return
        caption = frame.name + (f", {ms:.0f} ms" if ms is not None else "")
        if not self.window.show(self.writer.overlay(frame, res), caption):
            self.say("window closed: ending the run")
            self.stop.set()

    def close(self) -> None:
        from ..temporal import TemporalSegmenter

        if isinstance(self.seg, TemporalSegmenter):
            self.seg.close()
        if self.window is not None:
            self.window.close()


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
