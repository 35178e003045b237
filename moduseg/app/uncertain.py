"""``segment --save-uncertain DIR``: keep the frames the bank is unsure about.

A frame is kept when the share of its pixels labelled ``unknown`` reaches
``unknown_share``, or the share of its pixels painted by proposals whose vote
confidence is below ``confidence_below`` reaches ``low_confidence_share``. It
is written ready to be corrected and added with ``bank add --dataset folder``:

    DIR/images/NAME.png     the frame
    DIR/labels/NAME.png     the current label map (unknown and unassigned = 255)
    DIR/unknown/NAME.png    255 where the frame was unknown, else 0
    DIR/NAME.json           why it was kept (shares, thresholds, classes)
    DIR/classes.txt         the bank's class names, one per line

DIR holds a marker file; a DIR that exists, is not empty and has no marker
belongs to someone else and is refused before the run starts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, OutputError
from ..io import write_image, write_json, write_label_png
from ..owned import atomic_path
from ..types import IGNORE, UNKNOWN, SegmentationResult

MARKER = ".moduseg-uncertain"


@dataclass(frozen=True)
class UncertainRule:
    """When a frame is kept."""

    unknown_share: float = 0.05
    low_confidence_share: float = 0.25
    confidence_below: float = 0.5

    def __post_init__(self):
        for name in ("unknown_share", "low_confidence_share", "confidence_below"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0.0 <= v <= 1.0:
                raise InputError(f"--save-uncertain: {name.replace('_', ' ')} must be a number "
                                 f"in [0, 1], got {v!r}")

    def why(self, result: SegmentationResult) -> dict | None:
        """The shares of one frame and whether they pass, or None when it is not kept."""
        lm = result.label_map
        total = max(lm.size, 1)
        unknown = float((lm == UNKNOWN).sum()) / total
        low = sum(s.painted_pixels for s in result.segments
                  if s.label >= 0 and s.painted_pixels and s.confidence < self.confidence_below)
        low = min(float(low) / total, 1.0)
        reasons = []
        if self.unknown_share > 0 and unknown >= self.unknown_share:
            reasons.append("unknown")
        if self.low_confidence_share > 0 and low >= self.low_confidence_share:
            reasons.append("low_confidence")
        if not reasons:
            return None
        return {"reasons": reasons, "unknown_share": round(unknown, 4),
                "low_confidence_share": round(low, 4),
                "thresholds": {"unknown_share": self.unknown_share,
                               "low_confidence_share": self.low_confidence_share,
                               "confidence_below": self.confidence_below}}


def prepare_folder(folder) -> Path:
    """Check DIR before the run: ours (marker), empty or new; never someone else's."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"--save-uncertain {folder} is a file; give a folder")
    if folder.is_dir() and any(folder.iterdir()) and not (folder / MARKER).is_file():
        raise OutputError(f"--save-uncertain {folder} is not empty and was not written by "
                          f"--save-uncertain; choose an empty or new folder")
    try:
        for sub in ("images", "labels", "unknown"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        (folder / MARKER).write_text("frames kept by moduseg segment --save-uncertain\n")
    except OSError as e:
        raise OutputError(f"cannot write to --save-uncertain {folder}: {e.strerror or e}") \
            from None
    return folder


class UncertainFrames:
    """Writes the kept frames (a sink of the run: ``add`` per frame, ``finish`` at the end)."""

    outputs: tuple[str, ...] = ()        # writes into its own folder, not the run's

    def __init__(self, folder, rule: UncertainRule | None = None):
        self.folder = prepare_folder(folder)
        self.rule = rule or UncertainRule()
        self.kept = 0
        self.class_names: list[str] | None = None

    def start(self, run) -> None:
        pass

    def add(self, run, frame, result: SegmentationResult) -> None:
        why = self.rule.why(result)
        self.class_names = list(result.class_names)
        if why is None:
            return
        name = frame.name
        lm = result.label_map
        labels = np.where((lm == UNKNOWN) | (lm >= len(result.class_names)), IGNORE, lm)
        write_image(self.folder / "images" / f"{name}.png", frame.image)
        write_label_png(self.folder / "labels" / f"{name}.png", labels.astype(np.uint8))
        write_label_png(self.folder / "unknown" / f"{name}.png",
                        np.where(lm == UNKNOWN, 255, 0).astype(np.uint8))
        write_json(self.folder / f"{name}.json",
                   {"frame": name, "index": int(frame.index), **why,
                    "class_names": list(result.class_names),
                    "image": f"images/{name}.png", "labels": f"labels/{name}.png",
                    "unknown_mask": f"unknown/{name}.png"})
        self.kept += 1
        self._write_classes()

    def _write_classes(self) -> None:
        with atomic_path(self.folder / "classes.txt") as tmp:
            tmp.write_text("\n".join(self.class_names or []) + "\n", encoding="utf-8")

    def close(self, run) -> None:
        pass

    def finish(self, run) -> None:
        if self.class_names:
            self._write_classes()

    def abort(self) -> None:
        pass


def load_reason(path) -> dict:
    return json.loads(Path(path).read_text())
