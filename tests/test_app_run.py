"""Tests of ``moduseg.app.run``."""

from __future__ import annotations
import json
import multiprocessing
import subprocess
import sys
import pytest
from moduseg.errors import OutputError
from moduseg.app.loop import run_segment
from app_fixtures import (FakeSeg, _cli, _frames_in, _hidden, _images, _one_line_error,  # noqa: E402,F401
                          _strict_json, _video, no_models)


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
