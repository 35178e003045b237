import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
# the repository root, for ``benchmarks`` (research studies, not part of the wheel); appended
# so that ``moduseg`` still resolves as before (PYTHONPATH or the editable install)
sys.path.append(str(Path(__file__).resolve().parents[1]))

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"real data not found at {DATA} (needs ../shared/data beside the checkout)")
    return DATA


@pytest.fixture(scope="session")
def rtsp_python() -> str:
    """A Python with GStreamer's RTSP server, for tests/rtsp_server.py (else a skip)."""
    from rtsp_fixture import system_python_with_rtsp

    py, why = system_python_with_rtsp()
    if py is None:
        pytest.skip(why)
    return py


def pytest_collection_modifyitems(config, items):
    """The fast tier (``pytest -m "not slow"``) leaves out every test that loads the real
    default models or reads ../shared/data: those are slow by definition here."""
    for item in items:
        if item.get_closest_marker("models") or item.get_closest_marker("realdata"):
            item.add_marker(pytest.mark.slow)


def pytest_addoption(parser):
    parser.addoption(
        "--serve-env", default=None, metavar="VENV",
        help="environment with moduseg[serve] (numpy < 2, nvidia-pytriton) that runs the "
             "Triton server of tests/test_serve.py; default: this interpreter's, if it has it, "
             "else .venv-serve at the checkout's root")
