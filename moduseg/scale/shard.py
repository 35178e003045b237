"""``--shard i/N``: which share of an ordered list of images one job processes.

Shard ``i`` of ``N`` takes the images at positions ``i, i+N, i+2N, ...`` of
the build (or folder) order. Round-robin keeps shards the same size within
one image and spreads each video sequence over all of them; positions are
recorded so ``bank merge`` can put the images back in order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import InputError

_FORM = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def __post_init__(self):
        if self.count < 1 or not 0 <= self.index < self.count:
            raise InputError(f"--shard {self.index}/{self.count}: need 0 <= i < N "
                             f"(shards are numbered 0 to N-1, e.g. --shard 0/4)")

    @classmethod
    def parse(cls, text: str) -> "Shard":
        m = _FORM.fullmatch(text or "")
        if not m:
            raise InputError(f"--shard {text!r}: expected i/N with 0 <= i < N, e.g. --shard 0/4")
        return cls(int(m.group(1)), int(m.group(2)))

    def positions(self, n: int) -> range:
        """Positions ``0 <= p < n`` of the ordered list that this shard owns."""
        return range(self.index, n, self.count)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"
