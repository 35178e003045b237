"""The run writer of ``moduseg segment``: stages a run's files and commits them
into ``--out`` as a set.

A run is staged in a private folder inside ``--out`` (``.run.<pid>-<random>``,
marked as a run's) and moved into place when it has finished, under a lock on
the folder. So a killed run leaves only its staging folder (removed by the next
run once its process is gone), two runs into the same folder never share a
temp name, and a re-run replaces every file the previous run recorded in its
manifest (``.moduseg-run.json``): the folder never mixes an old ``overlay.mp4``
or ``segments.json`` with new labels. Nothing else in ``--out`` is touched, not
even a file a user adds under ``labels/`` (``app.ownership``). What is written
is up to the sinks (``app.sinks.SINKS``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..coco import segment_records
from .temporal import TemporalLog, add_track_ids, is_temporal
from ..errors import InputError, OutputError
from ..io import check_output_dir
from ..render import check_opacity, class_palette
from ..types import SegmentationResult
from .ownership import clean_stale_run_dirs, commit_files, make_private_dir, read_run_manifest
from .sinks import SINKS, Run, output_names


@dataclass
class RunSummary:
    out: Path
    frames: int
    skipped: list[dict]
    median_ms: dict[str, float]
    class_pixels: dict[str, int] = field(default_factory=dict)
    temporal: dict | None = None      # the temporal path's summary (videos, cameras)
    live: dict | None = None        # cameras and streams: latency, keyframe rate, drops


def prepare_output(out: str | Path) -> Path:
    """Check ``--out`` before any model loads (see ``io.check_output_dir``)."""
    out = check_output_dir(out, "--out", min_free=4 << 20)
    check_replaceable(out)
    return out


def check_replaceable(out: Path) -> None:
    """A run writes into ``labels/``, ``index.html``... only when they are a previous
    run's (its manifest, ``.moduseg-run.json``, says so): never into a user's folder
    of the same name. Which files it then replaces is up to the manifest (``commit``)."""
    found = [n for n in output_names() if os.path.lexists(out / n)]
    if found and read_run_manifest(out) is None:
        raise OutputError(f"--out {out} already holds {', '.join(found)} not written by "
                          f"'moduseg segment' (no record of a run there); choose an empty "
                          f"or new folder")


@contextlib.contextmanager
def _folder_lock(folder: Path):
    try:
        import fcntl
    except ImportError:          # not POSIX: no lock (the staging still keeps runs apart)
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)             # closing releases the lock


class RunWriter:
    """Writes one run into a staging folder through its sinks; ``finish`` commits
    it into ``out``. ``sinks``: names in ``SINKS`` (default: all of them, without
    ``overlays`` when ``overlays`` is false)."""

    def __init__(self, out: str | Path, class_names: list[str], config: dict, *,
                 kind: str, input_spec: str, fps: float = 25.0, total: int | None = None,
                 overlays: bool = True, background_index: int | None = None,
                 sinks: list[str] | None = None, unknown: bool = False, extra_sinks=(),
                 opacity: float | None = None):
        self.out = Path(out)
        if sinks is None:
            sinks = [n for n in SINKS if overlays or n != "overlays"]
        # ``extra_sinks``: sink objects that write elsewhere (``--save-uncertain``)
        self.sinks = [SINKS[n].load()() for n in sinks] + list(extra_sinks)
        self.temporal_config: dict = {}       # recorded with a temporal run's summary
        names = list(class_names)
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            check_replaceable(self.out)
            clean_stale_run_dirs(self.out)
            stage = make_private_dir(self.out, ".run.")
            self.run = Run(self.out, stage, names, class_palette(names), config, kind,
                           str(input_spec), fps, total, "overlays" in sinks,
                           () if background_index is None else (int(background_index),),
                           class_pixels=np.zeros(len(names) + 1, np.int64), unknown=unknown,
                           opacity=check_opacity(opacity))
            self.run.colour_of = {n: c for n, c in zip(names, self.run.palette.tolist())}
            for s in self.sinks:
                s.start(self.run)
        except OSError as e:
            raise OutputError(f"cannot write to --out {self.out}: {e.strerror or e}; choose a "
                              f"writable folder with free space") from None

    @property
    def stage(self) -> Path:
        return self.run.stage

    @property
    def palette(self) -> np.ndarray:
        return self.run.palette

    # per frame (called from the writer thread, in frame order)
    def add(self, frame, result: SegmentationResult, latency_ms: float | None = None) -> None:
        """Write one frame's results; ``latency_ms``: a live frame's time from being
        read to its result."""
        try:
            self._add(frame, result, latency_ms)
        except OutputError as e:        # name --out, not the private staging folder
            why = str(e).split(": ", 1)[-1]
            raise OutputError(f"cannot write the results of frame {frame.name} into "
                              f"{self.out}: {why}") from None

    def _swapped_classes(self, names: list[str]) -> np.ndarray:
        """A frame of a hot-swapped bank: its classes join the run's (colours by name);
        returns the map from its label values to the run's class indices."""
        run = self.run
        new = [n for n in names if n not in run.colour_of]
        if new:
            colours = class_palette(run.class_names + new)
            for n, c in zip(new, colours[len(run.class_names):].tolist()):
                run.colour_of[n] = c
            run.class_names = run.class_names + new
            run.palette = np.asarray([run.colour_of[n] for n in run.class_names], np.uint8)
            run.class_pixels = np.concatenate([run.class_pixels[:-1],
                                               np.zeros(len(new), np.int64),
                                               run.class_pixels[-1:]])
        return np.asarray([run.class_names.index(n) for n in names], np.int64)

    def _add(self, frame, result: SegmentationResult, latency_ms: float | None = None) -> None:
        from ..types import UNKNOWN
        run, lm = self.run, result.label_map
        C = len(run.class_names)
        swapped = list(result.class_names) != run.class_names
        n = len(result.class_names)
        counts = np.bincount(np.where(lm < n, lm, n).ravel(), minlength=n + 1)
        unknown = int((lm == UNKNOWN).sum()) if run.unknown else 0
        counts[n] -= unknown
        if swapped:
            to_run = self._swapped_classes(list(result.class_names))
            C = len(run.class_names)
            full = np.zeros(C + 1, np.int64)
            np.add.at(full, to_run, counts[:n])
            full[C] = counts[n]
            counts = full
        run.class_pixels += counts
        run.unknown_pixels += unknown
        record = {
            "index": int(frame.index), "name": frame.name,
            **({"file": frame.source} if getattr(frame, "source", None) else {}),
            "label_png": f"labels/{frame.name}.png",
            "image_hw": [int(lm.shape[0]), int(lm.shape[1])],
            "class_pixels": {run.class_names[c]: int(counts[c]) for c in range(C) if counts[c]},
            "unassigned_pixels": int(counts[C]),
            **({"unknown_pixels": unknown} if run.unknown else {}),
            # label values index these when a hot-swapped bank changed the classes
            **({"class_names": list(result.class_names)} if swapped else {}),
            "segments": segment_records(result),
            "timings_ms": {k: round(float(v), 3) for k, v in result.timings_ms.items()},
        }
        if latency_ms is not None:
            record["latency_ms"] = round(float(latency_ms), 3)
            run.latencies_ms.append(float(latency_ms))
        key = getattr(result, "keyframe", None)
        if key is not None:
            run.keyframes.append(bool(key))
        if is_temporal(result):
            if run.temporal is None:
                run.temporal = TemporalLog(self.temporal_config)
            add_track_ids(record["segments"], result, list(result.class_names))
            record["temporal"] = run.temporal.add(frame.image, result, latency_ms)
        for s in self.sinks:
            s.add(run, frame, result)
        run.frames.append(record)
        for k, v in result.timings_ms.items():
            run.timings.setdefault(k, []).append(float(v))

    def skip(self, path, error) -> None:
        self.run.skipped.append({"file": str(path), "error": str(error)})

    def overlay(self, frame, result: SegmentationResult) -> np.ndarray:
        """The overlay of a frame just added (the overlay sink's, else drawn now)."""
        for s in self.sinks:
            last = getattr(s, "last_overlay", None)
            if last is not None and last[0] == frame.index:
                return last[1]
        return result.plot(frame.image, self.run.palette, untinted=self.run.untinted)

    def note_live(self, dropped: int = 0, reconnects: int | None = None) -> None:
        """What the source reports at the end of a live run."""
        self.run.dropped, self.run.reconnects = int(dropped), reconnects

    def finish(self) -> RunSummary:
        """Close and verify every sink, write the run files, then commit them as a set."""
        run = self.run
        for s in self.sinks:
            s.close(run)
        if not run.frames:
            raise InputError(f"no frame of {run.input_spec} could be segmented"
                             + (f" ({len(run.skipped)} unreadable: {run.skipped[0]['file']}: "
                                f"{run.skipped[0]['error']})" if run.skipped else ""))
        for s in self.sinks:
            s.finish(run)
        self.commit()
        return RunSummary(self.out, len(run.frames), run.skipped, run.median_ms(),
                          run.pixels(),
                          run.temporal.summary() if run.temporal is not None else None,
                          run.live_summary())

    def commit(self) -> None:
        """Replace the files the previous run recorded by this run's, under a folder
        lock; files nobody recorded (a user's, under ``labels/`` too) stay."""
        with _folder_lock(self.out):
            commit_files(self.out, self.stage, read_run_manifest(self.out) or [])
        shutil.rmtree(self.stage, ignore_errors=True)

    def abort(self) -> None:
        """Drop the staging folder; the previous run's files stay as they were."""
        for s in self.sinks:
            with contextlib.suppress(Exception):
                s.abort()
        shutil.rmtree(self.stage, ignore_errors=True)
