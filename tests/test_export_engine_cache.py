"""Engine cache naming and validation with fake devices (no GPU, no tensorrt)."""

import json

import pytest

from moduseg.errors import BackendUnavailableError, ModelNotFoundError
from moduseg.runtime.engine_cache import (DeviceInfo, EngineKey, EngineMismatchError, Sidecar,
                                        current_device, find_engine, read_sidecar, save_engine,
                                        graph_sha256, sidecar_path, validate)

ORIN = DeviceInfo("Orin", "8.7", "10.3.0")
ORIN_NX = DeviceInfo("Orin NX", "8.7", "10.3.0")
A100 = DeviceInfo("NVIDIA A100-SXM4-40GB", "8.0", "10.3.0")
ORIN_OLD_TRT = DeviceInfo("Orin", "8.7", "8.6.2")
SHA = "ab" * 32


def test_filename_carries_every_key_part():
    k = EngineKey.for_device(SHA, A100, "fp16", profile="1x3x364x490")
    name = k.filename("dinov2 s14")
    assert name.startswith("dinov2-s14." + SHA[:12] + ".trt10.3.0.NVIDIA-A100-SXM4-40GB.sm80.fp16.")
    assert name.endswith(".engine")
    others = {EngineKey.for_device(SHA, A100, "fp32", "1x3x364x490").filename("m"),
              EngineKey.for_device(SHA, A100, "fp16", "1x3x224x224").filename("m"),
              EngineKey.for_device(SHA, ORIN, "fp16", "1x3x364x490").filename("m"),
              EngineKey.for_device(SHA, ORIN_OLD_TRT, "fp16", "1x3x364x490").filename("m"),
              EngineKey.for_device("cd" * 32, A100, "fp16", "1x3x364x490").filename("m"),
              EngineKey.for_device(SHA, ORIN, "fp16", "1x3x364x490", dla_core=0).filename("m"),
              EngineKey.for_device(SHA, A100, "fp16", "1x3x364x490").filename("m")}
    assert len(others) == 7
    assert ".dla0." in EngineKey.for_device(SHA, ORIN, "int8", dla_core=0).filename("m")


def _saved(tmp_path, device=ORIN, precision="fp16"):
    key = EngineKey.for_device(SHA, device, precision, "1x3x224x224")
    path = tmp_path / key.filename("m")
    side = Sidecar(key, "/models/m.onnx", inputs={"image": [1, 3, 224, 224]},
                   outputs={"features": [1, 384, 16, 16]}, accuracy={"min": 0.9995})
    save_engine(b"\x00engine-bytes", path, side)
    return path


def test_save_read_round_trip(tmp_path):
    path = _saved(tmp_path)
    assert path.read_bytes() == b"\x00engine-bytes"
    d = json.loads(sidecar_path(path).read_text())
    assert d["format"].startswith("moduseg-engine-sidecar") and d["created"]
    side = read_sidecar(path)
    assert side.key.trt_version == "10.3.0" and side.outputs["features"] == [1, 384, 16, 16]
    assert not list(tmp_path.glob("*.tmp"))


def test_validate_accepts_same_device_and_same_architecture(tmp_path):
    path = _saved(tmp_path)
    assert validate(path, ORIN).key.precision == "fp16"
    assert validate(path, ORIN_NX).key.device_name == "Orin"  # same sm87
    with pytest.raises(EngineMismatchError, match="device 'Orin'"):
        validate(path, ORIN_NX, strict_device_name=True)


def test_validate_refuses_other_trt_or_gpu_with_a_fix(tmp_path):
    path = _saved(tmp_path)
    with pytest.raises(EngineMismatchError) as e:
        validate(path, ORIN_OLD_TRT)
    msg = str(e.value)
    assert "TensorRT 10.3.0 (this machine has 8.6.2)" in msg
    assert "moduseg export engine /models/m.onnx --precision fp16" in msg
    with pytest.raises(EngineMismatchError, match=r"compute capability 8.7 \(this GPU is 8.0\)"):
        validate(path, A100)
    assert isinstance(e.value, BackendUnavailableError)


def test_missing_engine_or_sidecar(tmp_path):
    with pytest.raises(ModelNotFoundError, match="moduseg export engine"):
        validate(tmp_path / "none.engine", ORIN)
    path = _saved(tmp_path)
    sidecar_path(path).unlink()
    with pytest.raises(EngineMismatchError, match="no sidecar"):
        validate(path, ORIN)
    sidecar_path(path).write_text("{not json")
    with pytest.raises(EngineMismatchError, match="unreadable"):
        validate(path, ORIN)


def test_find_engine_by_onnx_checksum(tmp_path):
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"graph")
    sha = graph_sha256(onnx_file)
    assert find_engine(tmp_path, onnx_file, ORIN, "fp16", "p") is None
    key = EngineKey.for_device(sha, ORIN, "fp16", "p")
    save_engine(b"e", tmp_path / key.filename("m"), Sidecar(key, str(onnx_file)))
    assert find_engine(tmp_path, onnx_file, ORIN, "fp16", "p") == tmp_path / key.filename("m")
    assert find_engine(tmp_path, onnx_file, ORIN, "fp32", "p") is None
    assert find_engine(tmp_path, onnx_file, ORIN_OLD_TRT, "fp16", "p") is None
    onnx_file.write_bytes(b"graph v2")  # re-exported: the old engine no longer matches
    assert find_engine(tmp_path, onnx_file, ORIN, "fp16", "p") is None


def test_current_device_without_tensorrt_or_gpu():
    try:
        import tensorrt  # noqa: F401
        has_trt = True
    except ImportError:
        has_trt = False
    if has_trt:
        pytest.skip("tensorrt is installed; this checks the message when it is not")
    with pytest.raises(BackendUnavailableError, match="TensorRT is not installed"):
        current_device()
