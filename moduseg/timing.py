"""Per-stage wall-clock timing that every pipeline stage reports into."""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Callable


class StageTimer:
    """Accumulates milliseconds per named stage.

    ``sync`` is called before reading the clock, so a GPU backend can pass a
    stream synchronise and device work is charged to the right stage.
    """

    def __init__(self, sync: Callable[[], None] | None = None):
        self.ms: dict[str, float] = defaultdict(float)
        self._sync = sync

    @contextmanager
    def __call__(self, stage: str):
        if self._sync:
            self._sync()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if self._sync:
                self._sync()
            self.ms[stage] += (time.perf_counter() - t0) * 1e3

    def as_dict(self) -> dict[str, float]:
        return dict(self.ms)


OVERLAP_NOTE = "they overlap, so they need not add up to the total"


def format_stage_ms(median_ms: dict[str, float]) -> str:
    """The run summary's one line of median stage times: the total first, then the stages
    with a note that they overlap (summing them is not the frame time)."""
    stages = [(k, v) for k, v in median_ms.items() if k != "total"]
    head = (f"median ms per frame: total {median_ms['total']:.1f}"
            if "total" in median_ms else "median ms per frame")
    if not stages:
        return head
    return (f"{head}; stages ({OVERLAP_NOTE}): "
            + ", ".join(f"{k} {v:.1f}" for k, v in stages))
