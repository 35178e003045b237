"""The first run: the embedded default bank, segment with no --bank/--out, the README's
Python example as written, and a console without GPU noise on a CPU machine."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from moduseg.bank.datasets import CAMVID_CLASSES, CAMVID_PALETTE
from moduseg.bank.embedded import MAX_BYTES, default_bank_path, embedded_bank_path
from moduseg.bank.store import check_identity, load_bank
from moduseg.cli import cli
from moduseg.config import preset
from moduseg.app.cli import default_out_dir

ROOT = Path(__file__).resolve().parents[1]
# a street scene the bank was built from (every labelled CamVid frame is in it)
FRAMES = ["val/0016E5_07959.png", "val/0016E5_08085.png", "train/0001TP_007410.png"]
# mIoU of the embedded bank on FRAMES: measured 59.8 (docs/results.md, "The embedded
# default bank"); the floor catches a broken bank, not noise
FLOOR = 45.0
# the other presets' embedded banks (--preset without --bank), on the same frames:
# fast measured 59.9, paper 33.6 (docs/results.md, "The embedded fast/paper bank")
FLOORS = {"default": FLOOR, "fast": 45.0, "paper": 25.0}
GPU_WORDS = re.compile(r"nvidia|cuda|gpu|driver|tensorrt", re.I)


def _default_models():
    from moduseg.errors import ModuSegError
    from moduseg.build import load_default_backbone

    try:
        return load_default_backbone(providers="cpu", **preset("default").backbone_options())
    except ModuSegError as e:
        pytest.skip(f"default models not installed ({e}); run 'moduseg models pull'")


def test_shipped_bank_is_package_data_within_its_budget():
    p = embedded_bank_path()
    assert p == default_bank_path() and p.is_file(), f"{p} is not shipped"
    assert p.stat().st_size <= MAX_BYTES
    bank = load_bank(p)
    assert bank.quantization == "int8"
    assert bank.class_names == CAMVID_CLASSES and bank.palette == CAMVID_PALETTE
    assert bank.background_index is None
    assert bank.config["preset"] == "default" and bank.stats["images"] == 468
    assert all(bank.class_counts()[c] > 0 for c in CAMVID_CLASSES)
    np.testing.assert_allclose(np.linalg.norm(bank.vectors, axis=1), 1.0, atol=1e-4)


def test_package_data_is_declared():
    text = (ROOT / "pyproject.toml").read_text()
    assert '"bank/data/*.npz"' in text


def test_bank_info_without_argument_describes_the_embedded_bank():
    r = CliRunner().invoke(cli, ["bank", "info"])
    assert r.exit_code == 0, r.output
    assert "embedded default bank" in r.output and "int8" in r.output
    assert "sky" in r.output and "preset: default" in r.output


def test_default_output_folder_is_derived_from_the_input(tmp_path):
    (tmp_path / "clips").mkdir()
    assert default_out_dir("videos/bikes.mp4", "video") == Path("moduseg-out/bikes")
    assert default_out_dir("a/b/photo.JPG", "image") == Path("moduseg-out/photo")
    assert default_out_dir(str(tmp_path / "clips") + "/", "folder") == Path("moduseg-out/clips")
    assert default_out_dir("0", "camera") == Path("moduseg-out/camera0")
    assert "moduseg-out/" in (ROOT / ".gitignore").read_text().split()


@pytest.mark.models
def test_shipped_bank_matches_the_default_backbone():
    backbone = _default_models()
    check_identity(load_bank(default_bank_path()).backbone, backbone.identity)


@pytest.mark.realdata
@pytest.mark.models
@pytest.mark.parametrize("name", list(FLOORS))
def test_shipped_bank_segments_camvid_sensibly(shared_data, name):
    from moduseg import load_segmenter
    from moduseg.bank.datasets import camvid
    from moduseg.evaluate import Evaluator
    from moduseg.io import read_image

    _default_models()
    floor = FLOORS[name]
    seg = load_segmenter(offline=True, backend="cpu", preset=None if name == "default" else name)
    assert seg.bank.config["preset"] == name
    labels = {s.image_path.name: s for split in ("train", "val")
              for s in camvid(shared_data / "camvid", split)}
    ev = Evaluator(CAMVID_CLASSES)
    for f in FRAMES:
        path = shared_data / "camvid" / f
        ev.add(seg(read_image(path)).label_map, labels[path.name].label())
    sc = ev.scores()
    print(f"embedded {name} bank on {len(FRAMES)} CamVid frames: mIoU {sc.miou:.1f}")
    assert sc.miou >= floor, f"embedded {name} bank gives {sc.miou:.1f} mIoU (floor {floor})"


def _readme_python() -> str:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    snippet = [b for b in blocks if "load_segmenter" in b]
    assert snippet, "README has no Python example with load_segmenter"
    return snippet[0]


@pytest.mark.realdata
@pytest.mark.models
def test_readme_python_example_runs_as_written(shared_data, monkeypatch, capsys):
    _default_models()
    monkeypatch.chdir(ROOT)                   # the README's paths are from the repository root
    exec(compile(_readme_python(), "README.md", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    assert "(360, 480)" in out and "road" in out


@pytest.mark.realdata
@pytest.mark.models
def test_cpu_run_prints_nothing_about_gpus(shared_data, tmp_path):
    """``segment`` with no --bank/--out and ``bank build``, default backend, no GPU here."""
    _default_models()
    frame = shared_data / "camvid" / FRAMES[0]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))

    def run(*args, code=0):
        r = subprocess.run([sys.executable, "-m", "moduseg.cli", *args], cwd=tmp_path,
                           capture_output=True, text=True, env=env, timeout=600)
        assert r.returncode == code, r.stdout + r.stderr
        if code:
            return r.stdout + r.stderr
        said = r.stdout + r.stderr
        assert not GPU_WORDS.search(said), said
        return said

    said = run("segment", str(frame))
    out = tmp_path / "moduseg-out" / frame.stem
    assert f"writing to {Path('moduseg-out') / frame.stem}" in said
    assert (out / "labels" / f"{frame.stem}.png").is_file()
    run("bank", "build", "--dataset", "camvid", "--root", str(shared_data / "camvid"),
        "--split", "val", "--limit", "1", "--out", str(tmp_path / "b.npz"))
    # asked for a GPU backend: one line says why it cannot run
    said = run("segment", str(frame), "--backend", "cuda", "--out", str(tmp_path / "o2"),
               code=2)
    gpu_lines = [ln for ln in said.splitlines() if GPU_WORDS.search(ln)]
    assert len(gpu_lines) == 1 and gpu_lines[0].startswith("Error: "), said
