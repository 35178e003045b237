"""``--show``: a live window of the overlays, checked on a private Xvfb screen."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from moduseg.errors import InputError

from xvfb import Xvfb, xvfb_available


def test_no_display_is_one_line(monkeypatch):
    pytest.importorskip("pygame")
    from moduseg.app.display import check_display

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(InputError, match="--show needs a display, and DISPLAY is not set"):
        check_display()


def test_without_pygame_the_fix_is_named(monkeypatch):
    import builtins

    from moduseg.app.display import check_display

    real = builtins.__import__

    def no_pygame(name, *a, **k):
        if name == "pygame":
            raise ImportError("no pygame")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_pygame)
    with pytest.raises(InputError, match=r"pip install 'moduseg\[show\]'"):
        check_display()


WINDOW_SCRIPT = r"""
import sys, time
import numpy as np
from moduseg.app.display import LiveWindow, check_display
check_display()
w = LiveWindow("moduseg test")
img = np.zeros((120, 200, 3), np.uint8)
img[:, :100] = (250, 20, 20)
img[:, 100:] = (20, 200, 60)
for i in range(3):
    assert w.show(img, f"frame {i}")
print("SHOWN", flush=True)
sys.stdin.readline()          # the test reads the screen, then lets the window go
import pygame
pygame.event.post(pygame.event.Event(pygame.QUIT))
print("OPEN" if w.show(img) else "CLOSED", flush=True)
w.close()
"""


@pytest.mark.skipif(not xvfb_available(), reason="Xvfb is not installed (apt-get install xvfb)")
def test_the_window_shows_the_frame_on_screen(tmp_path):
    pytest.importorskip("pygame")
    with Xvfb(tmp_path / "fb", size=(640, 480)) as x:
        env = dict(x.env(), PYTHONPATH=os.pathsep.join(sys.path))
        p = subprocess.Popen([sys.executable, "-c", WINDOW_SCRIPT], env=env, text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        try:
            assert p.stdout.readline().strip() == "SHOWN", p.stderr.read()
            time.sleep(0.2)
            screen = x.screen()
            p.stdin.write("\n")
            p.stdin.flush()
            assert p.stdout.readline().strip() == "CLOSED"     # closing ends the run
            assert p.wait(timeout=30) == 0
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    red = np.all(screen == (250, 20, 20), -1).sum()
    green = np.all(screen == (20, 200, 60), -1).sum()
    assert red == green == 120 * 100, (red, green)
