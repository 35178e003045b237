"""Served streams keep their own memory: one state per Triton sequence.

The ``moduseg_stream`` model runs under Triton's sequence batcher: every
request carries the stream's correlation id, with the START flag on its
first frame and END on its last, and the batcher keeps a sequence on one
model instance. ``SequenceTable`` is that instance's table of stream states:
START makes a fresh state (a camera that restarts starts over), END drops it
after its frame, and a state idle longer than the batcher's own idle limit
is dropped too (the batcher has already released its slot). A state is made
by ``factory(segment)``: the temporal path (``temporal.TemporalSegmenter``,
the default) or the per-frame path, so a served stream gets exactly the
labels the local path gives for the same frames in the same order.
"""

from __future__ import annotations

import time
from typing import Callable, Protocol

import numpy as np

from ..errors import InputError


class FrameStep(Protocol):
    """One stream's state: called with each frame in order, returns its result."""

    def __call__(self, image: np.ndarray): ...


def per_frame(segment: Callable) -> FrameStep:
    """The stateless path: every frame through the whole pipeline on its own."""
    return lambda image: segment(image)


class SequenceTable:
    """Stream states by correlation id (one table per model instance)."""

    def __init__(self, segment: Callable, factory: Callable[[Callable], FrameStep] = per_frame,
                 idle_s: float = 60.0, clock=time.monotonic):
        self.segment, self.factory, self.idle_s, self.clock = segment, factory, idle_s, clock
        self.states: dict[int | str, tuple[FrameStep, float]] = {}
        self.started = 0

    def step(self, corrid, start: bool, end: bool, image: np.ndarray):
        """The result of ``image`` in stream ``corrid``; START resets, END forgets it."""
        now = self.clock()
        self._expire(now)
        if start or corrid not in self.states:
            if not start:
                raise InputError(f"sequence {corrid} is unknown here (its START frame was not "
                                 f"sent, or it was idle over {self.idle_s:g} s); send its next "
                                 f"frame with sequence_start=True")
            self.states[corrid] = (self.factory(self.segment), now)
            self.started += 1
        state = self.states[corrid][0]
        try:
            result = state(image)
        finally:
            if end:
                self.states.pop(corrid, None)
            elif corrid in self.states:
                self.states[corrid] = (state, self.clock())
        return result

    def _expire(self, now: float) -> None:
        for k in [k for k, (_, t) in self.states.items() if now - t > self.idle_s]:
            del self.states[k]

    def __len__(self) -> int:
        return len(self.states)


def temporal(segment: Callable) -> FrameStep:
    """The temporal path (keyframes, propagation, class memory, tracks), one per stream."""
    from ..temporal import TemporalSegmenter
    return TemporalSegmenter(segment)        # the segmenter configuration's temporal section


STREAM_PATHS: dict[str, Callable[[Callable], FrameStep]] = {
    "per_frame": per_frame,
    "temporal": temporal,
}


def stream_factory(name: str) -> Callable[[Callable], FrameStep]:
    """The state maker of a stream path (``per_frame`` or ``temporal``)."""
    try:
        return STREAM_PATHS[name]
    except KeyError:
        raise InputError(f"unknown stream path {name!r}; choose one of "
                         f"{', '.join(STREAM_PATHS)}") from None
