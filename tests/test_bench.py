"""moduseg.bench: a tiny configuration of every CPU suite, the report files, and the GPU
timer's clean skip."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from moduseg.bench import bench_command, run
from moduseg.bench.gpu import CudaEventTimer, gpu_status
from moduseg.bench.inputs import blob_masks
from moduseg.bench.report import write_report
from moduseg.bench.scaling import recall_at_k
from moduseg.bench.stats import summarize, summarize_stages
from moduseg.errors import BackendUnavailableError

STAGE_KEYS = {"n", "median", "p90", "p99", "mean", "min"}


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    res = run(["stages", "scaling"], "quick", progress=False,
              overrides={"stages": {"data_root": out / "no-data"}})
    paths = write_report(res, out)
    return res, out, paths


def test_summary_known_answer():
    s = summarize(range(1, 101))
    assert s["n"] == 100 and s["median"] == 50.5 and s["min"] == 1.0
    assert s["p90"] == pytest.approx(90.1) and s["p99"] == pytest.approx(99.01)
    st = summarize_stages([{"a": 1.0, "b": 2.0}, {"a": 3.0, "b": 4.0}], ["b", "a"])
    assert list(st) == ["b", "a", "total"] and st["total"]["median"] == 5.0
    assert summarize([])["median"] is None


@pytest.mark.slow
def test_quick_json_structure(quick):
    _, out, paths = quick
    data = json.loads((out / "results.json").read_text())
    assert data["schema"] == "moduseg-bench/1"
    m = data["machine"]
    assert m["cpu_model"] and m["cores_logical"] >= 1 and m["ram_gib"] > 0
    for k in ("moduseg", "numpy", "faiss", "onnxruntime", "opencv"):
        assert k in m["versions"]
    st = data["suites"]["stages"]
    frame = st["frame"]["stages"]
    for k in ("decode", "preprocess", "filter", "pool", "search", "vote", "nms", "raster"):
        assert STAGE_KEYS <= set(frame[k]), k
        assert frame[k]["median"] >= 0
    assert frame["total"]["median"] > 0
    assert "backbone" in st["skipped"] and "proposer" in st["skipped"]
    assert st["memory"]["peak_rss_mb"] > 0
    assert set(st["post_backbone"]) == {"10", "25"}
    sc = data["suites"]["scaling"]
    kinds = {r["kind"] for r in sc["rows"]}
    assert kinds == {"flat", "flat_fp16", "ivf"}
    assert all(r["recall_at_25"] == 1.0 for r in sc["rows"] if r["kind"] == "flat")
    assert sc["auto"]["choice"]["500"] == "flat"
    assert "gpu_skipped" in sc
    md = (out / "results.md").read_text()
    assert "| stage | median ms" in md and "recall@25" in md
    for name in paths["plots"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {"stage_breakdown.png", "latency_vs_proposals.png", "bank_scaling.png"} <= set(
        paths["plots"])


def test_blob_masks_realistic():
    m = blob_masks(40, (120, 160), seed=1)
    areas = m.reshape(40, -1).sum(1)
    assert m.dtype == bool and areas.min() > 0
    assert areas.max() / max(1, areas.min()) > 10          # varied sizes


def test_recall_at_k():
    truth = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    found = np.array([[4, 3, 2, 1], [5, 6, -1, 9]])
    assert recall_at_k(found, truth) == pytest.approx((1.0 + 0.5) / 2)


def test_video_stream_run_with_fake_segmenter(tmp_path):
    """The overlapped stream runner on a tiny real video file, no models needed."""
    from moduseg.bench.video import stream_run
    from moduseg.types import SegmentationResult

    path = tmp_path / "tiny.avi"
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    if not wr.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG/AVI")
    for i in range(5):
        wr.write(np.full((48, 64, 3), i * 40, np.uint8))
    wr.release()

    def seg(image, timer):
        with timer("backbone"):
            lab = (image[..., 0] > 100).astype(np.uint8)
        return SegmentationResult(lab, [], timer.as_dict(), ["a", "b"])

    out = tmp_path / "out"
    out.mkdir()
    r = stream_run(seg, str(path), 4, out)
    assert r["frames"] == 4 and r["fps"] > 0 and r["image_hw"] == [48, 64]
    assert {"decode", "backbone", "write", "total"} <= set(r["stages"])
    assert len(list(out.glob("*.png"))) == 4


def test_gpu_timer_skips_cleanly():
    status = gpu_status()
    if status["available"]:
        t = CudaEventTimer()
        with t("x"):
            pass
        assert t.as_dict()["x"] >= 0
        return
    assert status["reason"]
    with pytest.raises(BackendUnavailableError):
        CudaEventTimer()
    pytest.skip(f"needs an NVIDIA GPU and driver: {status['reason']}")


def test_stages_on_cuda_needs_a_gpu(tmp_path):
    """The GPU path (GPU index, CUDA SMFA, CUDA-event timer) refuses cleanly without one."""
    from moduseg.bench.stages import run_stages
    if gpu_status()["available"]:
        r = run_stages(proposals=(10,), frames=2, warmup=1, bank_size=1000, dim=32,
                       n_scenes=1, models="off", device="cuda", data_root=tmp_path,
                       show_progress=False)
        assert r["config"]["clock"] == "CUDA events"
        return
    with pytest.raises((BackendUnavailableError, ImportError)):
        run_stages(proposals=(10,), frames=2, warmup=1, bank_size=1000, dim=32, n_scenes=1,
                   models="off", device="cuda", data_root=tmp_path, show_progress=False)
    pytest.skip(f"needs an NVIDIA GPU and driver: {gpu_status()['reason']}")


def test_each_suite_help_lists_only_its_own_options():
    from moduseg.bench.cli import OPTIONS

    def listed(suite):
        out = CliRunner().invoke(bench_command, [suite, "--help"]).output
        return {o for o in out.split() if o.startswith("--")}

    assert {"--sizes", "--dims", "--repeats"} <= listed("scaling")
    assert not {"--bank", "--max-frames", "--backend", "--device"} & listed("scaling")
    assert {"--bank", "--max-frames", "--backend"} <= listed("video")
    assert not {"--sizes", "--dims", "--bank-size", "--proposals"} & listed("video")
    every = {o.opts[0] for _, deco in OPTIONS for o in [deco(lambda: None).__click_params__[0]]}
    assert every <= listed("all")


def test_a_studys_bad_input_is_one_line_and_exit_2(monkeypatch, tmp_path):
    """``python -m benchmarks STUDY``: a ModuSegError of the study (here an output path
    that is a folder) is one line naming the path and the fix, exit 2, no traceback."""
    import sys
    import types

    import click
    from click.testing import CliRunner

    import benchmarks.__main__ as bench_main
    from moduseg.owned import atomic_path

    @click.command()
    def command():
        with atomic_path(tmp_path) as tmp:
            open(tmp, "w").close()

    module = types.ModuleType("benchmarks.fake_study")
    module.command = command
    monkeypatch.setitem(sys.modules, "benchmarks.fake_study", module)
    monkeypatch.setitem(bench_main.STUDIES, "fake", "fake_study")
    r = CliRunner().invoke(bench_main.cli, ["fake"])
    assert r.exit_code == 2, r.output
    lines = [x for x in r.output.splitlines() if x.strip()]
    assert len(lines) == 1 and "it is a folder: give a file name" in lines[0]
    assert "Traceback" not in r.output
