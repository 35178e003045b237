"""Tests of ``moduseg.io`` (moved here from test_reliability.py)."""

from __future__ import annotations
import numpy as np
import pytest
from moduseg.errors import InputError


def test_image_files_above_the_decode_limit_are_refused_from_the_header(tmp_path, monkeypatch):
    import cv2

    from moduseg import io as mio
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((30, 40, 3), np.uint8))
    monkeypatch.setattr(mio, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(InputError, match="megapixels"):
        mio.read_image(tmp_path / "a.png")
    monkeypatch.setattr(mio, "MAX_IMAGE_PIXELS", 1200)
    assert mio.read_image(tmp_path / "a.png").shape == (30, 40, 3)
