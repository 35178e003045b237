"""Serving on Triton: repository configs, ``moduseg serve`` end to end, clients.

The server runs in the environment given by ``--serve-env`` (numpy < 2 and
nvidia-pytriton: ``.ci/run`` makes it), on 127.0.0.1 ports picked free, with
a bounded number of requests; the client side and the in-process reference
run here. Tests skip with the reason when a piece is missing.
"""

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moduseg.errors import InputError
from moduseg.serve.repository import (BACKBONE, BANK, DECODER, ENCODER, MODELS, PIPELINE,
                                      STREAM, TritonOptions, parse_batch_sizes, parse_frame_size,
                                      write_repository)

ROOT = Path(__file__).resolve().parents[1]
VAL_FRAMES = ["0016E5_07959", "0016E5_08085", "0016E5_08145", "0016E5_08019"]
# the live server runs with temporal settings other than the preset's (max_interval 8), so
# the stream tests check that a served stream honours 'serve --set temporal.*'; a vote frame
# every 2nd frame after a keyframe, so a 4-frame stream has all three kinds of frame
SERVED_MAX_INTERVAL = 3
SERVED_VOTE_EVERY = 2


# -- option parsing (user input) -------------------------------------------------------

@settings(max_examples=80, deadline=None)
@given(st.text(max_size=12))
def test_batch_sizes_parse_or_refuse_with_one_line(text):
    try:
        sizes = parse_batch_sizes(text)
    except InputError as e:
        assert "\n" not in str(e) and "--preferred-batch-sizes" in str(e)
    else:
        assert sizes and min(sizes) >= 1 and list(sizes) == sorted(set(sizes))


@settings(max_examples=80, deadline=None)
@given(st.text(max_size=10))
def test_frame_size_parses_or_refuses_with_one_line(text):
    try:
        h, w = parse_frame_size(text)
    except InputError as e:
        assert "\n" not in str(e) and "--frame-size" in str(e)
    else:
        assert h >= 1 and w >= 1


def test_known_option_values():
    assert parse_batch_sizes("8, 4,4") == (4, 8)
    assert parse_frame_size("480x360") == (360, 480)
    with pytest.raises(InputError, match="tensorrt_plan needs --engine-dir"):
        TritonOptions(variant="gpu", platform="tensorrt_plan").validate()
    with pytest.raises(InputError, match="--variant"):
        TritonOptions(variant="tpu").validate()


# -- fixtures ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bank_file(shared_data, tmp_path_factory):
    """A small CamVid bank (6 train frames) built with the default models.

    Exact search (``runtime.index='flat'``): the served models and the in-process
    reference build their indexes in two environments (numpy 1 and 2, different
    BLAS threads), and an IVF probing fewer lists than it has (the default's
    ``nprobe`` 8) may rank a query's lists differently on float noise; these tests
    check that the served pipeline computes what the in-process one does.
    """
    from moduseg.bank.builder import build_bank
    from moduseg.bank.datasets import camvid
    from moduseg.bank.store import save_bank
    from moduseg.config import preset
    from moduseg.errors import ModuSegError
    from moduseg.build import load_default_backbone

    cfg = preset("default").with_overrides(**{"runtime.index": "flat"})
    try:
        backbone = load_default_backbone(providers="cpu", **cfg.backbone_options())
    except ModuSegError as e:
        pytest.skip(f"default models not installed ({e}); run 'moduseg models pull'")
    train = camvid(shared_data / "camvid", "train")
    train.samples = train.samples[::30][:6]
    bank = build_bank(train, backbone, cfg.bank, config_record=cfg.to_dict())
    path = tmp_path_factory.mktemp("serve-bank") / "camvid6.npz"
    save_bank(bank, path)
    return path


def _model_config_pb2():
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError as e:
        pytest.skip(f"tritonclient[grpc] is not installed ({e}); pip install 'moduseg[serve]'")
    return model_config_pb2, text_format


def _parse_configs(repo: Path):
    pb2, text_format = _model_config_pb2()
    out = {}
    for name in MODELS:
        cfg = text_format.Parse((repo / name / "config.pbtxt").read_text(), pb2.ModelConfig())
        assert cfg.name == name
        out[name] = cfg
    return out, pb2


def _params(cfg):
    return {k: v.string_value for k, v in cfg.parameters.items()}


# -- repository configs --------------------------------------------------------------------

@pytest.mark.realdata
@pytest.mark.models
def test_cpu_repository_every_config_parses_as_a_model_config(bank_file, tmp_path):
    opts = TritonOptions(max_queue_delay_us=1500, preferred_batch_sizes=(2, 4),
                         python_env="/some/env", settings=("temporal.max_interval=3",))
    repo = write_repository(bank_file, tmp_path / "repo", opts)
    cfgs, pb2 = _parse_configs(repo)
    for name, cfg in cfgs.items():
        assert cfg.backend == "python" and not cfg.platform
        # --set reaches every served model (each builds the configuration itself)
        assert json.loads(_params(cfg)["settings"]) == ["temporal.max_interval=3"]
        assert [g.kind for g in cfg.instance_group] == [pb2.ModelInstanceGroup.KIND_CPU]
        assert _params(cfg)["EXECUTION_ENV_PATH"] == "/some/env"
        assert (repo / name / "1" / "model.py").is_file()
    bb = cfgs[BACKBONE]
    assert bb.max_batch_size == 4
    assert list(bb.dynamic_batching.preferred_batch_size) == [2, 4]
    assert bb.dynamic_batching.max_queue_delay_microseconds == 1500
    assert [(i.name, list(i.dims)) for i in bb.input] == [("input_image", [3, -1, -1])]
    for name in (ENCODER, DECODER, BANK, PIPELINE):
        assert cfgs[name].max_batch_size == 0 and not cfgs[name].HasField("dynamic_batching")
    pipe = cfgs[PIPELINE]
    assert [(i.name, i.data_type, list(i.dims)) for i in pipe.input] == [
        ("image", pb2.TYPE_UINT8, [-1, -1, 3])]
    assert [o.name for o in pipe.output] == ["label_map", "class", "confidence", "box",
                                             "class_names"]
    assert pipe.output[-1].data_type == pb2.TYPE_STRING
    assert json.loads(_params(pipe)["class_names"])[0] == "sky"
    assert pipe.instance_group[0].count == 1 and bb.instance_group[0].count == 1
    assert (repo / BANK / "1" / "bank.npz").read_bytes() == bank_file.read_bytes()
    # the decoder's tensors are the rewritten SAM decoder's own
    assert "point_coords" in [i.name for i in cfgs[DECODER].input]
    # one Triton sequence per camera: the oldest strategy keeps a sequence on one of the
    # instances and batches requests of different sequences
    stream = cfgs[STREAM]
    sb = stream.sequence_batching
    assert stream.max_batch_size >= 2 and stream.instance_group[0].count == 2
    assert sb.HasField("oldest") and sb.oldest.max_candidate_sequences >= 16
    assert sb.max_sequence_idle_microseconds >= 10_000_000
    kinds = {c.name: c.control[0].kind for c in sb.control_input}
    K = pb2.ModelSequenceBatching.Control
    assert kinds == {"START": K.CONTROL_SEQUENCE_START, "END": K.CONTROL_SEQUENCE_END,
                     "CORRID": K.CONTROL_SEQUENCE_CORRID}
    assert [o.name for o in stream.output] == ["label_map", "class", "confidence", "box",
                                               "class_names", "track_id", "keyframe"]
    assert _params(stream)["stream_path"] == "temporal"
    # written again into the same folder: replaced, not refused
    write_repository(bank_file, repo, opts)


@pytest.mark.realdata
@pytest.mark.models
@pytest.mark.parametrize("platform", ["onnxruntime_onnx", "tensorrt_plan"])
def test_gpu_repository_configs_use_the_gpu_platforms(bank_file, tmp_path, platform):
    engines = tmp_path / "engines"
    engines.mkdir()
    for f in ("backbone.plan", "sam_encoder.plan", "sam_decoder.plan"):
        (engines / f).write_bytes(b"not an engine: the configs are what is checked")
    opts = TritonOptions(variant="gpu", platform=platform, frame_hw=(360, 480),
                         engine_dir=str(engines) if platform == "tensorrt_plan" else None)
    repo = write_repository(bank_file, tmp_path / "repo", opts)
    cfgs, pb2 = _parse_configs(repo)
    model_file = "model.onnx" if platform == "onnxruntime_onnx" else "model.plan"
    for name in (BACKBONE, ENCODER, DECODER):
        assert cfgs[name].platform == platform and not cfgs[name].backend
        assert [g.kind for g in cfgs[name].instance_group] == [pb2.ModelInstanceGroup.KIND_GPU]
        assert (repo / name / "1" / model_file).stat().st_size > 0
    # the encoder graph is cut for the 480x360 frame: 1024x768 resized, 768 rows of content
    assert list(cfgs[ENCODER].input[0].dims)[1:] == [3, 768, 1024]
    for name in (BANK, PIPELINE, STREAM):
        assert cfgs[name].backend == "python"
        assert [g.kind for g in cfgs[name].instance_group] == [pb2.ModelInstanceGroup.KIND_CPU]
    assert cfgs[BACKBONE].dynamic_batching.preferred_batch_size


def test_export_refuses_a_bad_bank_with_one_line(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a bank")
    r = subprocess.run([sys.executable, "-m", "moduseg.cli", "export", "triton", "--bank",
                        str(bad), "--out", str(tmp_path / "repo")],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "bad.npz" in r.stderr
    assert not (tmp_path / "repo").exists()


# -- moduseg serve refusals (no server needed) ---------------------------------------------

def _run_serve(args, timeout=120):
    return subprocess.run([sys.executable, "-m", "moduseg.cli", "serve", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_serve_refuses_a_bad_bank_with_one_line(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 truncated")
    r = _run_serve(["--bank", str(bad)])
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and "bad.npz" in lines[0], lines


def test_serve_refuses_a_bad_setting_with_one_line():
    bank = ROOT / "moduseg" / "bank" / "data" / "camvid-default.npz"
    r = _run_serve(["--bank", str(bank), "--set", "temporal.max_intervl=3"])
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "did you mean temporal.max_interval" in lines[0], lines


def test_served_models_build_the_bank_configuration_with_the_settings(tmp_path, monkeypatch):
    """A served model's segmenter is the bank's with the repository's ``--set`` settings,
    so ``moduseg_stream``'s temporal path reads ``temporal.*`` from them."""
    from moduseg.bank import segmenter as bank_segmenter
    from moduseg.serve import triton_models
    seen = {}

    def fake(path, home=None, preset=None, overrides=(), backend="auto", **kw):
        seen.update(path=path, overrides=overrides, backend=backend)
        return "seg"

    monkeypatch.setattr(bank_segmenter, "segmenter_from_bank", fake)
    model_dir = tmp_path / "repo" / STREAM
    params = {"bank": {"string_value": "bank/1/bank.npz"}, "home": {"string_value": ""},
              "settings": {"string_value": json.dumps(["temporal.max_interval=3"])}}
    args = {"model_config": json.dumps({"parameters": params}),
            "model_repository": str(model_dir)}
    assert triton_models._parts(args)[2] == "seg"
    assert seen == {"path": str(tmp_path / "repo" / "bank/1/bank.npz"),
                    "overrides": ("temporal.max_interval=3",), "backend": "cpu"}
    del params["settings"]
    args["model_config"] = json.dumps({"parameters": params})
    triton_models._parts(args)
    assert seen["overrides"] == ()


@pytest.mark.realdata
@pytest.mark.models
def test_serve_refuses_a_busy_port_with_one_line(bank_file, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        r = _run_serve(["--bank", str(bank_file), "--http-port", str(port),
                        "--workdir", str(tmp_path / "w")])
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"--http-port {port}" in lines[0] and "in use" in lines[0], lines


# -- a running server ----------------------------------------------------------------------

def _serve_env(config) -> Path:
    opt = config.getoption("--serve-env")
    beside = Path(__file__).resolve().parents[1] / ".venv-serve"    # what .ci/run makes
    if opt:
        env = Path(opt)
    elif importlib.util.find_spec("pytriton") is not None:
        env = Path(sys.prefix)
    elif (beside / "bin" / "python").is_file():
        env = beside
    else:
        pytest.skip("no serving environment: make .venv-serve at the checkout's root (a venv "
                    "with 'moduseg[serve]', numpy < 2; .ci/run makes one) or pass "
                    "--serve-env VENV")
    py = env / "bin" / "python"
    probe = subprocess.run([str(py), "-c", "import pytriton, tritonclient, onnxruntime, faiss"],
                           capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        pytest.skip(f"{env} lacks the serve extra: {probe.stderr.strip().splitlines()[-1:]}")
    return env


def _free_ports(n=3):
    from moduseg.serve.server import free_ports
    return free_ports("127.0.0.1", n)


def _stray_processes(marker: str) -> list[str]:
    import psutil

    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
        except psutil.Error:
            continue
        if marker in cmd:
            found.append(f"{p.pid}: {cmd[:120]}")
    return found


def _orphan_shm_regions() -> list[str]:
    """``moduseg_*`` shared-memory regions that no running server's prefix owns (others
    on this machine may be serving at the same time: their regions are theirs)."""
    import re

    import psutil

    shm = Path("/dev/shm")
    if not shm.is_dir():
        return []
    live = set()
    for p in psutil.process_iter(["cmdline"]):
        try:
            live.update(re.findall(r"shm-region-prefix-name=(\S+)",
                                   " ".join(p.info["cmdline"] or [])))
        except psutil.Error:
            continue
    return [f.name for f in shm.glob("moduseg_*") if not any(f.name.startswith(x) for x in live)]


@pytest.fixture(scope="module")
def server(request, bank_file, tmp_path_factory):
    """``moduseg serve`` in the serving environment; stopped by the last test (or here)."""
    pytest.importorskip("tritonclient.http", reason="tritonclient is not installed here")
    pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed here")
    env = _serve_env(request.config)
    work = tmp_path_factory.mktemp("serve-work")
    served = work / "bank.npz"          # a copy: the hot-swap test replaces it
    shutil.copyfile(bank_file, served)
    http, grpc, metrics = _free_ports()
    penv = dict(os.environ, PYTHONPATH=str(ROOT))
    log = open(work / "serve.out", "wb")
    proc = subprocess.Popen(
        [str(env / "bin" / "python"), "-m", "moduseg.cli", "serve", "--bank", str(served),
         "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics),
         "--workdir", str(work), "--set", f"temporal.max_interval={SERVED_MAX_INTERVAL}",
         "--set", f"temporal.vote_every={SERVED_VOTE_EVERY}"],
        stdout=log, stderr=subprocess.STDOUT, env=penv, cwd=ROOT)
    deadline = time.monotonic() + 600
    ready = False
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready",
                                        timeout=2) as r:
                ready = r.status == 200
        except OSError:
            pass
        if ready:
            break
        time.sleep(1)
    state = {"proc": proc, "work": work, "bank": served, "http": f"127.0.0.1:{http}",
             "grpc": f"127.0.0.1:{grpc}", "metrics": f"http://127.0.0.1:{metrics}/metrics"}
    try:
        if not ready:
            pytest.fail(f"moduseg serve did not become ready: "
                        f"{(work / 'serve.out').read_text()[-2000:]}")
        yield state
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()


@pytest.fixture(scope="module")
def local_segmenter(bank_file):
    """The in-process ``Segmenter`` (the same construction as the served models)."""
    from moduseg.bank.segmenter import segmenter_from_bank

    return segmenter_from_bank(str(bank_file), backend="cpu")


@pytest.fixture(scope="module")
def reference(local_segmenter, shared_data):
    from moduseg.io import read_image

    seg = local_segmenter
    images = {n: read_image(shared_data / "camvid" / "val" / f"{n}.png") for n in VAL_FRAMES}
    return images, {n: seg(im) for n, im in images.items()}


def _check_answer(out, ref):
    np.testing.assert_array_equal(out["label_map"], ref.label_map)
    shown = [s for s in ref.segments if s.label >= 0 and s.painted_pixels > 0]
    assert out["class"].tolist() == [s.label for s in shown]
    np.testing.assert_allclose(out["confidence"], [s.confidence for s in shown], atol=1e-5)
    b = out["box"]
    assert b.shape == (len(shown), 4)
    H, W = ref.label_map.shape
    assert ((b[:, 0] < b[:, 2]) & (b[:, 1] < b[:, 3]) & (b[:, 2] <= W) & (b[:, 3] <= H)).all()


@pytest.mark.realdata
@pytest.mark.models
@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_served_label_maps_equal_the_in_process_segmenter(server, reference, protocol):
    from moduseg.serve.client import connect, segment

    images, refs = reference
    client = connect(server[protocol], protocol)
    for name in VAL_FRAMES[:2]:
        _check_answer(segment(client, images[name], protocol), refs[name])


@pytest.mark.realdata
@pytest.mark.models
@pytest.mark.slow
def test_a_local_pipeline_on_the_served_networks_gives_the_same_labels(server, reference,
                                                                       bank_file):
    """``TritonRunner`` over ``tritonclient``: the pipeline runs here, its backbone, encoder
    and decoder graphs on the server, built by the same builder as everything else."""
    from moduseg.bank.segmenter import segmenter_from_bank
    from moduseg.serve.triton_models import served_backend

    images, refs = reference
    seg = segmenter_from_bank(str(bank_file), backend=served_backend(server["http"]))
    assert seg.backbone.runner.device == f"triton backbone at {server['http']}"
    name = VAL_FRAMES[0]
    np.testing.assert_array_equal(seg(images[name]).label_map, refs[name].label_map)


@pytest.mark.realdata
@pytest.mark.models
@pytest.mark.slow
def test_concurrent_streams_all_get_complete_correct_answers(server, reference):
    from concurrent.futures import ThreadPoolExecutor

    from moduseg.serve.client import connect, segment

    images, refs = reference
    streams = [("http", VAL_FRAMES[0:2]), ("grpc", VAL_FRAMES[2:4]), ("http", VAL_FRAMES[3:1:-1])]

    def run(stream):
        protocol, names = stream
        client = connect(server[protocol], protocol)
        return [(n, segment(client, images[n], protocol)) for n in names]

    with ThreadPoolExecutor(len(streams)) as pool:
        answers = list(pool.map(run, streams))
    assert [len(a) for a in answers] == [2, 2, 2]
    for answer in answers:
        for name, out in answer:
            _check_answer(out, refs[name])
    # the server's own counters saw every request of the moduseg model
    from moduseg.serve.client import read_metrics
    m = read_metrics(server["metrics"])
    assert m[("nv_inference_request_success", PIPELINE)] >= 6
    assert m[("nv_inference_queue_duration_us", BACKBONE)] >= 0


@pytest.mark.realdata
@pytest.mark.models
@pytest.mark.slow
def test_interleaved_served_streams_give_the_local_stream_labels(server, reference,
                                                                 local_segmenter, shared_data):
    """Two cameras as two Triton sequences, sent at once (their frames interleave on the
    server): each gets exactly what the local temporal path gives for its frames, so
    neither stream's memory leaks into the other's."""
    import threading

    from moduseg.serve.client import connect, read_frames, segment_in_stream
    from moduseg.serve.sequences import stream_factory
    from moduseg.temporal import TemporalConfig, TemporalSegmenter

    images, _ = reference
    streams = {11: read_frames(shared_data / "video" / "bikes.mp4", 4),   # propagated frames
               12: [images[n] for n in VAL_FRAMES[0:3]]}                   # cuts
    served: dict = {}

    def run(sid, protocol):
        client = connect(server[protocol], protocol)
        frames = streams[sid]
        served[sid] = [segment_in_stream(client, f, sid, start=i == 0,
                                         end=i == len(frames) - 1, protocol=protocol)
                       for i, f in enumerate(frames)]

    threads = [threading.Thread(target=run, args=(11, "http")),
               threading.Thread(target=run, args=(12, "grpc"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=900)
    assert sorted(served) == [11, 12]
    keyframes = []
    # the local reference: the temporal path with the server's --set over the bank's config
    setting = {"temporal.max_interval": SERVED_MAX_INTERVAL,
               "temporal.vote_every": SERVED_VOTE_EVERY}
    served_config = TemporalConfig.from_config(
        local_segmenter.full_config.with_overrides(**setting))
    for sid, frames in streams.items():
        step = TemporalSegmenter(local_segmenter, served_config)
        assert step.config.max_interval == SERVED_MAX_INTERVAL
        kinds = []
        for frame, out in zip(frames, served[sid]):
            ref = step(frame)
            kinds.append(ref.kind)
            assert out["keyframe"].tolist() == [ref.keyframe]
            assert np.array_equal(out["label_map"], ref.label_map), sid
            _check_answer(out, ref)
            shown = [i for i, s in enumerate(ref.segments) if s.label >= 0 and s.painted_pixels]
            assert out["track_id"].tolist() == [ref.track_ids[i] for i in shown]
            keyframes.append(ref.keyframe)
        if sid == 11:                   # the served vote frame equals the local one
            assert kinds == ["keyframe", "propagated", "vote", "keyframe"], kinds
    assert not all(keyframes)           # some frames were propagated from the stream's state
    # 'serve --set temporal.max_interval=3' is honoured: on the 4 bikes frames (no cut, small
    # motion) the served stream took a keyframe by the interval at frame 3; the preset's
    # interval (4 or more) takes one keyframe only
    assert [bool(o["keyframe"][0]) for o in served[11]] == [True, False, False, True]
    preset_path = stream_factory("temporal")(local_segmenter)    # 'moduseg serve' default
    assert preset_path.config.max_interval >= 4
    assert [preset_path(f).keyframe for f in streams[11]] == [True, False, False, False]
    # a frame of a stream that was never started is refused, and the server goes on
    from tritonclient.utils import InferenceServerException
    with pytest.raises(InferenceServerException, match="START"):
        segment_in_stream(connect(server["http"]), images[VAL_FRAMES[0]], 99)


@pytest.mark.realdata
@pytest.mark.models
@pytest.mark.slow
def test_malformed_requests_get_errors_and_the_server_keeps_serving(server, reference):
    import tritonclient.grpc as tg
    import tritonclient.http as th
    from tritonclient.utils import InferenceServerException

    from moduseg.serve.client import connect, segment

    images, refs = reference
    image = images[VAL_FRAMES[0]]
    for mod, protocol in ((th, "http"), (tg, "grpc")):
        client = connect(server[protocol], protocol)
        bad = [(image.astype(np.float32), "FP32"),            # wrong dtype
               (np.ascontiguousarray(image[..., 0]), "UINT8"),  # wrong rank
               (np.zeros((0, 0, 3), np.uint8), "UINT8"),      # empty image
               (np.zeros((4, 5, 4), np.uint8), "UINT8")]      # four channels
        for arr, dtype in bad:
            inp = mod.InferInput("image", list(arr.shape), dtype)
            inp.set_data_from_numpy(arr)
            with pytest.raises(InferenceServerException):
                client.infer(PIPELINE, [inp])
    _check_answer(segment(connect(server["http"]), image), refs[VAL_FRAMES[0]])


@pytest.mark.realdata
@pytest.mark.models
@pytest.mark.slow
def test_a_client_sees_the_new_classes_after_a_bank_swap(server, reference, tmp_path):
    """The served bank file replaced (``bank drop`` + rename, as docs/guides/classes.md
    says): the next answers carry the new bank's class names, and their label values
    index them; the original put back, the original names return. Bounded: 120 s."""
    from moduseg.bank.edit import drop_class
    from moduseg.bank.store import load_bank, save_bank
    from moduseg.serve.client import connect, segment

    images, refs = reference
    image = images[VAL_FRAMES[0]]
    client = connect(server["http"])
    before = segment(client, image)
    bank_path = server["bank"]
    original = load_bank(bank_path)
    assert before["class_names"] == list(original.class_names)
    _check_answer(before, refs[VAL_FRAMES[0]])

    def swap_to(path, want):
        os.replace(path, bank_path)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            out = segment(client, image)
            if out["class_names"] == want:
                return out
            time.sleep(0.5)
        raise AssertionError(f"the served class names stayed {out['class_names']}; the "
                             f"server log: {(server['work'] / 'serve.out').read_text()[-1500:]}")

    saved = tmp_path / "original.npz"
    shutil.copyfile(bank_path, saved)
    dropped = drop_class(original, "sky")
    new = save_bank(dropped, tmp_path / "dropped.npz")
    after = swap_to(new, list(dropped.class_names))
    assert "sky" not in after["class_names"]
    assert set(np.unique(after["label_map"]).tolist()) <= set(range(len(dropped.class_names))) \
        | {255}
    assert all(0 <= c < len(dropped.class_names) for c in after["class"].tolist())
    back = swap_to(saved, list(original.class_names))
    _check_answer(back, refs[VAL_FRAMES[0]])


@pytest.mark.realdata
@pytest.mark.models
@pytest.mark.slow
def test_a_served_stream_follows_a_bank_swap_and_keeps_its_bank_on_a_bad_file(
        server, bank_file, shared_data, tmp_path):
    """``moduseg_stream`` (the temporal path, one state per sequence) with the bank file
    replaced between two frames of a stream: the next frame is a keyframe on the new
    bank (its class names, label values indexing them) and equals the local temporal
    path swapped at the same frame (memory carried by class name); a corrupted file is
    refused with one line in the server log and the stream keeps the bank it had; the
    original put back, the stream follows it. Bounded: 8 frames, 60 s per swap."""
    from moduseg.bank.edit import drop_class
    from moduseg.bank.segmenter import segmenter_from_bank
    from moduseg.bank.store import load_bank, save_bank
    from moduseg.serve.client import connect, read_frames, segment_in_stream
    from moduseg.serve.sequences import stream_factory

    frames = read_frames(shared_data / "video" / "bikes.mp4", 8)
    bank_path, log = server["bank"], server["work"] / "tritonserver.log"   # the models' stderr
    original = load_bank(bank_path)
    saved = tmp_path / "original.npz"
    shutil.copyfile(bank_path, saved)
    dropped = drop_class(original, "sky")
    new = save_bank(dropped, tmp_path / "dropped.npz")
    client = connect(server["http"])
    sid = 31

    def send(i, **kw):
        return segment_in_stream(client, frames[i], sid, start=i == 0, **kw)

    def swap(path):
        os.replace(path, bank_path)
        time.sleep(1.0)          # the watchers look at the file at most every 0.5 s

    local = segmenter_from_bank(str(bank_file), backend="cpu")
    step = stream_factory("temporal")(local)
    out = [send(0), send(1)]
    refs = [step(frames[0]), step(frames[1])]
    assert out[1]["class_names"] == list(original.class_names)
    assert out[1]["keyframe"].tolist() == [False]       # a propagated frame before the swap

    new_bank = load_bank(new, expect=local.backbone.identity)     # as the server reads it
    swap(new)
    local.swap_bank(new_bank)
    for i in (2, 3):
        out.append(send(i))
        refs.append(step(frames[i]))
    assert out[2]["class_names"] == list(dropped.class_names), log.read_text()[-1500:]
    assert out[2]["keyframe"].tolist() == [True] and refs[2].reason == "bank"
    for o, r in zip(out, refs):
        np.testing.assert_array_equal(o["label_map"], r.label_map)
        assert o["class_names"] == list(r.class_names)
    assert set(np.unique(out[2]["label_map"]).tolist()) <= \
        set(range(len(dropped.class_names))) | {255}

    bad = tmp_path / "bad.npz"
    bad.write_bytes(saved.read_bytes()[:1000])            # a truncated bank file
    swap(bad)
    kept = send(4)
    assert kept["class_names"] == list(dropped.class_names)
    refused = [ln for ln in log.read_text().splitlines()
               if ln.startswith(f"{STREAM}: ") and "cannot be used" in ln]
    assert len(refused) == 1, refused
    assert str(bank_path) in refused[0] and "still using the bank loaded before" in refused[0]

    swap(saved)
    back = send(5, end=True)
    assert back["class_names"] == list(original.class_names)
    assert back["keyframe"].tolist() == [True]


@pytest.mark.realdata
@pytest.mark.models
@pytest.mark.slow
def test_sigint_stops_the_server_and_leaves_no_process(server):
    proc, work = server["proc"], server["work"]
    assert _stray_processes(str(work)), "the server's processes should be running"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=90) == 0
    deadline = time.monotonic() + 10
    while _stray_processes(str(work)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _stray_processes(str(work)) == []
    # nor shared-memory regions of its Python backend
    assert _orphan_shm_regions() == []
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://{server['http']}/v2/health/ready", timeout=2)


def test_metrics_give_per_request_queue_and_compute_times():
    from moduseg.serve.client import parse_metrics, per_request_ms

    def text(n, execs, queue_us, infer_us):
        return "\n".join([
            "# HELP nv_inference_count Number of inferences performed",
            f'nv_inference_request_success{{model="backbone",version="1"}} {n}',
            f'nv_inference_request_failure{{model="backbone",reason="OTHER",version="1"}} 1',
            f'nv_inference_count{{model="backbone",version="1"}} {n}',
            f'nv_inference_exec_count{{model="backbone",version="1"}} {execs}',
            f'nv_inference_queue_duration_us{{model="backbone",version="1"}} {queue_us}',
            f'nv_inference_compute_infer_duration_us{{model="backbone",version="1"}} {infer_us}',
            'nv_cpu_memory_used_bytes 123'])

    before = parse_metrics(text(2, 2, 1000, 50000))
    after = parse_metrics(text(10, 4, 9000, 450000))
    assert before[("nv_inference_exec_count", "backbone")] == 2
    got = per_request_ms(before, after, "backbone")
    assert got["requests"] == 8 and got["avg_batch"] == 4.0
    assert got["queue_ms"] == pytest.approx(1.0) and got["compute_infer_ms"] == pytest.approx(50.0)
    assert per_request_ms(after, after, "backbone") == {}


def test_bench_serve_compare_needs_its_own_server_and_says_so():
    r = subprocess.run([sys.executable, "-m", "moduseg.cli", "bench", "serve", "--video",
                        "v.mp4", "--url", "127.0.0.1:1", "--temporal", "compare"],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--temporal compare" in lines[0], lines
