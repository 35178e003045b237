"""Tests of ``moduseg.owned``."""

from __future__ import annotations
import json
import os
from pathlib import Path
import numpy as np
import pytest
from moduseg.errors import OutputError
from moduseg.io import write_json
from moduseg.owned import atomic_path, output_error
from app_fixtures import _fill, _private, tiny_tmpfs  # noqa: E402,F401


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


def test_a_folder_given_as_the_output_file_names_the_fix_not_the_disk(tmp_path):
    """Writing to a path that is a folder says so (not "free some space"); the folder
    is left as it was."""
    (tmp_path / "kept.txt").write_text("x")
    with pytest.raises(OutputError) as info:
        with atomic_path(tmp_path) as tmp:
            Path(tmp).write_text("new")
    msg = str(info.value)
    assert "it is a folder: give a file name" in msg and "free some space" not in msg
    assert "\n" not in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.txt"]


def test_output_error_advice_follows_the_cause():
    import errno

    full = output_error("out.json", OSError(errno.ENOSPC, "No space left on device"))
    assert "free some space" in str(full)
    ro = output_error("out.json", OSError(errno.EROFS, "Read-only file system"))
    assert "read-only" in str(ro) and "free some space" not in str(ro)
