"""The Ray Data engine on a local 2-CPU Ray instance: same results, a killed actor retried."""

import functools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="the [ray] extra is not installed (pip install -e '.[ray]')")

from moduseg.bank.builder import build_bank, finish_bank, select_indices  # noqa: E402
from moduseg.bank.datasets import folder  # noqa: E402
from moduseg.bank.store import save_bank  # noqa: E402
from moduseg.config import preset  # noqa: E402
from moduseg.scale import ray_engine  # noqa: E402
from moduseg.scale.ray_engine import RayOptions  # noqa: E402
from moduseg.bank.builder import BankTask  # noqa: E402
from moduseg.bank.segmenter import ModelRecipe  # noqa: E402
from moduseg.scale.work import FrameError, SegmentTask  # noqa: E402

import scale_fixtures  # noqa: E402
import synthetic  # noqa: E402
from scale_fixtures import CLASSES, fake_assemble, write_folder_dataset  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray():
    """Two CPUs, like this machine; the test modules travel to the workers by value."""
    for m in (sys.modules[__name__], scale_fixtures, synthetic):
        ray.cloudpickle.register_pickle_by_value(m)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = write_folder_dataset(tmp_path_factory.mktemp("ray"), n=8, bad=3)
    return d


def open_ds(d):
    return folder(d["images"], d["labels"], CLASSES, 0)


class CrashOnce:
    """Wraps a task; the first item any actor sees kills that actor (once, via a marker)."""

    def __init__(self, task, marker):
        self.task, self.marker = task, str(marker)

    def setup(self):
        fn, marker = self.task.setup(), self.marker

        def run(key):
            if not os.path.exists(marker):
                Path(marker).write_text(str(os.getpid()))
                os._exit(1)                    # a killed worker: no exception, no cleanup
            return fn(key)
        return run


def bank_via_ray(d, cfg, opts, wrap=None):
    ds = open_ds(d)
    order = select_indices(ds)
    task = BankTask(functools.partial(open_ds, d), functools.partial(fake_assemble, None,
                                                                    "backbone"),
                    dict(cfg.bank.__dict__))
    if wrap is not None:
        task = wrap(task)
    results = list(ray_engine.run(task, [str(i) for i in order], opts))
    assert [p for p, _ in results] == list(range(len(order)))       # every image, in order
    entries = [e for _, (e, _) in results]
    identity = results[0][1][1]
    return finish_bank(entries, ds.class_names, 0, identity, cfg.bank, cfg.to_dict(), ds.name)


def single_bank(d, cfg):
    return build_bank(open_ds(d), synthetic.ColourBackbone(), cfg.bank,
                      config_record=cfg.to_dict())


def same_file(a, b, tmp_path):
    pa, pb = save_bank(a, tmp_path / "a.npz"), save_bank(b, tmp_path / "b.npz")
    return pa.read_bytes() == pb.read_bytes()


def test_default_pool_fits_under_a_two_cpu_node_and_matches_single_process(
        local_ray, data, tmp_path):
    """Two actors with the default CPU share (0.75 each on 2 CPUs) must not starve Ray Data."""
    cfg = preset("paper")
    opts = RayOptions(workers=2)
    assert ray_engine.actor_cpus(opts, 2.0) * 2 <= 2.0 - ray_engine.CPU_HEADROOM
    got = bank_via_ray(data, cfg, opts)
    want = single_bank(data, cfg)
    assert [f["image"] for f in got.stats["failed"]] == ["img03"]   # the bad image, listed
    assert same_file(got, want, tmp_path)


def test_a_killed_actor_is_restarted_and_the_result_is_identical(local_ray, data, tmp_path):
    # the 5-dim stand-in backbone: a 3-axis projection instead of the preset's 128
    cfg = preset("default").with_overrides(**{"bank.pca_dim": 3})
    marker = tmp_path / "crashed"
    got = bank_via_ray(data, cfg, RayOptions(workers=2, batch_size=2),
                       wrap=lambda t: CrashOnce(t, marker))
    assert marker.exists()                                    # an actor really died
    assert int(marker.read_text()) != os.getpid()
    assert same_file(got, single_bank(data, cfg), tmp_path)


def test_segment_task_on_the_pool_matches_local_and_lists_bad_frames(local_ray, data, tmp_path):
    # the 5-dim stand-in backbone: a 3-axis projection instead of the preset's 128
    cfg = preset("default").with_overrides(**{"bank.pca_dim": 3})
    bank_path = save_bank(single_bank(data, cfg), tmp_path / "bank.npz")
    spec = ModelRecipe(bank_path=str(bank_path))
    paths = sorted(str(p) for p in data["images"].iterdir()) + [str(tmp_path / "missing.png")]
    task = SegmentTask(functools.partial(fake_assemble, spec, "segmenter"))
    got = [r for _, r in ray_engine.run(task, paths, RayOptions(workers=2))]
    local = task.setup()
    want = [local(p) for p in paths]
    assert isinstance(got[-1], FrameError) and "cannot read image" in got[-1].message
    for g, w in zip(got[:-1], want[:-1]):
        np.testing.assert_array_equal(g.label_map, w.label_map)
    assert len({g.label_map.tobytes() for g in got[:-1]}) > 1


@pytest.mark.realdata
@pytest.mark.models
def test_cli_ray_engine_equals_single_process_on_40_camvid_frames(local_ray, shared_data,
                                                                  tmp_path):
    """Real models: bank build and segment, local vs --engine ray, identical files."""
    from click.testing import CliRunner

    from moduseg.cli import cli
    from moduseg.errors import ModuSegError
    from moduseg.build import load_default_backbone
    try:
        load_default_backbone()
    except ModuSegError as e:
        pytest.skip(str(e))
    camvid = shared_data / "camvid"
    frames = tmp_path / "frames"
    frames.mkdir()
    for p in sorted((camvid / "val").glob("*.png"))[::2][:40]:     # every other frame
        (frames / p.name).symlink_to(p)
    assert len(list(frames.iterdir())) == 40
    cheap = ["--preset", "paper", "--set", "proposer.points_per_side=4"]

    def run(engine, *args):
        args = [str(a) for a in args] + ["--engine", engine]
        if engine == "ray":       # the actors are fresh processes; they join this Ray
            r = CliRunner().invoke(cli, args)
            assert r.exit_code == 0, r.output
        else:
            # the local run in a fresh process too, as a user runs the command: inside the
            # full suite this (long-lived) process once gave paper-bank vectors 1 fp16 ulp
            # apart from the actors' (2026-12-07; not reproduced alone, cause not found)
            p = subprocess.run([sys.executable, "-m", "moduseg.cli", *args],
                               capture_output=True, text=True, timeout=1200)
            assert p.returncode == 0, p.stdout + p.stderr

    for engine in ("local", "ray"):
        run(engine, "bank", "build", "--dataset", "camvid", "--root", camvid, "--limit", 40,
            "--preset", "paper", "--out", tmp_path / f"bank-{engine}.npz")
        run(engine, "segment", frames, "--bank", tmp_path / "bank-local.npz", "--out",
            tmp_path / f"seg-{engine}", "--no-overlay", *cheap)
    assert ((tmp_path / "bank-local.npz").read_bytes()
            == (tmp_path / "bank-ray.npz").read_bytes())
    local = sorted((tmp_path / "seg-local" / "labels").iterdir())
    assert len(local) == 40
    for p in local:
        assert p.read_bytes() == (tmp_path / "seg-ray" / "labels" / p.name).read_bytes(), p.name


def panning_frames(path):
    """A synthetic scene panning 3 px a frame (stored losslessly, as the test's video)."""
    return list(np.load(path)["frames"])


def test_a_video_is_one_ordered_task_on_the_temporal_path(local_ray, data, tmp_path):
    """--engine ray on a video: one actor runs the whole video through the temporal
    path, and the frames come back in order with the local run's labels (vote frames
    too: the bank's configuration asks for one every 3rd frame after a keyframe)."""
    from moduseg.scale.work import VideoTask

    cfg = preset("default").with_overrides(**{"bank.pca_dim": 3, "temporal.vote_every": 3})
    bank_path = save_bank(single_bank(data, cfg), tmp_path / "bank.npz")
    spec = ModelRecipe(bank_path=str(bank_path))
    image, _ = scale_fixtures.scene(3)
    frames = np.stack([np.roll(image, 3 * i, axis=1) for i in range(8)])
    video = tmp_path / "pan.npz"
    np.savez(video, frames=frames)
    task = VideoTask(functools.partial(fake_assemble, spec, "segmenter"), panning_frames)
    got = list(ray_engine.run_ordered(task, str(video), RayOptions(workers=2)))
    want = list(task.setup()(str(video)))
    assert [p for p, _ in got] == list(range(8))
    for (_, g), w in zip(got, want):
        assert np.array_equal(g.label_map, w.label_map)
        assert g.kind == w.kind
    assert got[0][1].keyframe and not all(r.keyframe for _, r in got)   # propagated frames
    assert "vote" in [r.kind for _, r in got], [r.kind for _, r in got]
