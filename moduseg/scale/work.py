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
