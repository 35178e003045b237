"""Tests of ``moduseg.io``."""

from __future__ import annotations
import numpy as np
import pytest
from moduseg.errors import InputError
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from moduseg.io import jpeg_complete, read_image  # noqa: E402
from app_fixtures import _jpeg  # noqa: E402,F401


def test_image_files_above_the_decode_limit_are_refused_from_the_header(tmp_path, monkeypatch):
    import cv2

    from moduseg import io as mio
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((30, 40, 3), np.uint8))
    monkeypatch.setattr(mio, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(InputError, match="megapixels"):
        mio.read_image(tmp_path / "a.png")
    monkeypatch.setattr(mio, "MAX_IMAGE_PIXELS", 1200)
    assert mio.read_image(tmp_path / "a.png").shape == (30, 40, 3)


def test_jpeg_check_skips_an_exif_thumbnail_and_accepts_trailing_bytes(tmp_path):
    data = _jpeg(tmp_path / "a.jpg")
    thumb = _jpeg(tmp_path / "t.jpg", (8, 8))
    payload = b"Exif\0\0" + thumb
    app1 = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    with_thumb = data[:2] + app1 + data[2:]
    (tmp_path / "x.jpg").write_bytes(with_thumb[:len(with_thumb) - 300])
    assert not jpeg_complete(tmp_path / "x.jpg")
    (tmp_path / "y.jpg").write_bytes(with_thumb + b"trailing junk")
    assert jpeg_complete(tmp_path / "y.jpg")
    assert jpeg_complete(tmp_path / "t.jpg")


@settings(max_examples=40, deadline=None)
@given(st.floats(0.0, 0.999))
def test_every_cut_of_a_jpeg_is_caught(fraction):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "a.jpg"
        data = _jpeg(p)
        p.write_bytes(data[:int(len(data) * fraction)])
        with pytest.raises(InputError):
            read_image(p)
        if len(data) * fraction >= 2:                   # the JPEG signature is intact
            assert not jpeg_complete(p)
