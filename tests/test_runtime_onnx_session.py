"""Tests of ``moduseg.runtime.onnx.session``."""

from __future__ import annotations
import pytest


def test_an_unloadable_onnx_file_is_a_model_error(tmp_path):
    pytest.importorskip("onnxruntime")
    from moduseg.errors import ModelNotFoundError
    from moduseg.runtime.onnx_session import make_session
    (tmp_path / "m.onnx").write_bytes(b"\x08\x07" + b"\xff" * 50)
    with pytest.raises(ModelNotFoundError, match="cannot be loaded"):
        make_session(tmp_path / "m.onnx", "cpu")
