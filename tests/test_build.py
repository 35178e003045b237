"""One assembly layer (``moduseg.build``): the backend value reaches every stage.

A private model home with a stand-in backbone (a stride-14 Conv, installed by
the real ``models pull`` code), a small random EntitySeg export as the
proposer, and a bank built by ``bank build``. ``segment`` then runs on CPU, on
``--backend cuda`` (the GPU index and the CUDA SMFA / patch-vote kernels on the
g++ emulator of the same ``.cu`` files, ONNX Runtime asked for the CUDA
provider) and on ``--backend tensorrt-native`` (the backbone a fake TensorRT
engine whose output buffer the pooler reads in place); every run gives the CPU
labels.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from moduseg.cli import cli  # noqa: E402
from moduseg.config import ModuSegConfig, preset  # noqa: E402
from moduseg.errors import InputError  # noqa: E402
from moduseg.io import read_label_map, write_image, write_label_png  # noqa: E402
from moduseg import build as assemble  # noqa: E402
from moduseg.bank.segmenter import segmenter_from_bank  # noqa: E402

HW = (64, 96)


def _scene(seed):
    rng = np.random.default_rng(seed)
    img = np.zeros((*HW, 3), np.uint8)
    lab = np.zeros(HW, np.uint8)
    img[:] = (40, 120, 40)
    for c, colour in ((1, (200, 40, 40)), (2, (40, 40, 220))):
        y, x = rng.integers(0, HW[0] - 30), rng.integers(0, HW[1] - 40)
        img[y:y + 30, x:x + 40] = colour
        lab[y:y + 30, x:x + 40] = c
    noise = rng.normal(0, 3, img.shape)
    return (img + noise).clip(0, 255).astype(np.uint8), lab


def _colour_surgery(src, dst):
    """Stands in for the DINOv2 surgery: a stride-14 Conv giving each patch's mean colour."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.zeros((3, 3, 14, 14), np.float32)
    for c in range(3):
        w[c, c] = 1 / 196
    g = helper.make_graph(
        [helper.make_node("Conv", ["input_image", "W"], ["features"],
                          kernel_shape=[14, 14], strides=[14, 14])], "colour",
        [helper.make_tensor_value_info("input_image", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 3, "a", "b"])],
        [numpy_helper.from_array(w, "W")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])
    m.ir_version = 8
    onnx.save(m, str(dst))
    return {"path": str(dst), "patch_size": 14, "feature_dim": 3, "layers": None}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from test_models import FAKE, _raw_folder

    from moduseg.models import pull as pull_mod

    from moduseg.export.entityseg.config import tiny_test_config
    from moduseg.export.entityseg.export import export_onnx
    from moduseg.export.entityseg.model import random_model

    root = tmp_path_factory.mktemp("assemble")
    home = root / "home"
    pull_mod.pull(home=home, source_dir=_raw_folder(root / "src"), specs=FAKE,
                  surgery=_colour_surgery, log=lambda *a: None)
    es = export_onnx(random_model(tiny_test_config("swin"), seed=3), root / "es.onnx", HW,
                     min_size=64, max_size=96, simplify=False)
    (root / "img").mkdir()
    (root / "lab").mkdir()
    for i in range(3):
        img, lab = _scene(i)
        write_image(root / "img" / f"f{i}.png", img)
        write_label_png(root / "lab" / f"f{i}.png", lab)
    (root / "classes.txt").write_text("grass\nred\nblue\n")
    return root, home, es


def _build_bank(world, preset_name, out_name):
    root, home, es = world
    bank = root / out_name
    if not bank.is_file():
        r = CliRunner().invoke(cli, [
            "bank", "build", "--dataset", "folder", "--root", str(root / "img"),
            "--labels", str(root / "lab"), "--classes", str(root / "classes.txt"),
            "--out", str(bank), "--home", str(home), "--backend", "cpu",
            "--preset", preset_name, "--proposer", "entityseg",
            "--set", f"proposer.model={es}", "--set", "bank.min_area=0",
            "--set", "bank.component_min_area=0",
            # the colour stand-in has 3 dims and no blocks: no layers, no PCA
            "--set", "backbone.layers=None", "--set", "bank.pca_dim=0"])
        assert r.exit_code == 0, r.output
    return bank


def _segment(world, bank, out, *extra):
    root, home, _ = world
    r = CliRunner().invoke(cli, ["segment", str(root / "img"), "--bank", str(bank),
                                 "--out", str(out), "--home", str(home), "--no-overlay",
                                 "--set", "runtime.min_area=0", "--set",
                                 "runtime.min_objectness=0.0", *extra])
    assert r.exit_code == 0, r.output
    return {p.stem: read_label_map(p) for p in sorted((out / "labels").glob("*.png"))}


# ---- the backend value ---------------------------------------------------------------

def test_backend_is_resolved_once():
    from moduseg.runtime.cuda.device import gpu_available

    be = assemble.resolve_backend("auto")
    assert be.name == ("cuda" if gpu_available()[0] else "cpu") and be.requested == "auto"
    assert assemble.resolve_backend(be) is be
    assert assemble.resolve_backend("tensorrt-native").native_trt
    assert assemble.resolve_backend("cuda").providers == "cuda"
    with pytest.raises(InputError, match="did you mean tensorrt"):
        assemble.resolve_backend("tensorrtt")


def test_bank_with_foreign_stored_layers_is_refused_before_any_model(tmp_path, monkeypatch):
    from moduseg.types import BackboneIdentity, Bank

    bank = Bank(np.eye(3, dtype=np.float32), np.arange(3), ["a", "b", "c"],
                BackboneIdentity("dinov2-vits14", "pad:pixels172800", 14, 3, "0" * 64),
                np.array(["x"] * 3))
    cfg = preset("paper").with_overrides(**{"backbone.layers": [8, 11]})

    def boom(*a, **k):
        raise AssertionError("a model was loaded")
    monkeypatch.setattr(assemble, "build_backbone", boom)
    with pytest.raises(InputError, match="backbone.layers"):
        assemble.assemble(cfg, bank, "cpu", tmp_path)
    with pytest.raises(InputError, match="0..11"):
        ModuSegConfig.from_dict({"backbone": {"layers": [0, 1, 2, 3, 4, 5]}})


# ---- --proposer entityseg end to end ------------------------------------------------

@pytest.mark.slow
def test_proposer_entityseg_end_to_end(world, tmp_path):
    from moduseg.bank.store import load_bank

    root, home, es = world
    bank = _build_bank(world, "default", "default.npz")
    stored = load_bank(bank).config
    assert stored["proposer"]["name"] == "entityseg" and stored["proposer"]["model"] == str(es)
    labels = _segment(world, bank, tmp_path / "out", "--backend", "cpu")
    assert sorted(labels) == ["f0", "f1", "f2"]
    assert all(m.shape == HW for m in labels.values())
    rec = json.loads((tmp_path / "out" / "segments.json").read_text())
    assert rec["config"]["proposer"]["name"] == "entityseg"      # the whole configuration
    assert rec["config"]["bank"]["granularity"] == "patch"
    # the same bank with SAM asked for on the command line: options switch over
    from moduseg.settings import resolve_config
    cfg = resolve_config(None, [], stored, proposer="sam")
    assert cfg.proposer.name == "sam" and cfg.proposer.model is None


def test_entityseg_without_a_model_is_one_line(world, tmp_path):
    root, home, _ = world
    r = CliRunner().invoke(cli, ["bank", "build", "--dataset", "folder", "--root",
                                 str(root / "img"), "--labels", str(root / "lab"),
                                 "--classes", str(root / "classes.txt"), "--out",
                                 str(tmp_path / "b.npz"), "--home", str(home),
                                 "--proposer", "entityseg"])
    assert r.exit_code == 2 and "proposer.model" in r.output
    assert not (tmp_path / "b.npz").exists()


# ---- the GPU backends on the emulated device and the fake TensorRT -----------------

@pytest.fixture
def emulated_gpu(tmp_path_factory, monkeypatch):
    """``open_device`` gives the g++ emulator; ONNX Runtime records the providers asked for."""
    if shutil.which("g++") is None:
        pytest.skip("needs g++ to build the CUDA emulator")
    import moduseg.runtime.cuda.device as device
    import moduseg.runtime.onnx_session as sess
    from moduseg.runtime.cuda.emulate import EmulatedDevice, Emulator, build_emulator

    emu = EmulatedDevice(Emulator(build_emulator(tmp_path_factory.getbasetemp() / "emu"), seed=1))
    monkeypatch.setattr(device, "open_device", lambda ordinal=0: emu)
    asked = []
    real = sess.choose_providers

    def choose(requested="auto"):
        asked.append(requested)
        return real("cpu")
    monkeypatch.setattr(sess, "choose_providers", choose)
    calls = {"pool": 0, "patch_vote": 0, "search": 0}
    from moduseg.runtime import gpu_index
    from moduseg.runtime.cuda import smfa_gpu
    for cls, name in ((smfa_gpu.GpuSmfa, "pool"), (smfa_gpu.GpuSmfa, "patch_vote"),
                      (gpu_index.NvrtcTopkIndex, "search")):
        def counted(self, *a, _f=getattr(cls, name), _n=name, **k):
            calls[_n] += 1
            return _f(self, *a, **k)
        monkeypatch.setattr(cls, name, counted)
    return emu, asked, calls


@pytest.mark.slow
@pytest.mark.parametrize("preset_name", ["paper", "default"])
def test_segment_backend_cuda_wires_the_gpu_index_and_kernels(world, tmp_path, emulated_gpu,
                                                             preset_name):
    from moduseg.runtime.cuda.smfa_gpu import GpuSmfa
    from moduseg.runtime.gpu_index import NvrtcTopkIndex

    emu, asked, calls = emulated_gpu
    bank = _build_bank(world, preset_name, f"{preset_name}.npz")
    cpu = _segment(world, bank, tmp_path / "cpu", "--backend", "cpu")
    asked.clear()
    assert len(np.unique(np.concatenate([m.ravel() for m in cpu.values()]))) > 1
    gpu = _segment(world, bank, tmp_path / "gpu", "--backend", "cuda")
    assert asked and set(asked) == {"cuda"}          # backbone and proposer sessions
    want = "pool" if preset_name == "paper" else "patch_vote"
    assert calls[want] == 3 and calls["search"] >= 3
    for k in cpu:
        np.testing.assert_array_equal(gpu[k], cpu[k])
    seg = segmenter_from_bank(bank, world[1], backend="cuda")
    assert isinstance(seg.index, NvrtcTopkIndex) and isinstance(seg.pooler, GpuSmfa)
    assert seg.pooler.dev is emu and seg.index.dev is emu


@pytest.mark.slow
def test_segment_backend_tensorrt_native_reads_the_engine_buffer(world, tmp_path, monkeypatch,
                                                                 emulated_gpu):
    import trt_fakes

    from moduseg.export.engine import BuildOptions, build_cached_engine
    from moduseg.runtime.engine_cache import engine_cache_dir
    from moduseg.models.defaults import installed_file
    from moduseg.runtime.backbones.trt_backend import TensorRTBackbone
    from moduseg.runtime.cuda import smfa_gpu

    emu, asked, calls = emulated_gpu
    root, home, _ = world
    trt_fakes.install(monkeypatch)
    features = installed_file("dinov2-vits14", "features", home)
    build_cached_engine(features, BuildOptions(precision="fp16"), engine_cache_dir(home),
                        mins=["1x3x28x28"], opt_shapes=["1x3x336x504"],
                        maxs=["1x3x1008x1008"], check=False)
    seen = []
    real_pool = smfa_gpu.GpuSmfa.pool

    def spy(self, masks, keep, row_span, fmap, eps):
        seen.append(fmap.device)
        return real_pool(self, masks, keep, row_span, fmap, eps)
    monkeypatch.setattr(smfa_gpu.GpuSmfa, "pool", spy)
    bank = _build_bank(world, "paper", "paper.npz")
    cpu = _segment(world, bank, tmp_path / "cpu", "--backend", "cpu")
    trt = _segment(world, bank, tmp_path / "trt", "--backend", "tensorrt-native")
    assert len(seen) == 3 and all(isinstance(d, smfa_gpu.DeviceFeatures) for d in seen)
    assert calls["search"] >= 3
    for k in cpu:
        np.testing.assert_array_equal(trt[k], cpu[k])
    seg = segmenter_from_bank(bank, home, backend="tensorrt-native")
    assert isinstance(seg.backbone, TensorRTBackbone)


def test_device_patch_vote_matches_the_host(emulated_gpu):
    """The patch vote through the SMFA kernels: same winners, same weight shares."""
    from moduseg.runtime.cuda.smfa_gpu import GpuSmfa
    from moduseg.runtime.pooling import HOST
    from moduseg.types import FeatureMap, GridGeometry

    emu, _, _ = emulated_gpu
    rng = np.random.default_rng(5)
    geo = GridGeometry((90, 120), (84, 112), (6, 8), 14)
    fmap = FeatureMap(rng.standard_normal((16, 6, 8)).astype(np.float32), geo)
    masks = rng.random((20, 60, 80)) < rng.uniform(0.05, 0.6, size=(20, 1, 1))
    masks[3] = False                                        # no weight: no label
    keep = np.array([0, 2, 3, 5, 7, 11, 19])
    cells = rng.integers(-1, 4, size=48)
    host = HOST.patch_vote(masks, keep, None, fmap, cells, 4)
    dev = GpuSmfa(emu).patch_vote(masks, keep, None, fmap, cells, 4)
    np.testing.assert_array_equal(dev[0], host[0])
    np.testing.assert_allclose(dev[1], host[1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dev[2], host[2], rtol=1e-5, atol=1e-5)
    assert host[0][2] == -1 and host[2][2] == 0


def test_auto_on_a_gpu_falls_back_per_stage_but_named_backends_raise():
    import warnings

    from moduseg.errors import BackendUnavailableError
    from moduseg.runtime.cuda.device import gpu_available
    from moduseg.runtime.index import SearchIndex
    from moduseg.runtime.pooling import HostPooler

    if gpu_available()[0]:
        pytest.skip("a GPU is present: nothing falls back")
    cfg = preset("paper")
    vecs = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
    be = assemble.Backend("cuda", "auto", "auto", fallback=True)  # what auto gives on a GPU
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert isinstance(assemble.build_bank_index(vecs, cfg, be), SearchIndex)
        assert isinstance(assemble.build_pooler(cfg, be), HostPooler)
    with pytest.raises(BackendUnavailableError):
        assemble.build_pooler(cfg, "cuda")
    with pytest.raises(BackendUnavailableError):
        assemble.build_bank_index(vecs, cfg, "cuda")


def test_fast_preset_needs_no_proposer_and_default_does():
    assert not preset("fast").needs_proposer
    assert preset("default").needs_proposer and preset("paper").needs_proposer
