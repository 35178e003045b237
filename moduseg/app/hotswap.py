"""Hot-swap: a running segmenter picks up a changed bank file between frames.

``BankWatcher(path, segmenter).poll()`` is called by a frame loop (``segment``
on a camera or stream) or a server (``moduseg serve``'s bank model) before
each frame or batch. It looks at the file's size, mtime and inode (a stat, no
read) at most every ``interval`` seconds; when they changed it loads the
bank, checks it against the running backbone and builds its index, then
swaps it in (``Segmenter.swap_bank``: one assignment, so a frame in flight
finishes on the old bank). A file that cannot be used (truncated, another
backbone, not a bank) is refused with one line and the old bank is kept; the
same file is not tried again until it changes.

Write a new bank beside the old one and rename it into place (``bank add
--out NEW`` then ``mv NEW BANK``): a reader never sees half a file. A file
written in place is refused while it is incomplete and loaded once whole.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from ..errors import ModuSegError

log = logging.getLogger(__name__)


def file_signature(path: Path):
    """(size, mtime_ns, inode) of ``path``, or None when it is missing."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


class BankWatcher:
    """Reload ``path`` into ``target`` (anything with ``swap_bank(bank)`` and a
    ``backbone.identity``) when the file changes."""

    def __init__(self, path, target, interval: float = 0.5, report=None):
        self.path = Path(path)
        self.target = target
        self.interval = float(interval)
        self.report = report or (lambda msg: log.warning("%s", msg))
        self.signature = file_signature(self.path)
        self.refused = None               # signature of the last file refused
        self.swaps = 0
        self._next = 0.0

    def poll(self, now: float | None = None) -> bool:
        """Swap in the bank file if it changed and is usable; True when swapped."""
        now = time.monotonic() if now is None else now
        if now < self._next:
            return False
        self._next = now + self.interval
        sig = file_signature(self.path)
        if sig is None or sig == self.signature or sig == self.refused:
            return False
        from ..bank.store import load_bank
        try:
            bank = load_bank(self.path, expect=self.target.backbone.identity)
            self.target.swap_bank(bank)
        except ModuSegError as e:
            self.refused = sig
            self.report(f"bank {self.path} changed but cannot be used ({e}); still using the "
                        f"bank loaded before")
            return False
        self.signature, self.refused = sig, None
        self.swaps += 1
        self.report(f"bank {self.path} changed: now using it ({len(bank)} vectors, classes "
                    f"{', '.join(bank.class_names)})")
        return True
