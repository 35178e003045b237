"""NVRTC compiles the CUDA kernels for every target GPU, without a driver or GPU.

The cases live in ``cuda_compile_cases.py`` and run in a child pytest: after
NVRTC libraries of two CUDA major versions were loaded into the main test
process, later ``torch.save`` files in that process came out unreadable
(``torch.load(weights_only=True)`` failed in the checkpoint tests), so the
compile tests keep those libraries out of it.
"""

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_nvrtc_compile_cases_in_a_child_process():
    pytest.importorskip("cuda.bindings.nvrtc")
    cases = Path(__file__).with_name("cuda_compile_cases.py")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        str(cases)], capture_output=True, text=True, timeout=900,
                       cwd=cases.parent.parent)
    tail = "\n".join((r.stdout + r.stderr).splitlines()[-40:])
    assert r.returncode == 0, tail
    assert " passed" in tail and "failed" not in tail, tail
    print(tail.splitlines()[-1])
