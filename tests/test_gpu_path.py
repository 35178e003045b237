"""The GPU path: fallbacks here, and kernel/end-to-end checks where a GPU exists.

Without an NVIDIA driver and GPU (this machine and CI) the GPU tests skip
with the reason, and the fallback behaviour is tested instead.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from moduseg.config import RuntimeConfig
from moduseg.errors import BackendUnavailableError, InputError
from moduseg.runtime import gpu_index
from moduseg.runtime.cuda import smfa_gpu
from moduseg.runtime.cuda.device import gpu_available
from moduseg.runtime.index import SearchIndex
from moduseg.smfa import smfa
from moduseg.types import BackboneIdentity, Bank, FeatureMap, GridGeometry, Proposals

HAVE_GPU, GPU_REASON = gpu_available()
needs_gpu = pytest.mark.skipif(not HAVE_GPU, reason=f"needs an NVIDIA GPU and driver: {GPU_REASON}")
no_gpu = pytest.mark.skipif(HAVE_GPU, reason="a GPU is present: the fallback is not taken")


def _scene(seed=0, P=12, D=48, geo=None):
    rng = np.random.default_rng(seed)
    geo = geo or GridGeometry((90, 120), (84, 112), (6, 8), 14)
    masks = rng.random((P, 60, 80)) < rng.uniform(0.1, 0.6, size=(P, 1, 1))
    feats = rng.standard_normal((D, *geo.grid_hw)).astype(np.float32)
    return masks, FeatureMap(feats, geo)


# ---- without a GPU ----------------------------------------------------------------

@no_gpu
def test_no_driver_is_a_clear_backend_error():
    from moduseg.runtime.cuda.device import open_device

    with pytest.raises(BackendUnavailableError) as e:
        open_device(0)
    msg = str(e.value).lower()
    assert "driver" in msg or "gpu" in msg


@no_gpu
def test_driver_call_forms_are_accepted_by_cuda_python():
    # cuda-python converts and type-checks arguments before it loads the driver,
    # so without a driver every call CudaDevice makes must fail on the missing
    # library, never with a TypeError about how it was called.
    import ctypes

    d = pytest.importorskip("cuda.bindings.driver")

    from moduseg.runtime.cuda.device import CudaDevice, DeviceBuffer

    dev = object.__new__(CudaDevice)
    dev.d, dev.stream, dev.ctx = d, d.CUstream(0), d.CUcontext()
    buf = DeviceBuffer(0x7F0000001000, 64)
    host = np.zeros(16, np.float32)
    calls = [lambda: dev.launch(d.CUfunction(), (3, 2), 128,
                                [buf.ptr, ctypes.c_int(4), ctypes.c_longlong(5), ctypes.c_float(1.0)]),
             lambda: dev.upload(buf, host), lambda: dev.download(buf, host),
             lambda: dev.alloc(256), lambda: dev.free(DeviceBuffer(buf.ptr, 64)),
             lambda: dev.synchronize(), lambda: dev.activate(),
             lambda: dev.time_ms(lambda: None, repeats=1, warmup=0),
             lambda: d.cuModuleLoadData(b"\x7fELF"), lambda: d.cuModuleGetFunction(d.CUmodule(), b"k"),
             lambda: d.cuDeviceGetName(256, d.CUdevice(0)),
             lambda: d.cuDevicePrimaryCtxRetain(d.CUdevice(0))]
    for call in calls:
        with pytest.raises(Exception) as e:
            call()
        assert not isinstance(e.value, TypeError), e.value


@no_gpu
def test_auto_pooler_falls_back_to_cpu_silently_without_a_gpu(monkeypatch):
    monkeypatch.setattr(smfa_gpu, "_FALLBACK_WARNED", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        p1 = smfa_gpu.make_smfa_pooler("auto")
        p2 = smfa_gpu.make_smfa_pooler("auto")
    assert not [w for w in caught if "using the CPU path" in str(w.message)]
    assert p1.backend == p2.backend == "cpu"
    masks, fmap = _scene()
    v, w = p1(masks, fmap)
    rv, rw = smfa(masks, fmap)
    np.testing.assert_array_equal(v, rv)
    np.testing.assert_array_equal(w, rw)


def test_auto_pooler_warns_once_when_a_gpu_is_there_but_unusable(monkeypatch, caplog):
    """A driver and device that fail for another reason are worth one warning."""
    from moduseg.runtime.cuda import device

    def broken(ordinal=0):
        raise BackendUnavailableError("NVRTC failed to compile the SMFA kernel")

    monkeypatch.setattr(device, "open_device", broken)
    monkeypatch.setattr(smfa_gpu, "_FALLBACK_WARNED", False)
    assert smfa_gpu.make_smfa_pooler("auto").backend == "cpu"
    assert smfa_gpu.make_smfa_pooler("auto").backend == "cpu"
    msgs = [r for r in caplog.records if "NVRTC failed" in r.getMessage()]
    assert len(msgs) == 1 and "\n" not in msgs[0].getMessage()


@no_gpu
def test_gpu_pooler_on_request_raises():
    with pytest.raises(BackendUnavailableError):
        smfa_gpu.make_smfa_pooler("gpu")


def test_cpu_pooler_contract():
    p = smfa_gpu.make_smfa_pooler("cpu")
    masks, fmap = _scene(1)
    v, _ = p(masks, fmap.features, fmap.geometry)               # bare array + geometry
    np.testing.assert_array_equal(v, smfa(masks, fmap)[0])
    with pytest.raises(InputError, match="geometry"):
        p(masks, fmap.features)
    dev = smfa_gpu.DeviceFeatures(0xDEAD000, (48, 6, 8), "float16", fmap.geometry)
    with pytest.raises(InputError, match="on the GPU"):
        p(masks, dev)
    with pytest.raises(InputError, match="auto, gpu or cpu"):
        smfa_gpu.make_smfa_pooler("tpu")


def test_device_features_are_checked():
    geo = GridGeometry.unpadded((64, 64), (4, 4), 16)
    with pytest.raises(InputError, match="grid"):
        smfa_gpu.DeviceFeatures(1, (8, 4, 5), "float32", geo)
    with pytest.raises(InputError, match="float16 or float32"):
        smfa_gpu.DeviceFeatures(1, (8, 4, 4), "int8", geo)
    assert smfa_gpu.DeviceFeatures(1, (4, 4, 8), "float16", geo, layout="hwd").layout == "hwd"


@no_gpu
def test_auto_index_falls_back_to_cpu_faiss_silently_without_a_gpu(monkeypatch):
    monkeypatch.setattr(gpu_index, "_FALLBACK_WARNED", False)
    rng = np.random.default_rng(0)
    bank = rng.standard_normal((300, 16)).astype(np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        idx = gpu_index.make_index(bank, "auto")
        gpu_index.make_index(bank, "flat_fp16")
    assert sum("CPU faiss index" in str(w.message) for w in caught) == 0  # no GPU: silent
    assert isinstance(idx, SearchIndex) and idx.kind == "flat"
    with pytest.raises(BackendUnavailableError, match="no GPU search backend"):
        gpu_index.make_index(bank, prefer="gpu")


def test_faiss_gpu_absence_is_reported():
    ok, why = gpu_index.faiss_gpu_available()
    if ok:
        pytest.skip(f"faiss-gpu present: {why}")
    with pytest.raises(BackendUnavailableError, match="faiss-gpu"):
        gpu_index.build_gpu_index(np.ones((4, 8), np.float32), backend="faiss")
    with pytest.raises(InputError, match="backend"):
        gpu_index.build_gpu_index(np.ones((4, 8), np.float32), backend="cuda")


# ---- on a GPU -----------------------------------------------------------------------

@needs_gpu
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_gpu_smfa_matches_numpy(dtype):
    gpu = smfa_gpu.make_smfa_pooler("gpu")
    for geo, mask_hw in [(GridGeometry((90, 120), (84, 112), (6, 8), 14), (60, 80)),
                         (GridGeometry.unpadded((512, 512), (32, 32), 16), (512, 512))]:
        rng = np.random.default_rng(0)
        masks = rng.random((45, *mask_hw)) < 0.3
        masks[4] = False
        feats = rng.standard_normal((70, *geo.grid_hw)).astype(dtype)
        v, w, a = gpu.run(masks, feats, geo)
        rv, rw = smfa(masks, FeatureMap(feats.astype(np.float32), geo))
        live = rw > 1e-6                     # see test_cuda_emulation: empty rows checked apart
        np.testing.assert_allclose(v[live], rv[live], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(w, rw, rtol=1e-5, atol=1e-4)
        np.testing.assert_array_equal(a, masks.sum((1, 2)))
        assert np.all(v[4] == 0) and w[4] == 0 and a[4] == 0
    v, w, a = gpu.run(np.zeros((0, 60, 80), bool), np.ones((5, 6, 8), np.float32),
                      GridGeometry((90, 120), (84, 112), (6, 8), 14))
    assert v.shape == (0, 5)


@needs_gpu
def test_gpu_smfa_reads_device_features_in_place():
    gpu = smfa_gpu.make_smfa_pooler("gpu")
    masks, fmap = _scene(3, D=64)
    hwd = np.ascontiguousarray(fmap.features.transpose(1, 2, 0)).astype(np.float16)
    buf = gpu.dev.alloc(hwd.nbytes)
    gpu.dev.upload(buf, hwd)
    dev = smfa_gpu.DeviceFeatures(buf.ptr, hwd.shape, "float16", fmap.geometry, layout="hwd")
    v, _ = gpu(masks, dev)
    ref, _ = smfa(masks, FeatureMap(hwd.transpose(2, 0, 1).astype(np.float32), fmap.geometry))
    np.testing.assert_allclose(v, ref, rtol=1e-4, atol=1e-5)
    gpu.dev.free(buf)


@needs_gpu
def test_gpu_smfa_timing_with_cuda_events():
    r = smfa_gpu.benchmark(repeats=20)
    print("GPU SMFA P=200 D=1152 32x32 grid 512x512 masks:", r)
    assert r["median_ms"] > 0


@needs_gpu
@pytest.mark.parametrize("kind", ["flat", "flat_fp16"])
def test_nvrtc_topk_index_matches_exact_search(kind):
    rng = np.random.default_rng(1)
    bank = rng.standard_normal((5000, 96)).astype(np.float32)
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    q = rng.standard_normal((77, 96)).astype(np.float32)
    idx = gpu_index.build_gpu_index(bank, kind, backend="nvrtc")
    sims, ids = idx.search(q, 25)
    stored = bank.astype(np.float16 if kind == "flat_fp16" else np.float32).astype(np.float32)
    s = q @ stored.T
    ref = np.argsort(-s, axis=1, kind="stable")[:, :25]
    assert (ids == ref).mean() > 0.999                      # fp32 summation order may swap near-ties
    np.testing.assert_allclose(sims, np.take_along_axis(s, ref, 1), atol=1e-4)


@needs_gpu
@pytest.mark.parametrize("kind", ["flat", "flat_fp16", "ivf"])
def test_faiss_gpu_index_kinds(kind):
    ok, why = gpu_index.faiss_gpu_available()
    if not ok:
        pytest.skip(f"needs faiss-gpu: {why}")
    rng = np.random.default_rng(2)
    bank = rng.standard_normal((4000, 64)).astype(np.float32)
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    idx = gpu_index.build_gpu_index(bank, kind, backend="faiss")
    _, ids = idx.search(bank[:50], 5)
    assert idx.kind == kind and (ids[:, 0] == np.arange(50)).mean() > 0.9


@needs_gpu
def test_end_to_end_gpu_path_gives_the_cpu_labels():
    from moduseg.runtime.index import build_index
    from moduseg.runtime.pipeline import assign

    fmap, bank, props = _synthetic_pipeline(np.random.default_rng(4))
    cfg = RuntimeConfig(min_objectness=0.0, min_area=0, top_k=10)
    cpu = assign(fmap, props, bank, build_index(bank.vectors, "flat"), cfg)
    gpu = assign(fmap, props, bank, gpu_index.make_index(bank.vectors, "flat", prefer="gpu"), cfg,
                 pooler=smfa_gpu.make_smfa_pooler("gpu"))
    np.testing.assert_array_equal(gpu.label_map, cpu.label_map)
    assert [s.label for s in gpu.segments] == [s.label for s in cpu.segments]


# ---- the GPU host code driven through the emulated device -------------------------
# GpuSmfa and NvrtcTopkIndex run unchanged (buffers, argument order, launch
# plans); only the launches execute in the g++-built emulator of the same .cu.

@pytest.fixture(scope="module")
def emu_device(tmp_path_factory):
    import shutil

    if shutil.which("g++") is None:
        pytest.skip("needs g++ to build the CUDA emulator")
    from moduseg.runtime.cuda.emulate import EmulatedDevice, Emulator, build_emulator

    return EmulatedDevice(Emulator(build_emulator(tmp_path_factory.getbasetemp() / "cuda-emu"), seed=3))


def test_gpu_smfa_host_code_on_the_emulated_device(emu_device):
    gpu = smfa_gpu.GpuSmfa(emu_device)
    for seed, P in [(0, 40), (1, 3), (2, 0)]:               # buffers grow and get reused
        masks, fmap = _scene(seed, P=P, D=70)
        for f in (fmap.features, fmap.features.astype(np.float16)):
            v, w, a = gpu.run(masks, f, fmap.geometry)
            rv, rw = smfa(masks, FeatureMap(f.astype(np.float32), fmap.geometry))
            live = rw > 1e-6
            np.testing.assert_allclose(v[live], rv[live], rtol=1e-5, atol=2e-6)
            np.testing.assert_allclose(w, rw, rtol=1e-5, atol=1e-5)
            np.testing.assert_array_equal(a, masks.sum((1, 2)))
            assert np.all(v[~live] == 0)
    masks, fmap = _scene(5, D=64)
    hwd = np.ascontiguousarray(fmap.features.transpose(1, 2, 0)).astype(np.float16)
    dev = smfa_gpu.DeviceFeatures(hwd.ctypes.data, hwd.shape, "float16", fmap.geometry, "hwd")
    v, _ = gpu(masks, dev)
    np.testing.assert_allclose(v, smfa(masks, FeatureMap(hwd.transpose(2, 0, 1).astype(np.float32),
                                                         fmap.geometry))[0], rtol=1e-5, atol=2e-6)
    assert "emulator" in gpu.describe()
    # masks already on the "device": no upload, same answer
    m8 = np.ascontiguousarray(masks, dtype=np.uint8)
    v2, _ = gpu(smfa_gpu.DeviceMasks(m8.ctypes.data, m8.shape), dev)
    np.testing.assert_array_equal(v2, v)
    with pytest.raises(InputError, match="on the GPU"):
        smfa_gpu.make_smfa_pooler("cpu")(smfa_gpu.DeviceMasks(1, (1, 2, 2)), fmap)


@pytest.mark.parametrize("kind", ["flat", "flat_fp16"])
def test_nvrtc_index_host_code_on_the_emulated_device(emu_device, kind):
    rng = np.random.default_rng(9)
    bank = rng.standard_normal((900, 40)).astype(np.float32)
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    idx = gpu_index.NvrtcTopkIndex(bank, kind, device=emu_device, max_segments=4)
    assert idx.dtype == ("float32" if kind == "flat" else "float16")
    q = rng.standard_normal((37, 40)).astype(np.float32)
    sims, ids = idx.search(q, 25)
    stored = bank.astype(idx.dtype).astype(np.float32)
    s = q @ stored.T
    ref = np.argsort(-s, axis=1, kind="stable")[:, :25]
    np.testing.assert_array_equal(ids, ref)
    assert ids.dtype == np.int64
    np.testing.assert_allclose(sims, np.take_along_axis(s, ref, 1), atol=1e-5)
    assert idx.search(q[:0], 5)[1].shape == (0, 5)
    assert idx.search(q[:2], 3)[0].shape == (2, 3)
    small = gpu_index.NvrtcTopkIndex(bank[:7], kind, device=emu_device)
    assert small.search(q, 25)[1].shape == (37, 7)                   # k' = min(k, n)
    with pytest.raises(InputError, match="queries must be"):
        idx.search(q[:, :5], 3)


def _synthetic_pipeline(rng):
    geo = GridGeometry((120, 160), (112, 154), (8, 11), 14)
    D, classes = 64, ["background", "road", "car", "tree"]
    centres = rng.standard_normal((4, D)).astype(np.float32) * 3
    region = rng.integers(0, 4, size=(4, 4)).repeat(2, 0).repeat(3, 1)[:8, :11]
    feats = centres[region].transpose(2, 0, 1) + rng.standard_normal((D, 8, 11)).astype(np.float32)
    fmap = FeatureMap(np.ascontiguousarray(feats), geo)
    vecs = centres[np.repeat(np.arange(4), 30)] + rng.standard_normal((120, D)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    bank = Bank(vecs.astype(np.float32), np.repeat(np.arange(4), 30), classes,
                BackboneIdentity("synthetic", "8x11", 14, D, "0" * 64), np.repeat(["a"], 120),
                background_index=0)
    ys = (np.arange(120) * 8 // 120)[:, None]
    xs = (np.arange(160) * 11 // 160)[None, :]
    masks = np.stack([region[ys, xs] == c for c in range(4)]
                     + [rng.random((120, 160)) < 0.5 for _ in range(3)])
    props = Proposals(masks, np.ones(len(masks), np.float32), (120, 160))
    return fmap, bank, props


def test_pipeline_with_emulated_gpu_stages_gives_the_cpu_labels(emu_device):
    from moduseg.runtime.index import build_index
    from moduseg.runtime.pipeline import assign

    fmap, bank, props = _synthetic_pipeline(np.random.default_rng(4))
    cfg = RuntimeConfig(min_objectness=0.0, min_area=0, top_k=10)
    cpu = assign(fmap, props, bank, build_index(bank.vectors, "flat"), cfg)
    emu = assign(fmap, props, bank, gpu_index.NvrtcTopkIndex(bank.vectors, "flat", emu_device),
                 cfg, pooler=smfa_gpu.GpuSmfa(emu_device))
    assert len(np.unique(cpu.label_map)) > 1
    np.testing.assert_array_equal(emu.label_map, cpu.label_map)
    assert [s.label for s in emu.segments] == [s.label for s in cpu.segments]
