"""``--engine ray`` with resources the cluster cannot give (issue 29 item 5).

On today's main ``--num-gpus-per-worker 1`` without a GPU, ``--cpus-per-worker
64`` on two CPUs and ``--ray-address 127.0.0.1:1`` wait forever, and NaN
resource values are a traceback. Each is one line, exit 2, within seconds.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from moduseg.cli import cli
from moduseg.errors import InputError
from moduseg.scale.ray_engine import RayOptions, check_fits, probe_address

ROOT = Path(__file__).resolve().parents[1]
TWO_CPUS = [{"CPU": 2.0, "memory": 1e9}]


# -- the options and the fit, without a cluster ----------------------------------------------

@pytest.mark.parametrize("kw", [
    {"cpus_per_worker": math.nan}, {"cpus_per_worker": math.inf}, {"cpus_per_worker": -1.0},
    {"cpus_per_worker": 0.0}, {"gpus_per_worker": math.nan}, {"gpus_per_worker": math.inf},
    {"gpus_per_worker": -0.5}, {"workers": 0}, {"workers": 10**9},
])
def test_resource_values_that_are_not_numbers_or_out_of_range(kw):
    with pytest.raises(InputError) as e:
        RayOptions(**kw).check()
    assert "\n" not in str(e.value) and "--" in str(e.value)


@pytest.mark.parametrize("opts, cpus, nodes, words", [
    (RayOptions(gpus_per_worker=1.0), 1.0, TWO_CPUS, ["has no GPU", "--num-gpus-per-worker 0"]),
    (RayOptions(cpus_per_worker=64.0), 64.0, TWO_CPUS, ["--cpus-per-worker 64", "at most 2"]),
    (RayOptions(workers=2, cpus_per_worker=1.0), 1.0, TWO_CPUS, ["does not fit", "fewer"]),
    (RayOptions(workers=64), 0.1, TWO_CPUS, ["--workers 64", "does not fit"]),
    (RayOptions(gpus_per_worker=2.0), 1.0, [{"CPU": 8.0, "GPU": 1.0}] * 2,
     ["no node", "at most 1"]),
    (RayOptions(workers=3, gpus_per_worker=1.0), 1.0, [{"CPU": 8.0, "GPU": 1.0}] * 2,
     ["does not fit", "GPUs"]),
])
def test_pools_the_cluster_can_never_run_are_refused(opts, cpus, nodes, words):
    with pytest.raises(InputError) as e:
        check_fits(opts, cpus, nodes)
    for w in words:
        assert w in str(e.value), str(e.value)


@pytest.mark.parametrize("opts, cpus, nodes", [
    (RayOptions(workers=2), 0.75, TWO_CPUS),                        # the default share
    (RayOptions(workers=2, gpus_per_worker=0.5), 1.0, [{"CPU": 4.0, "GPU": 1.0}]),
    (RayOptions(workers=4, cpus_per_worker=2.0), 2.0, [{"CPU": 4.0}, {"CPU": 5.0}]),
])
def test_pools_that_fit_pass(opts, cpus, nodes):
    check_fits(opts, cpus, nodes)


def test_an_address_nothing_listens_on_fails_in_seconds():
    t0 = time.monotonic()
    with pytest.raises(InputError, match="127.0.0.1:1: nothing answers there"):
        probe_address("127.0.0.1:1", 5.0)
    assert time.monotonic() - t0 < 6
    for bad in ("nonsense", "host:port", ":6379"):
        with pytest.raises(InputError, match="HOST:PORT"):
            probe_address(bad, 1.0)
    probe_address(None, 1.0)
    probe_address("auto", 1.0)


# -- the commands, on a real local Ray instance --------------------------------------------

ray = pytest.importorskip("ray", reason="the [ray] extra is not installed")


@pytest.fixture
def fake_models(monkeypatch):
    import moduseg.bank.segmenter as recipes
    from scale_fixtures import fake_assemble
    monkeypatch.setattr(recipes, "build_for", fake_assemble)


@pytest.fixture
def data(tmp_path):
    from scale_fixtures import write_folder_dataset
    return write_folder_dataset(tmp_path / "ds", n=2)


def _bank_cli(data, out, *extra):
    from scale_fixtures import bank_args
    return CliRunner().invoke(cli, bank_args(data, out, "--engine", "ray", *extra))


@pytest.fixture(scope="module")
def local_ray():
    """One local two-CPU instance for the module (the commands join it)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _one_line_exit_2(r, *words):
    """Exit 2 and one error line (status lines such as 'writing to' may precede it)."""
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    errors = [ln for ln in r.output.splitlines() if "Error" in ln]
    assert len(errors) == 1 and "Traceback" not in r.output, r.output
    line = errors[0][errors[0].index("Error: "):]
    for w in words:
        assert w in line, line


@pytest.mark.parametrize("extra", [["--cpus-per-worker", "nan"], ["--num-gpus-per-worker", "nan"],
                                   ["--cpus-per-worker", "inf"]])
def test_nan_resources_on_the_command_line(tmp_path, data, fake_models, extra):
    r = _bank_cli(data, tmp_path / "b.npz", *extra)
    _one_line_exit_2(r, extra[0])
    assert not (tmp_path / "b.npz").exists()


@pytest.mark.slow
def test_unreachable_ray_address_is_one_line_in_seconds(tmp_path, data, fake_models):
    t0 = time.monotonic()
    r = _bank_cli(data, tmp_path / "b.npz", "--ray-address", "127.0.0.1:1")
    _one_line_exit_2(r, "--ray-address 127.0.0.1:1")
    assert time.monotonic() - t0 < 30
    assert not (tmp_path / "b.npz").exists()


@pytest.mark.slow
@pytest.mark.parametrize("extra, words", [
    (["--num-gpus-per-worker", "1"], ["has no GPU"]),
    (["--cpus-per-worker", "64"], ["--cpus-per-worker 64", "at most"]),
])
def test_unschedulable_workers_on_a_local_instance(local_ray, tmp_path, data, fake_models, extra,
                                                   words):
    t0 = time.monotonic()
    r = _bank_cli(data, tmp_path / "b.npz", *extra)
    _one_line_exit_2(r, *words)
    assert time.monotonic() - t0 < 120
    assert not (tmp_path / "b.npz").exists()


@pytest.mark.slow
def test_segment_with_unschedulable_workers(local_ray, tmp_path, data, fake_models):
    from scale_fixtures import bank_args
    r = CliRunner().invoke(cli, bank_args(data, tmp_path / "b.npz"))
    assert r.exit_code == 0, r.output
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["segment", str(data["images"]), "--bank", str(tmp_path / "b.npz"),
                                 "--out", str(out), "--engine", "ray",
                                 "--num-gpus-per-worker", "1"])
    _one_line_exit_2(r, "has no GPU")
    assert not out.exists() or not any(p.name in ("labels", "segments.json")
                                       for p in out.iterdir())


@pytest.mark.slow
def test_resources_taken_by_another_job_bound_the_wait(local_ray):
    """Fits the cluster on paper, but another job holds the CPUs: one line after
    ``schedule_timeout_s``, not an endless wait."""
    from moduseg.scale import ray_engine
    from moduseg.scale.work import SegmentTask
    from ray.util.placement_group import placement_group, remove_placement_group
    hog = placement_group([{"CPU": 2.0}])
    ray.get(hog.ready(), timeout=60)
    try:
        opts = RayOptions(workers=1, cpus_per_worker=1.0, schedule_timeout_s=3.0)
        t0 = time.monotonic()
        with pytest.raises(InputError, match="could not start 1 worker"):
            list(ray_engine.run(SegmentTask(lambda: None), ["x"], opts))
        assert time.monotonic() - t0 < 30
    finally:
        remove_placement_group(hog)
