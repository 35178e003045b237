"""What a run records of the temporal path: per frame (keyframe, reason, track
ids) and per run (keyframe rate, latency p50/p95, temporal consistency).

Only temporal results add anything, so ``--temporal off`` writes exactly the
per-frame records it always did.
"""

from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass, field

import numpy as np

from ..temporal.consistency import ConsistencyMeter
from ..temporal.flow import gray


def is_temporal(result) -> bool:
    return hasattr(result, "temporal_json")


def add_track_ids(records: list[dict], result, class_names: list[str]) -> None:
    """Each segment record gets its ``track_id`` and the track's class."""
    for rec, tid, tl in zip(records, result.track_ids, result.track_labels):
        rec["track_id"] = None if tid is None else int(tid)
        rec["track_class_id"] = int(tl) if tl is not None and tl >= 0 else None
        rec["track_class_name"] = class_names[tl] if tl is not None and 0 <= tl < len(
            class_names) else None


class ConsistencyWorker:
    """Temporal consistency measured in its own thread at a lower CPU priority, off
    the frame loop's critical path: two full-resolution DIS flows per frame
    (50-150 ms here) would otherwise run beside a keyframe's models on the same
    cores. Each frame's record gets its ``consistency`` when the pair is measured
    (before segments.json is written: ``finish()``); at most ``max_pending``
    frames wait (grey copy + label map), after which the writer waits for it."""

    NICE = 10              # added to the process's niceness for this thread only (Linux)

    def __init__(self, meter: ConsistencyMeter, max_pending: int = 64):
        self.meter, self.error = meter, None
        self._queue: queue.Queue = queue.Queue(max_pending)
        self._thread = threading.Thread(target=self._run, name="moduseg-tc", daemon=True)
        self._thread.start()

    def add(self, image: np.ndarray, labels: np.ndarray, cut: bool, record: dict) -> None:
        record["consistency"] = None
        self._queue.put((gray(image), labels, cut, record))

    def finish(self) -> None:
        """Wait for every queued frame to be measured."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _run(self) -> None:
        try:   # lowering one thread's priority needs no privilege; elsewhere: not lowered
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(),
                           min(19, os.getpriority(os.PRIO_PROCESS, 0) + self.NICE))
        except (AttributeError, OSError):
            pass
        while True:
            item = self._queue.get()
            if item is None:
                return
            g, labels, cut, record = item
            if self.error is not None:
                continue
            try:
                tc = self.meter.add(g, labels, cut=cut)
            except Exception as e:        # the run's labels are fine: say so in the summary
                self.error = f"{type(e).__name__}: {e}"
                continue
            record["consistency"] = None if tc is None else round(tc * 100, 3)


@dataclass
class TemporalLog:
    """Gathered in the writer thread, frame by frame, in order."""

    config: dict
    frame_ms: list = field(default_factory=list)        # each frame's processing time
    latency_ms: list = field(default_factory=list)      # from capture to result (live)
    keyframes: list = field(default_factory=list)
    votes: int = 0                                      # vote frames (temporal.vote_every)
    reasons: dict = field(default_factory=dict)
    consistency: ConsistencyMeter = field(default_factory=ConsistencyMeter)
    measure_consistency: bool = True
    worker: ConsistencyWorker | None = None     # started with the first measured frame

    def add(self, image, result, latency_ms: float | None = None) -> dict:
        t = result.temporal_json()
        self.frame_ms.append(float(result.timings_ms.get("total", 0.0)))
        if latency_ms is not None:
            self.latency_ms.append(float(latency_ms))
            t["latency_ms"] = round(latency_ms, 3)
        self.keyframes.append(bool(result.keyframe))
        self.votes += getattr(result, "kind", None) == "vote"
        if result.keyframe:
            self.reasons[result.reason] = self.reasons.get(result.reason, 0) + 1
        if self.measure_consistency and image is not None:
            if self.worker is None:
                self.worker = ConsistencyWorker(self.consistency)
            self.worker.add(image, result.label_map, result.reason == "cut", t)
        return t

    def summary(self) -> dict:
        if self.worker is not None:
            self.worker.finish()
        ms = np.asarray(self.frame_ms or [0.0])
        out = {"mode": "on", "config": self.config, "frames": len(self.keyframes),
               "keyframes": int(sum(self.keyframes)),
               "keyframe_rate": round(float(np.mean(self.keyframes)), 4)
               if self.keyframes else None,
               "keyframe_reasons": self.reasons, "vote_frames": self.votes,
               "frame_ms": {"amortised": round(float(ms.mean()), 3),
                            "p50": round(float(np.percentile(ms, 50)), 3),
                            "p95": round(float(np.percentile(ms, 95)), 3)}}
        if self.latency_ms:
            lat = np.asarray(self.latency_ms)
            out["latency_ms"] = {"p50": round(float(np.percentile(lat, 50)), 3),
                                 "p95": round(float(np.percentile(lat, 95)), 3),
                                 "note": "from the frame leaving the source to its result"}
        if self.measure_consistency:
            out["consistency"] = self.consistency.summary()
            if self.worker is not None and self.worker.error is not None:
                out["consistency"]["error"] = self.worker.error
        return out
