"""What ``moduseg segment`` writes: label PNGs, overlays with a legend,
``segments.json``, ``palette.json`` and an ``index.html`` that opens from disk.

A run is staged in a private folder inside ``--out`` (``.run.<pid>-<random>``)
and moved into place as a set when it has finished, under a lock on the
folder. So a killed run leaves only its staging folder (removed by the next
run once its process is gone), two runs into the same folder never share a
temp name, and a re-run replaces every file of the previous run: the folder
never mixes an old ``overlay.mp4`` or ``segments.json`` with new labels.
Files in ``--out`` that a run does not write are left alone.
"""

from __future__ import annotations

import colorsys
import contextlib
import html
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..errors import ModuSegError, InputError, OutputError
from ..io import check_output_dir, clean_stale_temps, write_image, write_json, write_label_png
from ..types import IGNORE, SegmentationResult

# everything a run writes; a commit replaces these as a set
OUTPUT_NAMES = ("labels", "overlays", "previews", "overlay.mp4", "segments.json",
                "palette.json", "index.html")
SEGMENTS_FORMAT, SEGMENTS_VERSION = "moduseg.segments", 2
GALLERY_MAX = 48        # overlays shown in index.html (all are in overlays/)
VIDEO_PREVIEWS = 12     # overlay stills of a video kept for index.html
ALPHA = 0.45            # colour weight in the overlay: the picture stays readable
MIN_LUMA = 90           # no class colour darker than this (0-255 luma)

# CamVid's own class colours (the 11-class SegNet convention), lifted to MIN_LUMA
CAMVID_COLORS = {
    "sky": (128, 128, 128), "building": (128, 0, 0), "pole": (192, 192, 128),
    "road": (128, 64, 128), "pavement": (0, 0, 192), "sidewalk": (0, 0, 192),
    "tree": (128, 128, 0), "sign": (192, 128, 128), "signsymbol": (192, 128, 128),
    "fence": (64, 64, 128), "car": (64, 0, 128), "pedestrian": (64, 64, 0),
    "bicyclist": (0, 128, 192),
}


# -- palette and overlays ----------------------------------------------------------------

def luma(rgb) -> np.ndarray:
    c = np.asarray(rgb, np.float64)
    return c[..., 0] * 0.2126 + c[..., 1] * 0.7152 + c[..., 2] * 0.0722


def lift(rgb, min_luma: float = MIN_LUMA) -> tuple[int, int, int]:
    """Brighten a colour just enough to reach ``min_luma``: first by scaling (hue and
    saturation kept), then, if that is not enough, by blending towards white."""
    c = np.asarray(rgb, np.float64)
    y = float(luma(c))
    if y < min_luma:
        f = min(min_luma / max(y, 1e-9), 255.0 / max(c.max(), 1e-9))
        c = c * f
        y = float(luma(c))
        if y < min_luma:
            c = c + (min_luma - y) / (255.0 - y) * (255.0 - c)
    return tuple(int(v) for v in np.ceil(c).clip(0, 255))


def class_palette(class_names: list[str], min_luma: float = MIN_LUMA) -> np.ndarray:
    """``[C, 3]`` uint8 class colours, none darker than ``min_luma``.

    CamVid class names keep CamVid's colours; other classes get evenly spread
    hues (golden-ratio steps) alternating two saturations and two values.
    """
    out = np.zeros((len(class_names), 3), np.uint8)
    k = 0
    for i, name in enumerate(class_names):
        key = str(name).lower().replace("_", "").replace(" ", "")
        if key in CAMVID_COLORS:
            rgb = CAMVID_COLORS[key]
        elif key in ("background", "void", "unlabelled", "unlabeled"):
            rgb = (150, 150, 150)
        else:
            h = (0.11 + 0.618034 * k) % 1.0
            sat, val = (0.85, 0.55)[k % 2], (1.0, 0.8)[(k // 2) % 2]   # more distinct pairs
            k += 1
            rgb = tuple(int(round(255 * v)) for v in colorsys.hsv_to_rgb(h, sat, val))
        out[i] = lift(rgb, min_luma)
    return out


def _font(width: int) -> tuple[float, int]:
    scale = float(np.clip(width / 1100.0, 0.4, 1.4))
    return scale, 1 if scale < 0.9 else 2


def _legend_items(class_names, width):
    """(name, text width) and the geometry of one legend row for an image ``width`` wide."""
    scale, thick = _font(width)
    (_, th), _ = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    sw = th + 6                      # swatch side
    row_h, pad = sw + 10, 8
    widths = [cv2.getTextSize(str(n), cv2.FONT_HERSHEY_SIMPLEX, scale, thick)[0][0]
              for n in class_names]
    return widths, sw, row_h, pad, scale, thick


def _layout(ids, widths, sw, pad, width):
    """Place legend items left to right, wrapping rows: [(id, x, row)]."""
    x, row, placed = pad, 0, []
    for c in ids:
        w = sw + 6 + widths[c] + 2 * pad
        if x + w > width and x > pad:
            x, row = pad, row + 1
        placed.append((c, x, row))
        x += w
    return placed


def legend_height(class_names: list[str], width: int) -> int:
    """Height of a legend strip that fits every class: constant for a run (videos)."""
    widths, sw, row_h, pad, _, _ = _legend_items(class_names, width)
    placed = _layout(range(len(class_names)), widths, sw, pad, width)
    rows = (placed[-1][2] + 1) if placed else 1
    return rows * row_h + pad


def render_overlay(image: np.ndarray, label_map: np.ndarray, palette: np.ndarray,
                   class_names: list[str], legend_h: int | None = None,
                   untinted: tuple[int, ...] = (), alpha: float = ALPHA) -> np.ndarray:
    """The frame with class colours blended in, class borders drawn, and a
    legend strip below (swatch + name of the classes present, largest first).

    ``untinted`` classes (a background class) are not coloured, only outlined.
    """
    H, W = label_map.shape
    C = min(len(palette), 256)
    lm = np.ascontiguousarray(label_map, np.uint8)
    image = np.ascontiguousarray(image, np.uint8)
    lut = np.zeros((256, 3), np.uint8)
    lut[:C] = palette[:C]
    valid = np.zeros(256, np.uint8)
    valid[:C] = 1
    tint = valid.copy()
    for c in untinted:
        if 0 <= c < 256:
            tint[c] = 0
    # table look-ups and blends in OpenCV: a 1080p frame stays in the tens of ms
    col = cv2.merge([cv2.LUT(lm, np.ascontiguousarray(lut[:, k])) for k in range(3)])
    out = image.copy()
    cv2.copyTo(cv2.addWeighted(image, 1.0 - alpha, col, alpha, 0.0), cv2.LUT(lm, tint), out)
    # class borders at full colour: shapes stay readable where the tint is light
    k = np.ones((3, 3) if max(H, W) > 900 else (2, 2), np.uint8)
    edge = (cv2.morphologyEx(lm, cv2.MORPH_GRADIENT, k) > 0).view(np.uint8)
    cv2.copyTo(col, edge & cv2.LUT(lm, valid), out)

    legend_h = legend_h or legend_height(class_names, W)
    strip = np.full((legend_h, W, 3), 28, np.uint8)
    counts = np.bincount(lm.ravel(), minlength=256)[:len(class_names)]
    present = [int(c) for c in np.argsort(-counts, kind="stable") if counts[c] > 0]
    widths, sw, row_h, pad, scale, thick = _legend_items(class_names, W)
    for c, x, row in _layout(present, widths, sw, pad, W):
        y = pad + row * row_h
        if y + sw > legend_h:
            break
        col = tuple(int(v) for v in palette[c])
        cv2.rectangle(strip, (x, y), (x + sw, y + sw), col, -1)
        cv2.rectangle(strip, (x, y), (x + sw, y + sw), (235, 235, 235), 1)
        cv2.putText(strip, str(class_names[c]), (x + sw + 6, y + sw - 3),
                    cv2.FONT_HERSHEY_SIMPLEX, scale, (245, 245, 245), thick, cv2.LINE_AA)
    return np.concatenate([out, strip], 0)


# -- segments.json records ---------------------------------------------------------------

def segment_records(result: SegmentationResult) -> list[dict]:
    """Per segment: class, confidence in [0, 1], objectness, full-resolution area and
    painted pixels, bounding box ``[x, y, w, h]`` and a COCO RLE of its mask."""
    from pycocotools import mask as mask_utils

    H, W = result.label_map.shape
    props = result.proposals
    recs = []
    for s in result.segments:
        rec = {
            "proposal": int(s.proposal),
            "class_id": int(s.label) if s.label >= 0 else None,
            "class_name": s.class_name or None,
            "confidence": _unit(s.confidence),
            "objectness": _unit(s.objectness),
            "area": int(s.area),
            "painted_pixels": int(s.painted_pixels),
            "painted": bool(s.painted_pixels > 0),
        }
        if props is not None and 0 <= s.proposal < len(props):
            # RLE runs down columns: resize the transposed mask, and its transpose is
            # the Fortran-ordered full-resolution mask without a copy
            m = props.masks[s.proposal].view(np.uint8)
            if m.shape == (H, W):
                rle = mask_utils.encode(np.asfortranarray(m))
            else:
                mt = cv2.resize(np.ascontiguousarray(m.T), (H, W),
                                interpolation=cv2.INTER_NEAREST)
                rle = mask_utils.encode(mt.T)
            x, y, w, h = (int(round(v)) for v in mask_utils.toBbox(rle))
            rec["bbox"] = [x, y, w, h]
            rec["rle"] = {"size": [int(H), int(W)], "counts": rle["counts"].decode("ascii")}
        recs.append(rec)
    return recs


def _unit(v) -> float:
    v = float(v)
    return 0.0 if not np.isfinite(v) else round(min(1.0, max(0.0, v)), 6)


# -- the run -----------------------------------------------------------------------------

@dataclass
class RunSummary:
    out: Path
    frames: int
    skipped: list[dict]
    median_ms: dict[str, float]
    class_pixels: dict[str, int] = field(default_factory=dict)


def prepare_output(out: str | Path) -> Path:
    """Check ``--out`` before any model loads (see ``io.check_output_dir``)."""
    out = check_output_dir(out, "--out", min_free=4 << 20)
    check_replaceable(out)
    return out


def check_replaceable(out: Path) -> None:
    """A run replaces ``labels/``, ``index.html``... only when they are a previous
    run's (its ``segments.json`` says so): never a user's folder of the same name."""
    found = [n for n in OUTPUT_NAMES if os.path.lexists(out / n)]
    if not found:
        return
    try:                 # the head is enough (the file of a long video is large)
        with open(out / "segments.json", "rb") as f:
            head = f.read(4096).decode("utf-8", "replace")
    except OSError:
        head = ""
    ours = (f'"format": "{SEGMENTS_FORMAT}"' in head
            or head.startswith('{\n  "config": {'))     # written by versions before 2
    if not ours:
        raise OutputError(f"--out {out} already holds {', '.join(found)} not written by "
                          f"'moduseg segment' (no segments.json of a run); choose an empty "
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


def clean_stale_outputs(out: Path, started: float | None = None) -> list[Path]:
    """Staging folders of runs whose process is gone, and the legacy
    ``.overlay.part*`` temps (older versions) untouched for a minute."""
    removed = clean_stale_temps(out, ".run.") + clean_stale_temps(out, ".old.")
    started = started or time.time()
    for p in out.glob(".overlay.part*"):
        with contextlib.suppress(OSError):
            if p.is_file() and p.stat().st_mtime < started - 60:
                p.unlink()
                removed.append(p)
    return removed


class RunWriter:
    """Writes one run into a staging folder; ``commit`` swaps it into ``out``."""

    def __init__(self, out: str | Path, class_names: list[str], config: dict, *,
                 kind: str, input_spec: str, fps: float = 25.0, total: int | None = None,
                 overlays: bool = True, background_index: int | None = None):
        self.out = Path(out)
        self.class_names = list(class_names)
        self.palette = class_palette(self.class_names)
        self.config, self.kind, self.input_spec = config, kind, str(input_spec)
        self.fps, self.total, self.overlays = fps, total, overlays
        self.untinted = () if background_index is None else (int(background_index),)
        self.started = time.time()
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            check_replaceable(self.out)
            clean_stale_outputs(self.out, self.started)
            self.stage = Path(tempfile.mkdtemp(prefix=f".run.{os.getpid()}-", dir=self.out))
            (self.stage / "labels").mkdir()
        except OSError as e:
            raise OutputError(f"cannot write to --out {self.out}: {e.strerror or e}; choose a "
                              f"writable folder with free space") from None
        self.video = kind in ("video", "camera")
        self.frames: list[dict] = []
        self.skipped: list[dict] = []
        self.timings: dict[str, list[float]] = {}
        self.class_pixels = np.zeros(len(self.class_names) + 1, np.int64)   # last: unassigned
        self.gallery: list[str] = []
        self._writer = None
        self._video_frames = 0
        self._legend_h: dict[tuple[int, int], int] = {}
        self._preview_at = self._preview_indices(total)

    # per frame (called from the writer thread, in frame order)
    def add(self, frame, result: SegmentationResult) -> None:
        try:
            self._add(frame, result)
        except OutputError as e:        # name --out, not the private staging folder
            why = str(e).split(": ", 1)[-1]
            raise OutputError(f"cannot write the results of frame {frame.name} into "
                              f"{self.out}: {why}") from None

    def _add(self, frame, result: SegmentationResult) -> None:
        lm = result.label_map
        write_label_png(self.stage / "labels" / f"{frame.name}.png", lm, self.palette)
        C = len(self.class_names)
        counts = np.bincount(np.where(lm < C, lm, C).ravel(), minlength=C + 1)
        self.class_pixels += counts
        self.frames.append({
            "index": int(frame.index), "name": frame.name,
            "label_png": f"labels/{frame.name}.png",
            "image_hw": [int(lm.shape[0]), int(lm.shape[1])],
            "class_pixels": {self.class_names[c]: int(counts[c]) for c in range(C) if counts[c]},
            "unassigned_pixels": int(counts[C]),
            "segments": segment_records(result),
            "timings_ms": {k: round(float(v), 3) for k, v in result.timings_ms.items()},
        })
        for k, v in result.timings_ms.items():
            self.timings.setdefault(k, []).append(float(v))
        if not self.overlays:
            return
        W = lm.shape[1]
        H = lm.shape[0]
        if (H, W) not in self._legend_h:
            lh = legend_height(self.class_names, W)
            # video encoders want even frame sizes: the strip makes the height even
            self._legend_h[H, W] = lh + (H + lh) % 2 if self.video else lh
        ov = render_overlay(frame.image, lm, self.palette, self.class_names,
                            self._legend_h[H, W], self.untinted)
        if self.video:
            self._write_video(ov)
            if frame.index in self._preview_at or (self.total is None and frame.index % 30 == 0
                                                    and len(self.gallery) < VIDEO_PREVIEWS):
                rel = f"previews/{frame.name}.jpg"
                write_image(self.stage / rel, ov)
                self.gallery.append(rel)
        else:
            rel = f"overlays/{frame.name}.jpg"
            write_image(self.stage / rel, ov)
            if len(self.gallery) < GALLERY_MAX:
                self.gallery.append(rel)

    def skip(self, path, error) -> None:
        self.skipped.append({"file": str(path), "error": str(error)})

    @staticmethod
    def _preview_indices(total):
        if not total:
            return set()
        return set(np.linspace(0, total - 1, min(VIDEO_PREVIEWS, total)).round().astype(int)
                   .tolist())

    def _write_video(self, ov: np.ndarray) -> None:
        path = self.stage / "overlay.mp4"     # private folder: no other run writes here
        if ov.shape[1] % 2:                   # an odd width: one dark column
            ov = np.pad(ov, ((0, 0), (0, 1), (0, 0)), constant_values=28)
        if self._writer is None:
            h, w = ov.shape[:2]
            self._writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"),
                                           float(self.fps), (w, h))
            if not self._writer.isOpened():
                raise OutputError(f"cannot write the overlay video in {self.out}; use "
                                  f"--no-overlay or check the output folder")
        self._writer.write(cv2.cvtColor(ov, cv2.COLOR_RGB2BGR))
        self._video_frames += 1

    def _close_video(self) -> None:
        """Release the writer and check the file decodes with every frame written
        (``VideoWriter.write`` reports nothing, e.g. on a full disk)."""
        if self._writer is None:
            return
        self._writer.release()
        self._writer = None
        path = self.stage / "overlay.mp4"
        n_ok = verified_video_frames(path, self._video_frames)
        if n_ok != self._video_frames:
            raise OutputError(
                f"the overlay video could not be written completely ({n_ok} of "
                f"{self._video_frames} frames decodable; is the disk of {self.out} full?); "
                f"free some space or use --no-overlay")

    def summary_ms(self) -> dict[str, float]:
        return {k: round(float(np.median(v)), 3) for k, v in self.timings.items()}

    def finish(self) -> RunSummary:
        """Close and verify everything, write the run files, then commit them as a set."""
        self._close_video()
        if not self.frames:
            raise InputError(f"no frame of {self.input_spec} could be segmented"
                             + (f" ({len(self.skipped)} unreadable: {self.skipped[0]['file']}: "
                                f"{self.skipped[0]['error']})" if self.skipped else ""))
        median = self.summary_ms()
        names = self.class_names
        pixels = {n: int(self.class_pixels[i]) for i, n in enumerate(names)}
        pixels_unassigned = int(self.class_pixels[-1])
        write_json(self.stage / "palette.json", {"class_names": names,
                                                 "colors": self.palette.tolist()})
        write_json(self.stage / "segments.json", {
            "format": SEGMENTS_FORMAT, "version": SEGMENTS_VERSION,
            "class_names": names,
            "palette": self.palette.tolist(),
            "ignore_index": IGNORE,
            "input": {"path": self.input_spec, "kind": self.kind},
            "config": self.config,
            "frames": self.frames,
            "skipped": self.skipped,
            "class_pixels": pixels,
            "unassigned_pixels": pixels_unassigned,
            "median_ms": median,
            "overlay_video": "overlay.mp4" if (self.video and self.overlays) else None,
        })
        (self.stage / "index.html").write_text(index_html(
            title=Path(self.input_spec).name or self.input_spec, names=names,
            palette=self.palette, class_pixels=pixels, unassigned=pixels_unassigned,
            median_ms=median, gallery=self.gallery, n_frames=len(self.frames),
            n_overlays=len(self.frames) if self.overlays else 0, video=self.video,
            overlays=self.overlays, skipped=self.skipped), encoding="utf-8")
        self.commit()
        return RunSummary(self.out, len(self.frames), self.skipped, median, pixels)

    def commit(self) -> None:
        """Replace the previous run's files by this run's, as a set, under a folder lock."""
        with _folder_lock(self.out):
            old = Path(tempfile.mkdtemp(prefix=f".old.{os.getpid()}-", dir=self.out))
            try:
                for name in OUTPUT_NAMES:
                    if os.path.lexists(self.out / name):
                        os.replace(self.out / name, old / name)
                for name in OUTPUT_NAMES:
                    if os.path.lexists(self.stage / name):
                        os.replace(self.stage / name, self.out / name)
            except OSError as e:
                raise OutputError(f"cannot move the results into {self.out}: "
                                  f"{e.strerror or e}") from None
        shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(self.stage, ignore_errors=True)

    def abort(self) -> None:
        """Drop the staging folder; the previous run's files stay as they were."""
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.release()
            self._writer = None
        shutil.rmtree(self.stage, ignore_errors=True)


def verified_video_frames(path: Path, expected: int) -> int:
    """Frames a written video really holds: 0 for a missing or empty file; else the
    container's count, provided its last frame decodes."""
    if not path.is_file() or path.stat().st_size == 0:
        return 0
    cap = cv2.VideoCapture(str(path))
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


def run_segment(seg, input_spec: str, out: str | Path, *, max_frames: int | None = None,
                overlays: bool = True, progress: bool = True, shard=None,
                results=None) -> RunSummary:
    """Segment an image, folder, video or camera into ``out``: the one call the CLI makes.

    ``seg`` is a ``Segmenter`` (anything with ``bank``, ``full_config`` and
    ``seg(image, timer)``). In a folder an unreadable or truncated image, or a
    frame the pipeline refuses, is reported in one line, listed under
    ``skipped`` in segments.json and skipped; a single image or a run where no
    frame is readable is an error. ``shard`` (``scale.shard.Shard``) takes one
    share of a folder; ``results`` (an iterable of ``(Frame, result or
    Exception)`` in frame order, e.g. from a Ray actor pool) replaces the
    in-process inference.
    """
    from tqdm import tqdm

    from ..timing import StageTimer
    from .stream import count_frames, input_kind, iter_frames, run_overlapped, video_info

    kind = input_kind(input_spec)
    out = Path(out)
    fps = video_info(input_spec)[0] if kind in ("video", "camera") else 25.0
    total = count_frames(input_spec, max_frames, shard)
    cfg = seg.full_config.to_dict() if hasattr(seg, "full_config") else {}
    writer = RunWriter(out, seg.bank.class_names, cfg, kind=kind, input_spec=input_spec,
                       fps=fps, total=total, overlays=overlays,
                       background_index=seg.bank.background_index)
    bar = tqdm(total=total, desc="segment", unit="frame", disable=not progress)

    def on_error(path, err):
        writer.skip(path, err)
        bar.write(f"skipped: {err}")

    def infer(frame):
        try:
            return seg(frame.image, StageTimer())
        except ModuSegError as e:       # one bad frame of a folder fails alone
            if kind != "folder":
                raise
            return e

    def write(frame, res):
        if isinstance(res, Exception):
            on_error(frame.name, res)
        else:
            writer.add(frame, res)
        bar.update(1)

    try:
        if results is None:
            run_overlapped(iter_frames(input_spec, max_frames, shard, on_error=on_error),
                           infer, write)
        else:
            for frame, res in results:
                write(frame, res)
        summary = writer.finish()
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
    return summary


# -- index.html --------------------------------------------------------------------------

def _hex(rgb) -> str:
    return "#%02x%02x%02x" % tuple(int(v) for v in rgb)


def _pct(n: int, total: int) -> str:
    p = 100.0 * n / total
    return "&lt;0.1%" if 0 < p < 0.05 else f"{p:.1f}%"


def stage_plot_svg(median_ms: dict[str, float], width: int = 520) -> str:
    """Median milliseconds per stage as horizontal bars (inline SVG, no script)."""
    items = [(k, v) for k, v in median_ms.items() if k != "total"]
    if not items:
        return "<p>No stage timings.</p>"
    vmax = max(max(v for _, v in items), median_ms.get("total", 0.0), 1e-9)
    row, label_w, bar_w = 20, 90, width - 90 - 80
    rows = items + ([("total", median_ms["total"])] if "total" in median_ms else [])
    h = row * len(rows) + 6
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h}" '
             f'role="img" aria-label="median milliseconds per stage">']
    for i, (k, v) in enumerate(rows):
        y = 3 + i * row
        w = max(1.0, bar_w * v / vmax)
        fill = "#4a6fa5" if k != "total" else "#8a8a8a"
        parts.append(f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end" '
                     f'font-size="12">{html.escape(k)}</text>'
                     f'<rect x="{label_w}" y="{y + 2}" width="{w:.1f}" height="{row - 6}" '
                     f'fill="{fill}"/><text x="{label_w + w + 4:.1f}" y="{y + 14}" '
                     f'font-size="12">{v:.1f} ms</text>')
    parts.append("</svg>")
    return "".join(parts)


def index_html(*, title, names, palette, class_pixels, unassigned, median_ms, gallery,
               n_frames, n_overlays, video, overlays, skipped) -> str:
    """A self-contained page (relative links, inline CSS and SVG, no script)."""
    e = html.escape
    total_px = max(1, sum(class_pixels.values()) + unassigned)
    present = sorted(((n, c) for n, c in class_pixels.items() if c), key=lambda t: -t[1])
    index_of = {n: i for i, n in enumerate(names)}
    legend = "".join(
        f'<span class="item"><span class="sw" style="background:{_hex(palette[index_of[n]])}">'
        f'</span>{e(n)}</span>' for n, _ in present)
    share_rows = "".join(
        f'<tr><td><span class="sw" style="background:{_hex(palette[index_of[n]])}"></span>'
        f'{e(n)}</td><td class="num">{_pct(c, total_px)}</td><td class="bar">'
        f'<div style="width:{100.0 * c / present[0][1]:.1f}%;'
        f'background:{_hex(palette[index_of[n]])}"></div></td></tr>' for n, c in present)
    if unassigned:
        share_rows += (f'<tr><td><span class="sw" style="background:#000"></span>unassigned'
                       f'</td><td class="num">{_pct(unassigned, total_px)}</td>'
                       f'<td></td></tr>')
    if not overlays:
        gallery_html = "<p>Overlays were not written (<code>--no-overlay</code>).</p>"
    else:
        figs = "".join(f'<figure><a href="{e(g)}"><img src="{e(g)}" alt="{e(g)}"></a>'
                       f'<figcaption>{e(Path(g).stem)}</figcaption></figure>' for g in gallery)
        note = (f'<p>Stills from <a href="overlay.mp4">overlay.mp4</a> '
                f'({n_frames} frames).</p>' if video else
                (f"<p>Showing {len(gallery)} of {n_overlays} overlays; all are in "
                 f'<a href="overlays/">overlays/</a>.</p>' if n_overlays > len(gallery) else ""))
        gallery_html = note + f'<div class="gallery">{figs}</div>'
    skipped_html = ""
    if skipped:
        skipped_html = ("<h2>Skipped inputs</h2><ul>" + "".join(
            f"<li>{e(s['error'])}</li>" for s in skipped) + "</ul>")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>moduseg: {e(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.2em; color: #222; background: #fafafa; }}
h1 {{ font-size: 1.3em; }} h2 {{ font-size: 1.05em; margin-top: 1.4em; }}
.legend .item {{ display: inline-block; margin: 0 1em 0.4em 0; }}
.sw {{ display: inline-block; width: 0.9em; height: 0.9em; margin-right: 0.35em;
       vertical-align: -0.1em; border: 1px solid #555; }}
.gallery {{ display: flex; flex-wrap: wrap; gap: 10px; }}
figure {{ margin: 0; }} figure img {{ width: 320px; display: block; border: 1px solid #ccc; }}
figcaption {{ font-size: 0.8em; color: #555; }}
table {{ border-collapse: collapse; }} td {{ padding: 2px 8px; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
td.bar {{ width: 240px; }} td.bar div {{ height: 0.8em; }}
.row {{ display: flex; flex-wrap: wrap; gap: 2.5em; }}
</style></head>
<body>
<h1>moduseg segment: {e(title)}</h1>
<p>{n_frames} frame(s). Label maps in <a href="labels/">labels/</a> (pixel value = class
index, {IGNORE} = unassigned); every segment with its mask in
<a href="segments.json">segments.json</a>.</p>
<div class="legend">{legend}</div>
<h2>Overlays</h2>
{gallery_html}
<div class="row">
<div><h2>Pixel share per class</h2><table>{share_rows}</table></div>
<div><h2>Median time per stage</h2>{stage_plot_svg(median_ms)}</div>
</div>
{skipped_html}
</body></html>
"""
