"""Test helpers shared by several test modules."""

from __future__ import annotations
import pytest
from moduseg.bank.builder import build_bank
from moduseg.config import BankConfig
from synthetic import ColourBackbone, dataset


@pytest.fixture(scope="module")
def patch_bank():
    cfg = BankConfig(granularity="patch", purification="none", min_area=0,
                     outlier_fraction=0, patch_purity=1.0, patches_per_region=6)
    return build_bank(dataset(4), ColourBackbone(), cfg)


def _write_png(path, arr, mode=None, fmt="PNG"):
    from PIL import Image
    Image.fromarray(arr, mode=mode).save(path, format=fmt)


def _run(args):
    from click.testing import CliRunner

    from moduseg.cli import cli
    return CliRunner().invoke(cli, args)


@pytest.fixture
def fake_home(tmp_path):
    pytest.importorskip("onnx")
    from test_models import _pull, _raw_folder
    home = tmp_path / "home"
    _pull(home, _raw_folder(tmp_path / "src"))
    return home
