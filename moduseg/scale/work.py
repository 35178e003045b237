"""The per-image work every engine runs.

A task is a small picklable value; ``setup()`` runs once per worker (loads
the model sessions, through the callable it was given) and returns the
function applied to each item key.
The local loop, ``--shard`` jobs and Ray actors all run these same
functions, so their outputs agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..errors import ModuSegError


@dataclass(frozen=True)
class FrameError:
    """A frame that failed with the usual one-line message; the run goes on."""

    message: str


def segment_image(seg, image):
    """One frame through the segmenter; bad input becomes a ``FrameError``."""
    from ..timing import StageTimer
    try:
        return seg(image, StageTimer())
    except ModuSegError as e:
        return FrameError(str(e))


@dataclass
class SegmentTask:
    """Per-image segmentation; item keys are image paths."""

    models: Callable                  # () -> Segmenter

    def setup(self):
        from ..io import read_image
        seg = self.models()

        def run(key):
            try:
                image = read_image(key)
            except ModuSegError as e:
                return FrameError(str(e))
            return segment_image(seg, image)
        return run


@dataclass
class VideoTask:
    """A whole video as one ordered task: its frames in order through one segmenter on
    the temporal path (each frame depends on the ones before it, so a video is never
    split across workers). The item key is the video; ``frames`` yields its results."""

    models: Callable                  # () -> Segmenter
    open_frames: Callable             # (key) -> iterable of RGB frames, in order
    temporal: bool = True

    def setup(self):
        seg = self.models()
        if self.temporal:
            from ..temporal import TemporalSegmenter
            seg = TemporalSegmenter(seg)
        self._seg = seg
        return self.frames

    def frames(self, key):
        for image in self.open_frames(key):
            yield segment_image(self._seg, image)


def run_task(task, keys: list[str], ray_options=None, desc: str = "work") -> list:
    """Results for ``keys`` in order, here (``ray_options`` None) or on a Ray actor pool."""
    from tqdm import tqdm
    bar = tqdm(total=len(keys), desc=desc, unit="img")
    try:
        if ray_options is None:
            fn = task.setup()
            out = []
            for k in keys:
                out.append(fn(k))
                bar.update(1)
            return out
        from . import ray_engine
        return [r for _, r in ray_engine.run(task, keys, ray_options, progress=bar.update)]
    finally:
        bar.close()
