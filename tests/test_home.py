"""``--home`` reaches everything a run writes (the SAM derived-graph cache), and the
messages that suggest ``models pull`` name the home the failing command used
(issue 29, item 9)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from moduseg.cli import cli
from moduseg.errors import ModelNotFoundError
from moduseg import build
from moduseg.models import defaults
from moduseg.home import ENV_VAR, MANIFEST, model_home, pull_command

ROOT = Path(__file__).resolve().parents[1]


def _image(path: Path) -> Path:
    rng = np.random.default_rng(0)
    cv2.imwrite(str(path), rng.integers(0, 255, (96, 128, 3), dtype=np.uint8))
    return path


def test_pull_command_names_a_home_the_command_would_not_find(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert pull_command() == "moduseg models pull"
    assert pull_command(None, "--force") == "moduseg models pull --force"
    home = tmp_path / "my home"
    assert pull_command(home) == f"moduseg models pull --home '{home}'"
    assert pull_command(home, "--from", "DIR") == f"moduseg models pull --from DIR --home '{home}'"
    # the home the command finds by itself needs no --home
    assert pull_command(tmp_path / "xdg" / "moduseg") == "moduseg models pull"
    monkeypatch.setenv(ENV_VAR, str(home))
    assert pull_command(home) == "moduseg models pull"
    assert pull_command(tmp_path / "other") == f"moduseg models pull --home {tmp_path / 'other'}"


def test_missing_model_error_suggests_pull_with_the_given_home(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    empty = tmp_path / "empty"
    with pytest.raises(ModelNotFoundError) as e:
        defaults.installed_file("dinov2-vits14", "features", empty)
    assert f"'moduseg models pull --home {empty}'" in str(e.value)
    assert f"'moduseg models pull --from DIR --home {empty}'" in str(e.value)


def test_segment_offline_with_an_empty_home_names_the_fix(tmp_path, monkeypatch):
    """The issue's reproducer: ``segment --home DIR --offline`` with nothing in DIR."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    img = _image(tmp_path / "frame.png")
    empty = tmp_path / "models"
    r = CliRunner().invoke(cli, ["segment", str(img), "--home", str(empty), "--offline",
                                 "--out", str(tmp_path / "out"), "--backend", "cpu"])
    assert r.exit_code == 2, r.output
    assert f"moduseg models pull --home {empty}" in r.output, r.output
    assert "Traceback" not in r.output


def test_default_proposer_keeps_its_derived_graphs_under_the_home(tmp_path, monkeypatch):
    """``load_default_proposer(home)`` hands the SAM graphs a cache inside that home."""
    seen = {}

    class FakeSam:
        def __init__(self, encoder, decoder, **opts):
            seen.update(opts, encoder=encoder, decoder=decoder)

    import moduseg.runtime.proposers.sam as sam_mod
    monkeypatch.setattr(sam_mod, "SamAutomaticMaskGenerator", FakeSam)
    monkeypatch.setattr(defaults, "default_model_paths",
                        lambda home=None: (Path("enc.onnx"), Path("dec.onnx")))
    monkeypatch.delenv(ENV_VAR, raising=False)
    build.load_default_proposer(home=tmp_path / "h", mask_stride=2)
    assert Path(seen["cache_dir"]) == tmp_path / "h" / "cache" / "sam"
    assert seen["mask_stride"] == 2
    # an explicit cache_dir still wins
    build.load_default_proposer(home=tmp_path / "h", cache_dir=tmp_path / "c")
    assert Path(seen["cache_dir"]) == tmp_path / "c"


def _linked_home(dst: Path) -> Path:
    """A model home holding the installed models (symlinked), and nothing derived."""
    src = model_home()
    if not (src / MANIFEST).is_file():
        pytest.skip(f"default models not installed in {src}; run 'moduseg models pull'")
    dst.mkdir()
    manifest = json.loads((src / MANIFEST).read_text())
    (dst / MANIFEST).write_text(json.dumps(manifest))
    for entry in manifest["models"].values():
        top = Path(next(iter(entry["files"].values()))["path"]).parts[0]
        if not (dst / top).exists():
            (dst / top).symlink_to(src / top)
    return dst


@pytest.mark.models
@pytest.mark.slow
def test_segment_with_home_writes_nothing_to_the_user_cache(tmp_path):
    """With ``--home DIR`` and no ``MODUSEG_HOME`` the SAM cache (48 MB) lands in DIR."""
    home = _linked_home(tmp_path / "models")
    user = tmp_path / "user"
    user.mkdir()
    img = _image(tmp_path / "frame.png")
    env = {k: v for k, v in os.environ.items() if k not in (ENV_VAR, "XDG_CACHE_HOME")}
    env.update(HOME=str(user), PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    r = subprocess.run([sys.executable, "-m", "moduseg.cli", "segment", str(img), "--home",
                        str(home), "--offline", "--backend", "cpu", "--out",
                        str(tmp_path / "out")], capture_output=True, text=True, env=env,
                       timeout=900, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not (user / ".cache" / "moduseg").exists(), list((user / ".cache").rglob("*"))
    derived = list((home / "cache" / "sam").glob("*.onnx"))
    assert derived, "the SAM derived graphs were not written under --home"
    # first use of the int8 SAM encoder: ONNX Runtime's quantizer advice stays quiet
    assert "pre-processing" not in r.stderr, r.stderr
