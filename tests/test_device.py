"""``--device`` as users type it (issue 29, item 12): mapped to the backend, or one line
saying what to type instead."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from moduseg.device import BACKENDS, backend_for_device, resolve_backend_option
from moduseg.errors import InputError


@pytest.mark.parametrize("spec, backend", [
    ("cpu", "cpu"), ("CPU", "cpu"), ("cuda", "cuda"), ("gpu", "cuda"), ("cuda:0", "cuda"),
    ("GPU:0", "cuda"), ("0", "cuda"), (" cuda ", "cuda"), ("auto", "auto"),
    ("tensorrt", "tensorrt"), ("tensorrt-native", "tensorrt-native")])
def test_devices_users_type_map_to_a_backend(spec, backend):
    assert backend_for_device(spec) == backend


def test_another_gpu_index_says_how_to_select_it():
    with pytest.raises(InputError) as e:
        backend_for_device("cuda:1")
    assert "CUDA_VISIBLE_DEVICES=1 and --device cuda" in str(e.value)
    with pytest.raises(InputError, match="CUDA_VISIBLE_DEVICES=2"):
        backend_for_device("2")


@pytest.mark.parametrize("spec", ["mps", "rocm", "xpu"])
def test_devices_without_a_backend_say_so(spec):
    with pytest.raises(InputError, match=f"there is no {spec} backend; use --device cpu"):
        backend_for_device(spec)


def test_device_and_backend_together_must_agree():
    assert resolve_backend_option(None, None) == "auto"
    assert resolve_backend_option("cpu", None) == "cpu"
    assert resolve_backend_option(None, "gpu") == "cuda"
    assert resolve_backend_option("cuda", "cuda:0") == "cuda"
    with pytest.raises(InputError, match="--device cpu means --backend cpu, but --backend cuda"):
        resolve_backend_option("cuda", "cpu")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=20))
def test_any_device_string_is_a_backend_or_one_clear_line(spec):
    try:
        assert backend_for_device(spec) in BACKENDS
    except InputError as e:
        assert "\n" not in str(e) and "--device" in str(e)


COMMANDS_WITH_A_BACKEND = [
    ["segment", "x.png"],
    ["eval", "--dataset", "folder", "--root", "r", "--pred", "p"],
    ["bank", "build", "--dataset", "folder", "--root", "r", "--out", "b.npz"],
    ["bank", "add", "b.npz", "--dataset", "pairs", "--root", "r", "--out", "c.npz"],
]


@pytest.mark.parametrize("argv", COMMANDS_WITH_A_BACKEND, ids=lambda a: " ".join(a[:2]))
def test_every_command_with_a_backend_takes_device(argv, tmp_path, monkeypatch):
    """--device is declared with --backend (cli_options.backend_option), so each command
    that has one has the other, and a device it cannot use is one line, exit 2, before
    any work (no output file appears)."""
    from click.testing import CliRunner
    from moduseg.cli import cli

    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    help_text = runner.invoke(cli, [*argv[:2 if argv[0] == "bank" else 1], "--help"],
                              terminal_width=200).output
    assert "--device" in help_text and "--backend" in help_text
    for extra, message in ((["--device", "mps"], "there is no mps backend"),
                           (["--device", "cpu", "--backend", "cuda"],
                            "--device cpu means --backend cpu, but --backend cuda")):
        r = runner.invoke(cli, [*argv, *extra])
        assert r.exit_code == 2, r.output
        assert message in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_the_command_gets_the_backend_the_device_names():
    import click
    from click.testing import CliRunner
    from moduseg.cli_options import backend_option

    @click.command()
    @backend_option(default="cpu")
    def show(backend):
        click.echo(backend)

    assert CliRunner().invoke(show, []).output.strip() == "cpu"
    assert CliRunner().invoke(show, ["--device", "cuda:0"]).output.strip() == "cuda"
    assert CliRunner().invoke(show, ["--backend", "tensorrt"]).output.strip() == "tensorrt"
