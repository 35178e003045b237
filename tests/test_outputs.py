"""What ``moduseg segment`` writes (issue 16, "Output a person can read") and how
it writes it (issue 18 items 2, 3, 7, 10 segment side, 11).

Most tests drive ``run_segment`` with a fake segmenter (known label maps and
segments), so they need no models; one real-data test runs the CLI with the
default models and checks the overlay and the ``index.html`` screenshot.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from moduseg.cli import cli
from moduseg.config import ModuSegConfig
from moduseg.errors import InputError, OutputError
from moduseg.io import atomic_path, jpeg_complete, read_image, read_label_map, write_json
from moduseg.app import run as outputs
from moduseg.app import sinks
from moduseg.app.loop import run_segment
from moduseg.app.sources import count_frames
from moduseg.render import MIN_LUMA, class_palette, legend_height, luma, render_overlay
from moduseg.types import Proposals, Segment, SegmentationResult

CAMVID = ["sky", "building", "pole", "road", "pavement", "tree", "sign", "fence", "car",
          "pedestrian", "bicyclist"]


# -- a segmenter with known answers ------------------------------------------------------

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


# -- palette and overlay -----------------------------------------------------------------

def test_camvid_palette_keeps_camvid_colours_and_none_is_dark():
    pal = class_palette(CAMVID)
    assert (luma(pal) >= MIN_LUMA - 0.5).all()
    assert len({tuple(c) for c in pal}) == len(CAMVID)
    assert tuple(pal[CAMVID.index("sky")]) == (128, 128, 128)        # CamVid's own colour
    road = pal[CAMVID.index("road")].astype(int)                      # (128, 64, 128) lifted
    assert np.abs(road - (128, 64, 128)).max() <= 15
    car = pal[CAMVID.index("car")].astype(int)                        # (64, 0, 128) lifted
    assert car[2] > car[0] > car[1]                                   # still purple


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(min_size=0, max_size=12), min_size=1, max_size=120))
def test_any_class_list_gets_a_visible_palette(names):
    pal = class_palette(names)
    assert pal.shape == (len(names), 3) and pal.dtype == np.uint8
    assert (luma(pal) >= MIN_LUMA - 0.5).all()


def test_generated_palette_colours_are_distinct():
    pal = class_palette([f"class{i}" for i in range(80)]).astype(int)
    d = np.abs(pal[:, None] - pal[None]).sum(-1) + np.eye(80, dtype=int) * 999
    assert d.min() >= 15


def test_overlay_keeps_the_picture_and_shows_a_legend_of_present_classes():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (120, 200, 3), np.uint8)
    lm = np.full((120, 200), 255, np.uint8)
    lm[:60] = 0
    lm[60:, :100] = 2
    names = ["sky", "road", "car"]
    pal = class_palette(names)
    ov = render_overlay(img, lm, pal, names)
    lh = legend_height(names, 200)
    assert ov.shape == (120 + lh, 200, 3)
    body = ov[:120].astype(float)
    inner = np.zeros((120, 200), bool)
    inner[2:58, 2:198] = True
    # the picture stays readable: the blended region still follows the image
    assert np.corrcoef(body[inner].ravel(), img[inner].astype(float).ravel())[0, 1] > 0.8
    assert (ov[70:118, 102:198] == img[70:118, 102:198]).all()          # unassigned: untouched
    strip = ov[120:].reshape(-1, 3)
    colours = {tuple(c) for c in strip}
    assert tuple(pal[0]) in colours and tuple(pal[2]) in colours       # swatches present
    assert tuple(pal[1]) not in colours                                # absent class: none


def test_class_on_a_black_frame_stays_visible():
    names = ["car"]
    lm = np.zeros((40, 40), np.uint8)
    ov = render_overlay(np.zeros((40, 40, 3), np.uint8), lm, class_palette(names), names)
    assert luma(ov[5:35, 5:35].astype(float)).mean() > 0.4 * MIN_LUMA


# -- a folder run: files, segments.json, label values, index.html ------------------------

def test_folder_run_writes_every_output(tmp_path):
    src = _images(tmp_path / "in", 3)
    seg = FakeSeg()
    s = run_segment(seg, str(src), tmp_path / "out", progress=False)
    out = tmp_path / "out"
    assert s.frames == 3
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["img0.png", "img1.png",
                                                                 "img2.png"]
    assert len(list((out / "overlays").glob("*.jpg"))) == 3
    assert (out / "index.html").is_file() and (out / "palette.json").is_file()
    assert _hidden(out) == [".moduseg-run.json"]          # the run's manifest, no temps
    lm = read_label_map(out / "labels" / "img1.png")
    assert set(np.unique(lm)) == {0, 2, 255}                             # class indices kept
    d = _strict_json(out / "segments.json")
    assert d["format"] == "moduseg.segments" and d["class_names"] == ["sky", "road", "car"]
    assert d["config"] == ModuSegConfig().to_dict()                      # the whole config
    assert [f["name"] for f in d["frames"]] == ["img0", "img1", "img2"]
    f = d["frames"][0]
    assert f["image_hw"] == [48, 64] and f["class_pixels"] == {"sky": 1536, "car": 768}
    s0, s1, s2, s3 = f["segments"]
    assert s0["class_id"] == 0 and s0["class_name"] == "sky" and s0["confidence"] == 1.0
    assert s1["confidence"] == 0.75 and s1["painted"] and s1["painted_pixels"] == 768
    assert s2["class_id"] is None and s2["confidence"] == 0.0 and not s2["painted"]
    assert s3["class_name"] == "road" and not s3["painted"]
    from pycocotools import mask as mask_utils
    m1 = mask_utils.decode({"size": s1["rle"]["size"], "counts": s1["rle"]["counts"].encode()})
    assert m1.shape == (48, 64) and m1.sum() == 768 and (m1.astype(bool) == (lm == 2)).all()
    assert s1["bbox"] == [0, 24, 32, 24]
    assert s0["bbox"] == [0, 0, 64, 24]
    assert set(d["median_ms"]) == {"backbone", "proposer", "nms", "total"}


def test_painted_pixels_are_full_resolution_pixels_with_low_resolution_masks():
    from moduseg.bank.builder import build_bank
    from moduseg.config import BankConfig, RuntimeConfig
    from moduseg.runtime.index import build_index
    from moduseg.runtime.pipeline import assign
    from synthetic import ColourBackbone, dataset, gt_proposals, scene

    bank = build_bank(dataset(6), ColourBackbone(), BankConfig(erosion_iterations=3, min_area=50))
    image, label = scene(5)
    full = gt_proposals(label)
    half = Proposals(full.masks[:, ::2, ::2], full.scores, label.shape)     # SAM-like masks
    res = assign(ColourBackbone()(image), half, bank, build_index(bank.vectors),
                 RuntimeConfig(min_area=50, top_k=5))
    painted = [s for s in res.segments if s.painted_pixels]
    assert painted and res.proposals is half
    for s in painted:                      # disjoint masks: each wins all of its pixels
        assert s.painted_pixels == s.area == 4 * int(half.masks[s.proposal].sum())


def test_overlay_and_label_png_of_a_background_class(tmp_path):
    src = _images(tmp_path / "in", 1)
    run_segment(FakeSeg(("background", "road", "car"), background_index=0), str(src),
                tmp_path / "out", progress=False)
    ov = cv2.imread(str(tmp_path / "out" / "overlays" / "img0.jpg"))
    assert ov.shape[0] > 48                                              # legend strip added


def test_no_overlay_still_writes_labels_json_and_index(tmp_path):
    src = _images(tmp_path / "in", 2)
    run_segment(FakeSeg(), str(src), tmp_path / "out", overlays=False, progress=False)
    out = tmp_path / "out"
    assert not (out / "overlays").exists() and (out / "index.html").is_file()
    assert len(_strict_json(out / "segments.json")["frames"]) == 2


def test_progress_totals_for_folders_and_videos(tmp_path):
    src = _images(tmp_path / "in", 5)
    assert count_frames(str(src)) == 5 and count_frames(str(src), 2) == 2
    v = _video(tmp_path / "v.mp4", 7)
    assert count_frames(str(v)) == 7 and count_frames(str(v), 3) == 3
    assert count_frames(str(src / "img0.png")) == 1


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


@pytest.mark.slow
def test_index_html_renders_its_images_in_headless_chromium(tmp_path):
    src = _images(tmp_path / "in", 3)
    out = tmp_path / "out"
    run_segment(FakeSeg(), str(src), out, progress=False)
    assert check_index_in_chromium(out, tmp_path / "shot.png") == 3


def test_index_html_of_a_broken_gallery_is_caught(tmp_path):
    """The browser check can fail: a missing overlay is reported."""
    src = _images(tmp_path / "in", 2)
    out = tmp_path / "out"
    run_segment(FakeSeg(), str(src), out, progress=False)
    _chromium()
    (out / "overlays" / "img1.jpg").unlink()
    with pytest.raises(AssertionError, match="imgs 1/2"):
        check_index_in_chromium(out, tmp_path / "shot.png")


# -- video: verified writes, previews, unique temps (#18 items 2, 3) ----------------------

def test_video_run_writes_a_verified_overlay_video(tmp_path):
    v = _video(tmp_path / "v.mp4", 8)
    out = tmp_path / "out"
    s = run_segment(FakeSeg(), str(v), out, progress=False)
    d = _strict_json(out / "segments.json")
    assert s.frames == 8 == len(d["frames"]) == _frames_in(out / "overlay.mp4")
    assert d["overlay_video"] == "overlay.mp4" and d["input"]["kind"] == "video"
    assert len(list((out / "previews").glob("*.jpg"))) == 8
    assert len(list((out / "labels").glob("*.png"))) == 8
    cap = cv2.VideoCapture(str(out / "overlay.mp4"))
    ok, frame = cap.read()
    cap.release()
    lh = legend_height(["sky", "road", "car"], 64)
    assert ok and frame.shape[:2] == (48 + lh + lh % 2, 64)             # legend, even height


def test_odd_sized_video_frames_keep_every_pixel(tmp_path):
    """OpenCV's writer crops odd frame sizes to even: the overlay is padded instead."""
    from moduseg.app.sources import Frame

    seg = FakeSeg()
    out = tmp_path / "out"
    w = outputs.RunWriter(out, seg.bank.class_names, {}, kind="video", input_spec="cam",
                          fps=10.0, total=3)
    for i in range(3):
        img = np.full((47, 63, 3), 40 * i, np.uint8)
        w.add(Frame(i, f"frame_{i:06d}", img), seg(img))
    w.finish()
    cap = cv2.VideoCapture(str(out / "overlay.mp4"))
    ok, frame = cap.read()
    cap.release()
    lh = legend_height(seg.bank.class_names, 63)
    assert ok and frame.shape[:2] == (47 + lh + (47 + lh) % 2, 64)


def _lost_write(self, rgb):
    """An overlay-video write that is lost, as on a full disk where the encoder
    reports nothing."""
    self.frames += 1


def test_lost_video_writes_are_an_error_not_an_empty_overlay(tmp_path, monkeypatch):
    v = _video(tmp_path / "v.mp4", 5)
    out = tmp_path / "out"
    run_segment(FakeSeg(), str(v), out, max_frames=3, progress=False)     # a good first run
    before = (out / "segments.json").read_bytes()
    from moduseg.app import encode
    monkeypatch.setattr(encode.OverlayVideo, "write", _lost_write)
    with pytest.raises(OutputError, match="0 of 5 frames"):
        run_segment(FakeSeg(), str(v), out, progress=False)
    # the previous run's files are untouched, no temp is left
    assert (out / "segments.json").read_bytes() == before
    assert _frames_in(out / "overlay.mp4") == 3
    assert _hidden(out) == [".moduseg-run.json"]          # the manifest, no temp


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


def test_disk_filling_up_during_a_video_run(tmp_path, tiny_tmpfs):
    v = _video(tmp_path / "v.mp4", 40, hw=(240, 320), noise=True)    # a few MB of overlays
    mnt = tiny_tmpfs("1m")
    out = mnt / "out"
    with pytest.raises(OutputError):
        run_segment(FakeSeg(), str(v), out, progress=False)
    assert not (out / "overlay.mp4").exists() and not (out / "segments.json").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".run.")]


def _concurrent_run(src, out, max_frames, q):
    try:
        run_segment(FakeSeg(), src, out, max_frames=max_frames, progress=False)
        q.put("ok")
    except BaseException as e:   # reported to the parent
        q.put(f"{type(e).__name__}: {e}")


def test_two_video_runs_into_one_folder_leave_a_consistent_set(tmp_path):
    v = _video(tmp_path / "v.mp4", 8)
    out = tmp_path / "out"
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_concurrent_run, args=(str(v), out, n, q)) for n in (8, 5)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert sorted(q.get(timeout=5) for _ in procs) == ["ok", "ok"]
    d = _strict_json(out / "segments.json")
    n = len(d["frames"])
    assert n in (8, 5)
    assert _frames_in(out / "overlay.mp4") == n == len(list((out / "labels").glob("*.png")))
    assert _hidden(out) == [".moduseg-run.json"]


# -- re-runs and stale temps (#18 item 11) ------------------------------------------------

def test_rerun_replaces_the_previous_outputs_as_a_set(tmp_path):
    v = _video(tmp_path / "v.mp4", 6)
    out = tmp_path / "out"
    run_segment(FakeSeg(), str(v), out, progress=False)
    (out / "notes.txt").write_text("mine")                                # not ours: kept
    src = _images(tmp_path / "in", 2)
    run_segment(FakeSeg(), str(src), out, progress=False)
    assert not (out / "overlay.mp4").exists() and not (out / "previews").exists()
    assert sorted(p.stem for p in (out / "labels").iterdir()) == ["img0", "img1"]
    assert [f["name"] for f in _strict_json(out / "segments.json")["frames"]] == ["img0",
                                                                                 "img1"]
    assert (out / "notes.txt").read_text() == "mine"


def test_a_folder_without_a_runs_record_is_not_written_into(tmp_path):
    """Outputs of a run are replaced only when the folder's manifest records them: a
    segments.json alone (a user's, or of a version before the manifest) is not a record."""
    out = tmp_path / "out"
    (out / "labels").mkdir(parents=True)
    (out / "labels" / "frame_000000.png").write_bytes(b"old")
    (out / "segments.json").write_text(json.dumps({"config": {"min_area": 1},
                                                   "frames": [{"name": "frame_000000"}],
                                                   "median_ms": {}}, indent=2))
    with pytest.raises(OutputError, match="not written by"):
        run_segment(FakeSeg(), str(_images(tmp_path / "in", 1)), out, progress=False)
    assert (out / "labels" / "frame_000000.png").read_bytes() == b"old"
    assert sorted(p.name for p in out.iterdir()) == ["labels", "segments.json"]


def test_a_users_files_of_the_same_names_are_never_replaced(tmp_path, no_models):
    out = tmp_path / "dataset"
    (out / "labels").mkdir(parents=True)
    (out / "labels" / "gt.png").write_bytes(b"mine")
    src = _images(tmp_path / "in", 1)
    with pytest.raises(OutputError, match="not written by"):
        run_segment(FakeSeg(), str(src), out, progress=False)
    _one_line_error(_cli(["segment", str(src), "--bank", "b.npz", "--out", str(out)]),
                    "--out", "labels")
    assert (out / "labels" / "gt.png").read_bytes() == b"mine"
    assert sorted(p.name for p in out.iterdir()) == ["labels"]


def test_orphaned_temps_are_cleaned_and_live_ones_kept(tmp_path):
    """Only a run's own private folders (marked as such) of a dead process go."""
    from moduseg.app.ownership import MARKER
    out = tmp_path / "out"
    out.mkdir()
    dead = out / ".run.999999999-abcd1234"                                # pid beyond pid_max
    (dead / "labels").mkdir(parents=True)
    (dead / MARKER).write_text(json.dumps({"pid": 999999999}))
    unmarked = out / ".run.999999998-abcd1234"                            # not recorded as ours
    unmarked.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = out / f".run.{sleeper.pid}-abcd1234"
        live.mkdir()
        (live / MARKER).write_text(json.dumps({"pid": sleeper.pid}))
        run_segment(FakeSeg(), str(_images(tmp_path / "in", 1)), out, progress=False)
        assert not dead.exists() and unmarked.exists()
        assert live.exists()                                             # its owner still runs
    finally:
        sleeper.kill()
        sleeper.wait()


def _private(parent, name, pid):
    from moduseg.owned import MARKER
    d = parent / name
    d.mkdir(parents=True)
    (d / MARKER).write_text(json.dumps({"pid": pid}))
    return d


def test_atomic_writes_clean_only_the_temps_of_dead_processes_they_own(tmp_path):
    from moduseg.owned import TEMP_PREFIX
    dead = _private(tmp_path, f"{TEMP_PREFIX}999999999-abcdefgh", 999999999)
    (dead / "b.json").write_text("{")
    mine = _private(tmp_path, f"{TEMP_PREFIX}{os.getpid()}-zzzzzzzz", os.getpid())
    unmarked = tmp_path / f"{TEMP_PREFIX}999999998-abcdefgh"               # not recorded as ours
    unmarked.mkdir()
    users = tmp_path / ".b.json.999999999-abcdefgh.json"                  # a user's file
    users.write_text("{")
    write_json(tmp_path / "b.json", {"a": 1})
    assert not dead.exists() and mine.exists() and unmarked.exists() and users.exists()
    assert json.loads((tmp_path / "b.json").read_text()) == {"a": 1}
    with atomic_path(tmp_path / "c.txt") as tmp:
        assert tmp.parent.name.startswith(f"{TEMP_PREFIX}{os.getpid()}-")
        tmp.write_text("c")
    assert (tmp_path / "c.txt").read_text() == "c" and not tmp.parent.exists()
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "d.txt") as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer failed")
    assert not (tmp_path / "d.txt").exists() and not tmp.parent.exists()


def test_a_killed_model_pull_leaves_nothing_after_the_next_pull(tmp_path):
    from moduseg.errors import ModelNotFoundError
    from moduseg.models.pull import PULL_PREFIX, pull

    home = tmp_path / "home"
    dead = _private(home, f"{PULL_PREFIX}999999999-abcdefgh", 999999999)
    (dead / "download").mkdir(parents=True)
    (dead / "download" / "big.whl").write_bytes(b"x" * 1000)
    users = [home / ".pull-abcdefgh", home / f"{PULL_PREFIX}999999998-mine"]   # not ours
    for d in users:
        d.mkdir()
        os.utime(d, (time.time() - 3600,) * 2)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelNotFoundError):
        pull(home=home, source_dir=empty, log=lambda m: None)
    assert not dead.exists() and all(d.exists() for d in users)
    assert sorted(p.name for p in home.iterdir()) == sorted(d.name for d in users)


# -- output paths checked before any work (#18 item 7) ------------------------------------

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


def test_segment_out_that_is_a_file_or_under_one(tmp_path, no_models):
    img = _images(tmp_path / "in", 1) / "img0.png"
    f = tmp_path / "afile"
    f.write_text("x")
    _one_line_error(_cli(["segment", str(img), "--bank", "b.npz", "--out", str(f)]),
                    "--out", "existing file")
    _one_line_error(_cli(["segment", str(img), "--bank", "b.npz", "--out", str(f / "sub")]),
                    "--out", "is a file")


def test_segment_out_read_only_or_full(tmp_path, tiny_tmpfs, no_models):
    img = _images(tmp_path / "in", 1) / "img0.png"
    ro = tiny_tmpfs("1m", ro=True)
    _one_line_error(_cli(["segment", str(img), "--bank", "b.npz", "--out", str(ro / "o")]),
                    "--out", "cannot be written")
    full = tiny_tmpfs("256k")
    _fill(full)
    _one_line_error(_cli(["segment", str(img), "--bank", "b.npz", "--out", str(full / "o")]),
                    "--out")


def test_segment_out_not_writable_by_permissions(tmp_path, no_models):
    if os.geteuid() == 0:
        pytest.skip("root ignores folder permissions (the tmpfs test covers read-only)")
    img = _images(tmp_path / "in", 1) / "img0.png"
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    try:
        _one_line_error(_cli(["segment", str(img), "--bank", "b.npz", "--out", str(d)]),
                        "--out")
    finally:
        d.chmod(0o700)


def test_eval_out_checked_first(tmp_path, tiny_tmpfs, no_models):
    _one_line_error(_cli(["eval", "--dataset", "camvid", "--root", str(tmp_path / "none"),
                          "--bank", "b.npz", "--out", str(tmp_path)]), "--out", "is a folder")
    full = tiny_tmpfs("256k")
    _fill(full)
    _one_line_error(_cli(["eval", "--dataset", "camvid", "--root", str(tmp_path / "none"),
                          "--bank", "b.npz", "--out", str(full / "s.json")]), "--out")


def test_a_disk_filling_during_a_write_is_an_output_error(tiny_tmpfs):
    mnt = tiny_tmpfs("256k")
    _fill(mnt)
    with pytest.raises(OutputError, match="cannot write"):
        write_json(mnt / "scores.json", {"x": list(range(100000))})
    assert not (mnt / "scores.json").exists()
    from moduseg.bank.store import save_bank
    from moduseg.types import Bank, BackboneIdentity
    ident = BackboneIdentity("b", "224", 14, 64, "0" * 64)
    bank = Bank(np.ones((500, 64), np.float32), np.zeros(500), ["a"], ident,
                np.array(["i"] * 500))
    with pytest.raises(OutputError, match="cannot write"):
        save_bank(bank, mnt / "b.npz")
    assert [p.name for p in mnt.iterdir()] == ["filler"]


def test_bank_build_out_checked_first(tmp_path, tiny_tmpfs, no_models):
    base = ["bank", "build", "--dataset", "camvid", "--root", str(tmp_path / "none")]
    _one_line_error(_cli(base + ["--out", str(tmp_path)]), "--out", "is a folder")
    _one_line_error(_cli(base + ["--out", str(tmp_path / "camvid")]), "camvid.npz")
    f = tmp_path / "afile"
    f.write_text("x")
    _one_line_error(_cli(base + ["--out", str(f / "b.npz")]), "is a file")
    full = tiny_tmpfs("256k")
    _fill(full)
    _one_line_error(_cli(base + ["--out", str(full / "b.npz")]), "--out")


# -- limits and unreadable inputs (#18 item 10, segment side) ------------------------------

@pytest.mark.parametrize("n", ["0", "-1"])
def test_max_frames_must_be_positive(tmp_path, n, no_models):
    img = _images(tmp_path / "in", 1) / "img0.png"
    r = _cli(["segment", str(img), "--bank", "b.npz", "--out", str(tmp_path / "o"),
              "--max-frames", n])
    assert r.exit_code == 2 and "--max-frames" in r.output


def test_a_video_without_frames_is_an_error_before_models(tmp_path, no_models):
    empty = _video(tmp_path / "empty.mp4", 0)
    zero = tmp_path / "zero.mp4"
    zero.write_bytes(b"")
    for v in (empty, zero):
        r = _cli(["segment", str(v), "--bank", "b.npz", "--out", str(tmp_path / "o")])
        _one_line_error(r, str(v))
    assert not (tmp_path / "o").exists() or not (tmp_path / "o" / "segments.json").exists()


def _jpeg(path: Path, hw=(64, 80)) -> bytes:
    rng = np.random.default_rng(2)
    cv2.imwrite(str(path), rng.integers(0, 255, (*hw, 3), np.uint8))
    return path.read_bytes()


def test_truncated_jpeg_is_an_error_for_a_single_image(tmp_path):
    data = _jpeg(tmp_path / "a.jpg")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[:len(data) * 2 // 3])
    assert cv2.imread(str(cut)) is not None                              # OpenCV would accept
    with pytest.raises(InputError, match="truncated"):
        read_image(cut)
    with pytest.raises(InputError, match="truncated"):
        run_segment(FakeSeg(), str(cut), tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "segments.json").exists()


def test_truncated_jpeg_in_a_folder_is_reported_and_skipped(tmp_path):
    src = _images(tmp_path / "in", 2)
    data = _jpeg(src / "bad.jpg")
    (src / "bad.jpg").write_bytes(data[:len(data) // 2])
    s = run_segment(FakeSeg(), str(src), tmp_path / "out", progress=False)
    d = _strict_json(tmp_path / "out" / "segments.json")
    assert s.frames == 2 and [f["name"] for f in d["frames"]] == ["img0", "img1"]
    assert len(d["skipped"]) == 1 and d["skipped"][0]["file"].endswith("bad.jpg")
    assert "truncated" in d["skipped"][0]["error"]


def test_a_folder_of_only_unreadable_images_is_an_error(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    data = _jpeg(src / "bad.jpg")
    (src / "bad.jpg").write_bytes(data[:100])
    with pytest.raises(InputError, match="no frame"):
        run_segment(FakeSeg(), str(src), tmp_path / "out", progress=False)


def test_jpeg_check_skips_an_exif_thumbnail_and_accepts_trailing_bytes(tmp_path):
    data = _jpeg(tmp_path / "a.jpg")
    thumb = _jpeg(tmp_path / "t.jpg", (8, 8))
    payload = b"Exif\0\0" + thumb
    app1 = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    with_thumb = data[:2] + app1 + data[2:]
    (tmp_path / "x.jpg").write_bytes(with_thumb[:len(with_thumb) - 300])
    assert not jpeg_complete(tmp_path / "x.jpg")
    (tmp_path / "y.jpg").write_bytes(with_thumb + b"trailing junk")
    assert jpeg_complete(tmp_path / "y.jpg")
    assert jpeg_complete(tmp_path / "t.jpg")


@settings(max_examples=40, deadline=None)
@given(st.floats(0.0, 0.999))
def test_every_cut_of_a_jpeg_is_caught(fraction):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "a.jpg"
        data = _jpeg(p)
        p.write_bytes(data[:int(len(data) * fraction)])
        with pytest.raises(InputError):
            read_image(p)
        if len(data) * fraction >= 2:                   # the JPEG signature is intact
            assert not jpeg_complete(p)


# -- real models: the CLI end to end, overlay and index.html screenshot --------------------

@pytest.mark.realdata
@pytest.mark.models
def test_segment_cli_on_camvid_with_the_default_models(shared_data, tmp_path):
    from moduseg.bank.builder import build_bank
    from moduseg.bank.datasets import camvid
    from moduseg.bank.store import save_bank
    from moduseg.config import preset
    from moduseg.errors import ModuSegError
    from moduseg.build import load_default_backbone

    cfg = preset("default")
    try:
        backbone = load_default_backbone(**cfg.backbone_options())
    except ModuSegError as e:
        pytest.skip(f"default models not installed ({e}); run 'moduseg models pull'")
    train = camvid(shared_data / "camvid", "train")
    train.samples = train.samples[::40][:10]
    bank = build_bank(train, backbone, cfg.bank, config_record=cfg.to_dict())
    save_bank(bank, tmp_path / "cv.npz")
    val = camvid(shared_data / "camvid", "val")
    src = tmp_path / "frames"
    src.mkdir()
    for s in val.samples[::50][:2]:
        shutil.copy(s.image_path, src / Path(s.image_path).name)
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["segment", str(src), "--bank", str(tmp_path / "cv.npz"),
                                 "--out", str(out)])
    assert r.exit_code == 0, r.output
    d = _strict_json(out / "segments.json")
    assert d["class_names"] == CAMVID and len(d["frames"]) == 2
    assert d["config"]["preset"] == "default" and "runtime" in d["config"]
    f = d["frames"][0]
    painted = [s for s in f["segments"] if s["painted"]]
    assert painted and all(0 <= s["confidence"] <= 1 for s in f["segments"])
    assert sum(s["painted_pixels"] for s in painted) <= 360 * 480 + len(painted)  # rounding
    assert all(s["rle"]["size"] == [360, 480] for s in f["segments"])
    names = sorted(out.joinpath("overlays").iterdir())
    ov = cv2.imread(str(names[0]))
    assert ov.shape[1] == 480 and ov.shape[0] > 360                      # legend below
    shot = tmp_path / "index.png"
    check_index_in_chromium(out, shot)
