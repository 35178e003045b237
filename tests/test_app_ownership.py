"""``segment`` removes from ``--out`` only what a run created and recorded
(issue 29 item 2).

On today's main a user's ``.old.projectA/`` folder and ``.run.12345-mine``,
``.old.20240101``, ``.run.backup_1`` files disappear after a run (they look like
the run's own temporaries), and files a user adds under ``labels/`` or
``overlays/`` are deleted by the next run (whole folders were swapped).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from moduseg.app.loop import run_segment
from moduseg.app.ownership import MANIFEST, MARKER, read_run_manifest
from moduseg.errors import OutputError

from app_fixtures import FakeSeg, _images, _video

OLD = time.time() - 7 * 24 * 3600        # a week old: past every staleness window


def _user_files(out: Path) -> dict[str, bytes]:
    """A user's own things in --out whose names look like a run's temporaries."""
    made = {}
    (out / ".old.projectA").mkdir(parents=True)
    (out / ".old.projectA" / "notes.txt").write_bytes(b"project A")
    made[".old.projectA/notes.txt"] = b"project A"
    (out / ".run.backup_1").mkdir()
    (out / ".run.backup_1" / "data.bin").write_bytes(b"backup")
    made[".run.backup_1/data.bin"] = b"backup"
    for name in (".run.12345-mine", ".old.20240101", ".run.99999999-abcdefgh",
                 ".overlay.part.mp4", ".segments.json.999999999-abcdefgh.json",
                 ".moduseg-tmp.999999999-abcdefgh"):
        (out / name).write_bytes(name.encode())
        made[name] = name.encode()
    for rel in made:
        os.utime(out / rel, (OLD, OLD))
    for d in (".old.projectA", ".run.backup_1"):
        os.utime(out / d, (OLD, OLD))
    return made


def _still_there(out: Path, made: dict[str, bytes]) -> None:
    for rel, data in made.items():
        assert (out / rel).read_bytes() == data, rel


def test_a_users_temp_looking_files_and_folders_survive_runs(tmp_path):
    out = tmp_path / "out"
    made = _user_files(out)
    src = _images(tmp_path / "in", 2)
    run_segment(FakeSeg(), str(src), out, progress=False)
    _still_there(out, made)
    run_segment(FakeSeg(), str(_video(tmp_path / "v.mp4", 4)), out, progress=False)
    _still_there(out, made)
    assert sorted(p.name for p in (out / "labels").iterdir()) == [
        f"frame_{i:06d}.png" for i in range(4)]


def test_files_a_user_adds_under_labels_and_overlays_survive_the_next_run(tmp_path):
    out = tmp_path / "out"
    run_segment(FakeSeg(), str(_images(tmp_path / "in", 3)), out, progress=False)
    (out / "labels" / "my_correction.png").write_bytes(b"fixed by hand")
    (out / "overlays" / "slide.jpg").write_bytes(b"for the talk")
    (out / "overlays" / "keep").mkdir()
    (out / "overlays" / "keep" / "x.txt").write_bytes(b"x")
    # the next run: fewer frames, then a video (no overlays/ of its own), then --no-overlay
    run_segment(FakeSeg(), str(_images(tmp_path / "in2", 1)), out, progress=False)
    run_segment(FakeSeg(), str(_video(tmp_path / "v.mp4", 3)), out, progress=False)
    run_segment(FakeSeg(), str(_images(tmp_path / "in3", 2)), out, overlays=False,
                progress=False)
    assert (out / "labels" / "my_correction.png").read_bytes() == b"fixed by hand"
    assert (out / "overlays" / "slide.jpg").read_bytes() == b"for the talk"
    assert (out / "overlays" / "keep" / "x.txt").read_bytes() == b"x"
    # every file of the earlier runs is gone, the last run's are there
    assert sorted(p.name for p in (out / "labels").iterdir()) == [
        "img0.png", "img1.png", "my_correction.png"]
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["keep", "slide.jpg"]
    assert not (out / "overlay.mp4").exists() and not (out / "previews").exists()
    files = read_run_manifest(out)
    assert "labels/my_correction.png" not in files and "labels/img1.png" in files


def test_a_users_file_where_the_run_would_write_is_refused_untouched(tmp_path):
    out = tmp_path / "out"
    run_segment(FakeSeg(), str(_images(tmp_path / "in", 1)), out, progress=False)
    (out / "labels" / "img1.png").write_bytes(b"mine")       # a name the next run writes
    before = (out / "segments.json").read_bytes()
    with pytest.raises(OutputError, match=r"labels/img1.png, which no run .* wrote"):
        run_segment(FakeSeg(), str(_images(tmp_path / "in2", 2)), out, progress=False)
    assert (out / "labels" / "img1.png").read_bytes() == b"mine"
    assert (out / "segments.json").read_bytes() == before       # the previous run intact
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [MANIFEST]


def test_a_crafted_manifest_cannot_reach_outside_out(tmp_path):
    out = tmp_path / "out"
    run_segment(FakeSeg(), str(_images(tmp_path / "in", 1)), out, progress=False)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (out / "mine.txt").write_text("keep")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "x.png").write_text("keep")
    (out / "linked").symlink_to(elsewhere)
    rec = json.loads((out / MANIFEST).read_text())
    rec["files"] += ["../victim.txt", str(victim), "linked/x.png", "./mine.txt", "", 3,
                     ".old.projectA/notes.txt"]
    (out / MANIFEST).write_text(json.dumps(rec))
    run_segment(FakeSeg(), str(_images(tmp_path / "in2", 1)), out, progress=False)
    assert victim.read_text() == "keep" and (out / "mine.txt").read_text() == "keep"
    assert (elsewhere / "x.png").read_text() == "keep"


def test_a_labels_link_to_a_users_folder_is_not_written_through(tmp_path):
    out = tmp_path / "out"
    run_segment(FakeSeg(), str(_images(tmp_path / "in", 1)), out, progress=False)
    import shutil
    shutil.rmtree(out / "labels")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "img0.png").write_bytes(b"theirs")
    (out / "labels").symlink_to(theirs)
    with pytest.raises(OutputError):
        run_segment(FakeSeg(), str(_images(tmp_path / "in2", 1)), out, progress=False)
    assert sorted(p.name for p in theirs.iterdir()) == ["img0.png"]
    assert (theirs / "img0.png").read_bytes() == b"theirs"


def test_a_killed_runs_marked_folders_are_cleaned(tmp_path):
    """Guard: what the run did create (a marked staging folder of a dead process)
    still goes."""
    out = tmp_path / "out"
    out.mkdir()
    for prefix in (".run.", ".old."):
        d = out / f"{prefix}999999999-abcd1234"
        (d / "labels").mkdir(parents=True)
        (d / MARKER).write_text(json.dumps({"pid": 999999999}))
    run_segment(FakeSeg(), str(_images(tmp_path / "in", 1)), out, progress=False)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [MANIFEST]
