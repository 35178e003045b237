"""Where a run's results go: each output is a ``Sink`` registered in ``SINKS``.

A sink writes into the run's staging folder (``Run.stage``); the run writer
(``app.run.RunWriter``) commits every registered sink's ``outputs`` as a set.
A new output format is one class with ``outputs`` and the four methods, and
one ``SINKS.register`` line.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from ..errors import OutputError
from ..io import opencv_path, write_image, write_json, write_label_png
from ..registry import Entry, Registry
from ..render import ALPHA, label_png_palette, legend_height
from ..types import IGNORE, SegmentationResult
from .report import index_html
from .encode import OverlayVideo
from .sources import LIVE_KINDS, VIDEO_KINDS, Frame

SEGMENTS_FORMAT, SEGMENTS_VERSION = "moduseg.segments", 2
GALLERY_MAX = 48        # overlays shown in index.html (all are in overlays/)
VIDEO_PREVIEWS = 12     # overlay stills of a video kept for index.html


@dataclass
class Run:
    """What the sinks of one run share: where to write, the classes and colours,
    the input, and the per-frame records and totals gathered so far."""

    out: Path
    stage: Path
    class_names: list[str]
    palette: np.ndarray
    config: dict
    kind: str
    input_spec: str
    fps: float = 25.0
    total: int | None = None
    overlays: bool = True
    untinted: tuple[int, ...] = ()
    opacity: float = ALPHA                                  # class colours' weight, overlays
    frames: list[dict] = field(default_factory=list)       # segments.json "frames"
    skipped: list[dict] = field(default_factory=list)
    timings: dict[str, list[float]] = field(default_factory=dict)
    class_pixels: np.ndarray | None = None                  # [C + 1], last: unassigned
    gallery: list[str] = field(default_factory=list)       # overlays shown in index.html
    latencies_ms: list[float] = field(default_factory=list)   # live frames: read -> result
    keyframes: list[bool] = field(default_factory=list)       # temporal path: per frame
    dropped: int = 0                                          # live frames never segmented
    reconnects: int | None = None                             # a stream's reopenings
    video_codec: str | None = None                            # of overlay.mp4
    unknown: bool = False             # runtime.unknown is on: the legend may need "unknown"
    unknown_pixels: int = 0
    # a hot-swapped bank (``app/hotswap.py``) may bring other classes: each frame's
    # label values index its own result's class names; colours stay by name
    colour_of: dict = field(default_factory=dict)
    temporal: object = None          # ``app.temporal.TemporalLog`` of a temporal run

    @property
    def video(self) -> bool:
        return self.kind in VIDEO_KINDS

    def live_summary(self) -> dict | None:
        """Cameras and streams: per-frame latency p50 / p95 (read to result), the
        keyframe rate, frames dropped while the segmenter was busy, reconnects."""
        if self.kind not in LIVE_KINDS:
            return None
        lat = np.asarray(self.latencies_ms, np.float64)
        q = (lambda p: round(float(np.percentile(lat, p)), 1)) if len(lat) else (lambda p: None)
        keys = self.keyframes
        return {"latency_ms": {"p50": q(50), "p95": q(95), "max": q(100)},
                "keyframe_rate": round(sum(keys) / len(keys), 4) if keys else None,
                "frames": len(self.frames), "dropped": int(self.dropped),
                "reconnects": self.reconnects}

    def median_ms(self) -> dict[str, float]:
        return {k: round(float(np.median(v)), 3) for k, v in self.timings.items()}

    def pixels(self) -> dict[str, int]:
        return {n: int(self.class_pixels[i]) for i, n in enumerate(self.class_names)}

    def palette_for(self, class_names: list[str]) -> np.ndarray:
        """The run's colours for a frame whose bank has ``class_names``."""
        if list(class_names) == self.class_names:
            return self.palette
        return np.asarray([self.colour_of[n] for n in class_names], np.uint8)

    def legend_names(self) -> list[str]:
        from ..types import UNKNOWN_NAME
        return self.class_names + ([UNKNOWN_NAME] if self.unknown else [])


@runtime_checkable
class Sink(Protocol):
    """One output of a run. ``outputs``: the names it may create in the run folder
    (all are replaced together when a run commits)."""

    outputs: tuple[str, ...]

    def start(self, run: Run) -> None: ...                 # before the first frame
    def add(self, run: Run, frame: Frame, result: SegmentationResult) -> None: ...
    def close(self, run: Run) -> None: ...                 # finish and verify streams
    def finish(self, run: Run) -> None: ...                # write run-level files
    def abort(self) -> None: ...                           # release, write nothing more


class BaseSink:
    outputs: tuple[str, ...] = ()

    def start(self, run: Run) -> None:
        pass

    def add(self, run: Run, frame: Frame, result: SegmentationResult) -> None:
        pass

    def close(self, run: Run) -> None:
        pass

    def finish(self, run: Run) -> None:
        pass

    def abort(self) -> None:
        pass


class LabelPngs(BaseSink):
    """``labels/<frame>.png``: palettised PNGs, pixel value = class index."""

    outputs = ("labels",)

    def start(self, run: Run) -> None:
        (run.stage / "labels").mkdir()

    def add(self, run: Run, frame: Frame, result: SegmentationResult) -> None:
        write_label_png(run.stage / "labels" / f"{frame.name}.png", result.label_map,
                        label_png_palette(result.label_map,
                                          run.palette_for(result.class_names)))


class Overlays(BaseSink):
    """``overlays/<frame>.jpg`` for stills; ``overlay.mp4`` and a few
    ``previews/`` stills for a video or camera."""

    outputs = ("overlays", "previews", "overlay.mp4")

    def __init__(self):
        self._writer: OverlayVideo | None = None
        self._writer_path = None          # opencv_path context of the writer's file
        self._video_frames = 0
        self._legend_h: dict[tuple[int, int], int] = {}
        self._preview_at: set[int] = set()
        self.last_overlay: tuple[int, np.ndarray] | None = None    # for --show

    def start(self, run: Run) -> None:
        self._preview_at = self._preview_indices(run.total)

    def add(self, run: Run, frame: Frame, result: SegmentationResult) -> None:
        lm = result.label_map
        H, W = lm.shape
        if (H, W) not in self._legend_h:
            lh = legend_height(run.legend_names(), W)
            # video encoders want even frame sizes: the strip makes the height even
            self._legend_h[H, W] = lh + (H + lh) % 2 if run.video else lh
        ov = result.plot(frame.image, run.palette_for(result.class_names),
                         legend_h=self._legend_h[H, W], untinted=run.untinted,
                         alpha=run.opacity)
        self.last_overlay = (frame.index, ov)
        if run.video:
            self._write_video(run, ov)
            at = len(run.frames)          # position in the run (a live source drops frames)
            if at in self._preview_at or (run.total is None and at % 30 == 0
                                          and len(run.gallery) < VIDEO_PREVIEWS):
                rel = f"previews/{frame.name}.jpg"
                write_image(run.stage / rel, ov)
                run.gallery.append(rel)
        else:
            rel = f"overlays/{frame.name}.jpg"
            write_image(run.stage / rel, ov)
            if len(run.gallery) < GALLERY_MAX:
                run.gallery.append(rel)

    @staticmethod
    def _preview_indices(total):
        if not total:
            return set()
        return set(np.linspace(0, total - 1, min(VIDEO_PREVIEWS, total)).round().astype(int)
                   .tolist())

    def _write_video(self, run: Run, ov: np.ndarray) -> None:
        """H.264 in MP4 (``app.encode``): what browsers play; odd sides are padded."""
        if self._writer is None:
            import click
            # private folder: no other run writes here; a --out whose name is not UTF-8
            # is reached through a link
            self._writer_path = opencv_path(run.stage / "overlay.mp4")
            self._writer = OverlayVideo(self._writer_path.__enter__(), run.fps,
                                        warn=lambda m: click.echo(m, err=True))
            run.video_codec = self._writer.encoding.codec
        self._writer.write(ov)
        self._video_frames += 1

    def close(self, run: Run) -> None:
        """Finish the video and check the file decodes with every frame written
        (a full disk may show only here)."""
        if self._writer is None:
            return
        writer, self._writer = self._writer, None
        try:
            writer.close()
        except OutputError:
            raise OutputError(f"the overlay video could not be finished (is the disk of "
                              f"{run.out} full?); free some space or use --no-overlay") from None
        finally:
            self._release_path()
        path = run.stage / "overlay.mp4"
        n_ok = verified_video_frames(path, self._video_frames)
        if n_ok != self._video_frames:
            raise OutputError(
                f"the overlay video could not be written completely ({n_ok} of "
                f"{self._video_frames} frames decodable; is the disk of {run.out} full?); "
                f"free some space or use --no-overlay")

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.abort()
            self._writer = None
        self._release_path()

    def _release_path(self) -> None:
        if self._writer_path is not None:
            with contextlib.suppress(Exception):
                self._writer_path.__exit__(None, None, None)
            self._writer_path = None


def verified_video_frames(path: Path, expected: int) -> int:
    """Frames a written video really holds: 0 for a missing or empty file; else the
    container's count, provided its last frame decodes."""
    if not path.is_file() or path.stat().st_size == 0:
        return 0
    with opencv_path(path) as cv_path:
        return _decodable_frames(cv2.VideoCapture(cv_path), expected)


def _decodable_frames(cap, expected: int) -> int:
    try:
        if not cap.isOpened():
            return 0
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if n <= 0:
            return 0
        cap.set(cv2.CAP_PROP_POS_FRAMES, min(n, expected) - 1)
        ok, _ = cap.read()
        return n if ok else 0
    finally:
        cap.release()


class SegmentsJson(BaseSink):
    """``segments.json`` (every frame's segments with COCO RLE masks, totals, the
    configuration) and ``palette.json``."""

    outputs = ("segments.json", "palette.json")

    def finish(self, run: Run) -> None:
        names = run.class_names
        write_json(run.stage / "palette.json", {"class_names": names,
                                                "colors": run.palette.tolist()})
        write_json(run.stage / "segments.json", {
            "format": SEGMENTS_FORMAT, "version": SEGMENTS_VERSION,
            "class_names": names,
            "palette": run.palette.tolist(),
            "ignore_index": IGNORE,
            "input": {"path": _shown_input(run), "kind": run.kind},
            "config": run.config,
            "frames": run.frames,
            "skipped": run.skipped,
            "class_pixels": run.pixels(),
            "unassigned_pixels": int(run.class_pixels[-1]),
            **({"unknown_pixels": run.unknown_pixels} if run.unknown else {}),
            "median_ms": run.median_ms(),
            "overlay_video": "overlay.mp4" if (run.video and run.overlays) else None,
            "overlay_codec": run.video_codec,
            **({"live": run.live_summary()} if run.live_summary() is not None else {}),
            **({"temporal": run.temporal.summary()} if run.temporal is not None else {}),
        })


def _shown_input(run: Run) -> str:
    """The input as recorded: a stream URL without its password."""
    if run.kind == "stream":
        from .netstream import mask_url
        return mask_url(run.input_spec)
    return run.input_spec


class HtmlReport(BaseSink):
    """``index.html``: legend, overlay gallery, pixel shares and stage times."""

    outputs = ("index.html",)

    def finish(self, run: Run) -> None:
        from .netstream import mask_url
        title = (mask_url(run.input_spec) if run.kind == "stream"
                 else Path(run.input_spec).name or run.input_spec)
        (run.stage / "index.html").write_text(index_html(
            title=title, names=run.class_names,
            palette=run.palette, class_pixels=run.pixels(),
            unassigned=int(run.class_pixels[-1]), median_ms=run.median_ms(),
            gallery=run.gallery, n_frames=len(run.frames),
            n_overlays=len(run.frames) if run.overlays else 0, video=run.video,
            overlays=run.overlays, skipped=run.skipped,
            unknown=run.unknown_pixels if run.unknown else None, live=run.live_summary()),
            encoding="utf-8")


SINKS: Registry[Entry] = Registry("output sink")
SINKS.register("labels", Entry("labels", LabelPngs, "label PNGs (pixel = class index)"))
SINKS.register("overlays", Entry("overlays", Overlays,
                                 "overlay JPEGs, or overlay.mp4 and previews for a video"))
SINKS.register("segments", Entry("segments", SegmentsJson,
                                 "segments.json (segments, COCO RLE masks) and palette.json"))
SINKS.register("report", Entry("report", HtmlReport, "index.html"))


def output_names() -> tuple[str, ...]:
    """Every name a registered sink may write: a commit replaces all of them."""
    names: list[str] = []
    for entry in SINKS.entries():
        names += [n for n in entry.load().outputs if n not in names]
    return tuple(names)
