"""NVRTC compiles the CUDA kernels for every target GPU without a driver or GPU."""

from __future__ import annotations

import pytest

pytest.importorskip("cuda.bindings.nvrtc")

from moduseg.errors import BackendUnavailableError
from moduseg.runtime.cuda import nvrtc

KERNELS = ("smfa", "topk")
ENTRY_POINTS = {"smfa": (b"smfa_weights", b"smfa_pool_f32", b"smfa_pool_f16"),
                "topk": (b"topk_partial_f32", b"topk_partial_f16", b"topk_merge")}


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cubin-cache")


def test_an_nvrtc_is_found_and_cuda_bindings_comes_first():
    cs = nvrtc.available_compilers()
    assert cs, nvrtc.describe_compilers()
    assert cs[0].origin == "cuda.bindings.nvrtc"
    assert "NVRTC" in nvrtc.describe_compilers()


@pytest.mark.parametrize("arch", nvrtc.TARGET_ARCHS)
@pytest.mark.parametrize("kernel", KERNELS)
def test_compiles_for_every_target(kernel, arch, cache):
    try:
        ck = nvrtc.compile_kernel(kernel, arch, cache_dir=cache)
    except BackendUnavailableError as e:
        # Only acceptable when no installed NVRTC lists the arch, and the error must say so.
        assert not any(arch in c.archs for c in nvrtc.available_compilers())
        assert f"sm_{arch}" in str(e) and "no installed NVRTC" in str(e)
        pytest.skip(f"no installed NVRTC targets sm_{arch}: {e}")
    assert ck.image[:4] == b"\x7fELF"            # a CUBIN
    for name in ENTRY_POINTS[kernel]:
        assert name in ck.image                  # extern "C" symbols, unmangled
    chosen = nvrtc.choose_compiler(arch)
    assert (ck.nvrtc_version, ck.nvrtc_origin) == (chosen.version, chosen.origin)
    assert arch in chosen.archs
    assert ck.cache_path is not None and ck.cache_path.read_bytes() == ck.image
    assert f"sm{arch}-nvrtc{ck.nvrtc_version[0]}.{ck.nvrtc_version[1]}" in ck.cache_path.name


def test_xavier_needs_nvrtc_12_when_13_dropped_it():
    cs = nvrtc.available_compilers()
    if any(c.version[0] >= 13 and 72 in c.archs for c in cs):
        pytest.skip("this NVRTC 13 still lists sm_72")
    if not any(72 in c.archs for c in cs):
        with pytest.raises(BackendUnavailableError, match="nvidia-cuda-nvrtc-cu12"):
            nvrtc.choose_compiler(72)
        return
    assert nvrtc.choose_compiler(72).version[0] < 13


def test_second_compile_comes_from_the_disk_cache(cache):
    first = nvrtc.compile_kernel("topk", 86, cache_dir=cache)
    again = nvrtc.compile_kernel("topk", 86, cache_dir=cache)
    assert again.from_cache and again.image == first.image
    other = nvrtc.compile_kernel("topk", 86, cache_dir=cache, extra_options=("-DMS_VARIANT=1",))
    assert other.cache_path != first.cache_path       # options are part of the key
    assert not other.from_cache


def test_driver_version_limits_the_compiler_choice():
    cs = nvrtc.available_compilers()
    oldest = min(c.version for c in cs)
    c = nvrtc.choose_compiler(86, max_version=oldest)
    assert c.version[0] <= oldest[0]
    with pytest.raises(BackendUnavailableError, match="driver"):
        nvrtc.choose_compiler(86, max_version=(oldest[0] - 1, 0))


def test_unsupported_arch_error_names_it_and_the_compilers():
    with pytest.raises(BackendUnavailableError) as e:
        nvrtc.choose_compiler(35)
    msg = str(e.value)
    assert "sm_35" in msg and "NVRTC" in msg


def test_compile_errors_carry_the_log(tmp_path, monkeypatch):
    bad = tmp_path / "broken.cu"
    bad.write_text('extern "C" __global__ void k() { undefined_thing(); }\n')
    monkeypatch.setattr(nvrtc, "KERNEL_DIR", tmp_path)
    with pytest.raises(BackendUnavailableError, match="undefined_thing"):
        nvrtc.compile_kernel("broken", 86, cache_dir=tmp_path)


def test_compile_command_reports_the_nvrtc_used(tmp_path):
    from click.testing import CliRunner

    from moduseg.runtime.cuda.cli import cuda

    r = CliRunner().invoke(cuda, ["compile", "--arch", "sm_86", "--cache-dir", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "smfa.cu sm_86" in r.output and "topk.cu sm_86" in r.output and "NVRTC" in r.output
    assert len(list(tmp_path.glob("*.cubin"))) == 2
    r = CliRunner().invoke(cuda, ["info"])
    assert r.exit_code == 0 and "sm_72" in r.output and "gpu:" in r.output


@pytest.mark.parametrize("kernel", KERNELS)
def test_kernels_do_not_spill_registers_on_orin(kernel):
    c = nvrtc.choose_compiler(87)
    opts = [o.encode() for o in nvrtc.BASE_OPTIONS] + [b"--gpu-architecture=sm_87",
                                                       b"--ptxas-options=-v"]
    err, _, log = c.compile(nvrtc.kernel_source(kernel), f"{kernel}.cu", opts)
    assert err == 0, log
    spills = [line for line in log.splitlines() if "spill" in line]
    assert len(spills) == len(ENTRY_POINTS[kernel])
    assert all("0 bytes spill stores, 0 bytes spill loads" in line for line in spills), log


def test_library_search_finds_each_nvrtc_once(tmp_path, monkeypatch):
    lib = tmp_path / "nvidia" / "cuda_nvrtc" / "lib"
    lib.mkdir(parents=True)
    for name in ("libnvrtc.so.11.2", "libnvrtc-builtins.so.11.4", "libnvrtc.alt.so.12"):
        (lib / name).write_bytes(b"")
    (lib / "libnvrtc.so.11").symlink_to(lib / "libnvrtc.so.11.2")
    monkeypatch.setattr(nvrtc.sys, "path", [str(tmp_path)])
    ours = [p for p in nvrtc._library_candidates() if p.startswith(str(tmp_path))]
    assert len(ours) == 1 and ours[0].endswith(("libnvrtc.so.11", "libnvrtc.so.11.2"))
