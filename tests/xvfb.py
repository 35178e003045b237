"""Xvfb for window tests: a private display whose screen is readable as a file.

``Xvfb -fbdir DIR`` keeps the screen in ``DIR/Xvfb_screen0`` (XWD format), so
a test reads what a user would see without a screenshot tool.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np


def xvfb_available() -> bool:
    return shutil.which("Xvfb") is not None


class Xvfb:
    """A bounded Xvfb on a free display number, with no TCP listener."""

    def __init__(self, fbdir: Path, size=(800, 600)):
        self.fbdir = Path(fbdir)
        self.fbdir.mkdir(parents=True, exist_ok=True)
        self.size = size
        self.proc = None
        self.display = None

    def __enter__(self) -> "Xvfb":
        for n in range(90, 140):
            if Path(f"/tmp/.X{n}-lock").exists() or Path(f"/tmp/.X11-unix/X{n}").exists():
                continue
            proc = subprocess.Popen(
                ["Xvfb", f":{n}", "-screen", "0", f"{self.size[0]}x{self.size[1]}x24",
                 "-fbdir", str(self.fbdir), "-nolisten", "tcp"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.time() + 10
            while time.time() < deadline and proc.poll() is None:
                if Path(f"/tmp/.X11-unix/X{n}").exists() and self.screen_file.exists():
                    self.proc, self.display = proc, f":{n}"
                    return self
                time.sleep(0.1)
            proc.kill()
            proc.wait()
        raise RuntimeError("could not start Xvfb on any display :90-:139")

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @property
    def screen_file(self) -> Path:
        return self.fbdir / "Xvfb_screen0"

    def env(self) -> dict:
        return dict(os.environ, DISPLAY=self.display)

    def screen(self) -> np.ndarray:
        """The screen as RGB uint8 [H, W, 3] (read from the XWD file Xvfb keeps)."""
        data = self.screen_file.read_bytes()
        head = np.frombuffer(data[:100], ">u4")
        header_size, ncolors = int(head[0]), int(head[19])
        w, h, bpp, stride = int(head[4]), int(head[5]), int(head[11]), int(head[12])
        byte_order = int(head[7])                    # 0: LSBFirst
        assert bpp == 32, f"unexpected XWD depth {bpp}"
        start = header_size + 12 * ncolors
        px = np.frombuffer(data[start:start + stride * h], np.uint8).reshape(h, stride)
        px = px[:, :w * 4].reshape(h, w, 4)
        return px[..., [2, 1, 0]] if byte_order == 0 else px[..., [1, 2, 3]]
