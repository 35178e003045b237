"""Test helpers shared by several test modules."""

from __future__ import annotations
import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import SimpleNamespace
import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from moduseg.cli import cli
from moduseg.config import ModuSegConfig
from moduseg.app import sinks
from moduseg.types import Proposals, Segment, SegmentationResult


CAMVID = ["sky", "building", "pole", "road", "pavement", "tree", "sign", "fence", "car",
          "pedestrian", "bicyclist"]


class FakeSeg:
    """Top half 'sky' (proposal 0), a bottom-left block 'car' (proposal 1), one
    proposal without a class (2) and one of a class that lost every pixel (3).
    Masks are at half resolution, like SAM's."""

    def __init__(self, names=("sky", "road", "car"), background_index=None):
        self.bank = SimpleNamespace(class_names=list(names), background_index=background_index)
        self.full_config = ModuSegConfig()

    def __call__(self, image, timer=None):
        H, W = image.shape[:2]
        mh, mw = H // 2, W // 2
        masks = np.zeros((4, mh, mw), bool)
        masks[0, :mh // 2] = True
        masks[1, mh // 2:, :mw // 2] = True
        masks[2, 1:3, 1:3] = True
        masks[3, :mh // 2, :2] = True
        props = Proposals(masks, np.array([0.9, 0.8, 0.7, 0.6]), (H, W))
        lm = np.full((H, W), 255, np.uint8)
        lm[:H // 2] = 0
        lm[H // 2:, :W // 2] = 2
        segs = [Segment(0, 0, "sky", 1.25, 0.9, H * W // 2, H * W // 2),
                Segment(1, 2, "car", 0.75, 0.8, H * W // 4, H * W // 4),
                Segment(2, -1, "", float("nan"), 0.7, 16, 0),
                Segment(3, 1, "road", 0.5, 0.6, H * 2, 0)]
        return SegmentationResult(lm, segs, {"backbone": 12.0, "proposer": 30.0, "nms": 1.0,
                                             "total": 40.0}, list(self.bank.class_names), props)


def _images(folder: Path, n=3, hw=(48, 64)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        cv2.imwrite(str(folder / f"img{i}.png"), rng.integers(0, 255, (*hw, 3), np.uint8))
    return folder


def _video(path: Path, n=8, hw=(48, 64), noise=False) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (hw[1], hw[0]))
    rng = np.random.default_rng(1)
    for i in range(n):
        f = (rng.integers(0, 255, (*hw, 3), np.uint8) if noise
             else np.full((*hw, 3), 20 * i % 255, np.uint8))
        w.write(f)
    w.release()
    return path


def _frames_in(video: Path) -> int:
    return sinks.verified_video_frames(video, 10 ** 6)


def _hidden(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.startswith("."))


def _strict_json(path: Path) -> dict:
    def bad(c):
        raise AssertionError(f"non-standard JSON constant {c} in {path}")
    return json.loads(path.read_text(), parse_constant=bad)


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("Chromium not installed (Debian: apt-get install chromium); index.html "
                "not checked in a browser")


def _chromium_run(args, timeout=90):
    with tempfile.TemporaryDirectory() as profile:
        cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}", *args]
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.skip("Chromium did not finish in time")


CHECK_SCRIPT = """<script>
window.addEventListener('load', function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++)
    if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++;
  var d = document.createElement('div');
  d.id = 'imgcheck'; d.textContent = 'imgs ' + ok + '/' + imgs.length;
  document.body.appendChild(d);
});
</script></body>"""


def check_index_in_chromium(out: Path, shot: Path) -> int:
    """Load index.html from disk in headless Chromium: every <img> decoded
    (a marker written by a load handler in a copy of the page), and a screenshot."""
    page = (out / "index.html").read_text()
    assert "<script" not in page and "http://" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")                         # no JS, no network
    probe = out / "_imgcheck.html"
    probe.write_text(page.replace("</body>", CHECK_SCRIPT))
    try:
        r = _chromium_run(["--virtual-time-budget=10000", "--dump-dom", probe.as_uri()])
    finally:
        probe.unlink()
    assert r.returncode == 0, r.stderr[-2000:]
    marker = r.stdout[r.stdout.find('id="imgcheck"'):][:80]
    n_img = page.count("<img ")
    assert f"imgs {n_img}/{n_img}<" in marker, marker
    r = _chromium_run(["--window-size=1200,1000", f"--screenshot={shot}",
                       (out / "index.html").as_uri()])
    assert r.returncode == 0 and shot.is_file(), r.stderr[-2000:]
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (1000, 1200)
    assert img.reshape(-1, 3).std(0).max() > 20                          # not a blank page
    return n_img


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A small tmpfs (a real full disk); skips where mounting is not allowed."""
    def make(size: str, ro: bool = False):
        mnt = tmp_path / f"mnt{len(mounted)}"
        mnt.mkdir()
        opts = f"size={size}" + (",ro" if ro else "")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(mnt)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()[:80]})")
        mounted.append(mnt)
        return mnt
    mounted: list[Path] = []
    yield make
    for m in mounted:
        subprocess.run(["umount", "-l", str(m)], capture_output=True)


def _fill(folder: Path):
    try:
        with open(folder / "filler", "wb") as f:
            while True:
                f.write(b"\0" * 65536)
    except OSError:
        pass


def _private(parent, name, pid):
    from moduseg.owned import MARKER
    d = parent / name
    d.mkdir(parents=True)
    (d / MARKER).write_text(json.dumps({"pid": pid}))
    return d


@pytest.fixture
def no_models(monkeypatch):
    """Fail loudly if a command gets as far as loading a bank or models."""
    def boom(*a, **k):
        raise AssertionError("models loaded before the output path was checked")
    monkeypatch.setattr("moduseg.bank.segmenter.segmenter_from_bank", boom)
    monkeypatch.setattr("moduseg.build.build_backbone", boom)
    monkeypatch.setattr("moduseg.bank.store.load_bank", boom)


def _cli(args):
    r = CliRunner().invoke(cli, args)
    assert not isinstance(r.exception, AssertionError), r.exception
    return r


def _one_line_error(r, *words):
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r.output, r.output
    for w in words:
        assert w in lines[0], lines[0]


def _jpeg(path: Path, hw=(64, 80)) -> bytes:
    rng = np.random.default_rng(2)
    cv2.imwrite(str(path), rng.integers(0, 255, (*hw, 3), np.uint8))
    return path.read_bytes()
