"""Tests of ``moduseg.bank.cli``."""

from __future__ import annotations
import pytest
from reliability_fixtures import _run  # noqa: E402,F401
from app_fixtures import _cli, _fill, _one_line_error, no_models, tiny_tmpfs  # noqa: E402,F401


@pytest.mark.parametrize("cmd", [
    ["bank", "build", "--out", "x.npz", "--limit", "0"],
    ["bank", "build", "--out", "x.npz", "--limit", "-1"],
    ["bank", "build", "--out", "x.npz", "--shots", "0"],
    ["bank", "build", "--out", "x.npz", "--shots", "-2"],
    ["eval", "--pred", "p", "--limit", "0"],
    ["eval", "--pred", "p", "--limit", "-1"],
    ["pseudo", "generate", "--limit", "0"],
])
def test_non_positive_limits_are_refused_at_parse_time(tmp_path, cmd):
    r = _run([*cmd[:2], "--dataset", "camvid", "--root", str(tmp_path), *cmd[2:]]
             if cmd[0] != "pseudo" else cmd)
    assert r.exit_code == 2 and "Invalid value for '--" in r.output, r.output
    assert ">=1" in r.output


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
