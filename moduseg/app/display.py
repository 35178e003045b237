"""``--show``: the overlay of each frame in a window, live, as it is written.

opencv-python-headless has no GUI, so the window is pygame's (SDL2, in
pygame's wheels: ``pip install 'moduseg[show]'``). It is optional: without
pygame or without a display, ``--show`` fails in one line before any model
loads. Closing the window (or pressing Esc or q) ends the run; the frames
done so far are written as usual.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from ..errors import InputError

MAX_SIDE = 1280      # a window larger than this is shown scaled down
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")    # no banner on import


def check_display() -> None:
    """One ``InputError`` line when ``--show`` cannot open a window here."""
    try:
        import pygame  # noqa: F401
    except ImportError:
        raise InputError("--show needs pygame for its window (opencv-python-headless has "
                         "none): pip install 'moduseg[show]', or run without --show") from None
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                 or os.environ.get("WAYLAND_DISPLAY")):
        raise InputError("--show needs a display, and DISPLAY is not set (a headless machine "
                         "or an SSH session without -X); run without --show, or under X "
                         "(e.g. xvfb-run)")


class LiveWindow:
    """A window showing RGB frames; ``show`` returns False once the user closed it.

    Call it from one thread only (SDL's rule); the window opens on the first frame.
    """

    def __init__(self, title: str = "moduseg"):
        import pygame

        self._pg = pygame
        self.title = title
        self.closed = False
        self._screen = None
        self._size: tuple[int, int] | None = None
        self.shown = 0

    def _open(self, w: int, h: int) -> None:
        pg = self._pg
        pg.display.init()
        s = min(1.0, MAX_SIDE / max(w, h))
        self._size = (max(1, int(w * s)), max(1, int(h * s)))
        try:
            self._screen = pg.display.set_mode(self._size)
        except pg.error as e:
            raise InputError(f"--show cannot open a window ({e}); run without --show") from None
        pg.display.set_caption(self.title)

    def show(self, rgb: np.ndarray, caption: str | None = None) -> bool:
        if self.closed:
            return False
        pg = self._pg
        h, w = rgb.shape[:2]
        if self._screen is None:
            self._open(w, h)
        surf = pg.image.frombuffer(np.ascontiguousarray(rgb, np.uint8).tobytes(), (w, h), "RGB")
        if (w, h) != self._size:
            surf = pg.transform.smoothscale(surf, self._size)
        self._screen.blit(surf, (0, 0))
        pg.display.flip()
        if caption:
            pg.display.set_caption(f"{self.title}: {caption}")
        self.shown += 1
        for ev in pg.event.get():
            if ev.type == pg.QUIT or (ev.type == pg.KEYDOWN and ev.key in (pg.K_ESCAPE, pg.K_q)):
                self.closed = True
        return not self.closed

    def close(self) -> None:
        if self._screen is not None:
            self._pg.display.quit()
            self._screen = None
