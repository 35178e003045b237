"""Where TensorRT engines are cached, and refusing an engine built elsewhere.

A serialized engine only runs on the TensorRT version and GPU model
(compute capability) it was built for; deserializing it elsewhere fails or
crashes. So the cache name carries the ONNX checksum, TensorRT version,
device name, compute capability, precision and input profile (as
jetson-inference names its ``.engine`` files), and a sidecar JSON states the
same; ``validate`` compares the sidecar with this machine before the bytes
ever reach TensorRT and says which differs and how to rebuild.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import BackendUnavailableError, ModelNotFoundError
from ..io import write_bytes

SIDECAR_SUFFIX = ".json"
ENGINE_SUFFIX = ".engine"
PRECISIONS = ("fp32", "fp16", "int8", "best")


class EngineMismatchError(BackendUnavailableError):
    """A cached engine was built for another TensorRT version or device."""


@dataclass(frozen=True)
class DeviceInfo:
    """The GPU and TensorRT an engine is built for (or that would run it)."""

    name: str
    compute_capability: str  # "8.7"
    trt_version: str  # "10.3.0"
    index: int = 0

    @property
    def sm(self) -> str:
        return "sm" + self.compute_capability.replace(".", "")


@dataclass(frozen=True)
class EngineKey:
    onnx_sha256: str
    trt_version: str
    device_name: str
    compute_capability: str
    precision: str
    profile: str = ""  # e.g. "1x3x364x490" or "min1x3x224x224-opt...-max..."
    dla_core: int | None = None

    @classmethod
    def for_device(cls, onnx_sha256: str, device: DeviceInfo, precision: str,
                   profile: str = "", dla_core: int | None = None) -> "EngineKey":
        return cls(onnx_sha256, device.trt_version, device.name, device.compute_capability,
                   precision, profile, dla_core)

    def filename(self, stem: str) -> str:
        parts = [slug(stem), self.onnx_sha256[:12], "trt" + self.trt_version,
                 slug(self.device_name), "sm" + self.compute_capability.replace(".", ""),
                 self.precision]
        if self.dla_core is not None:
            parts.append(f"dla{self.dla_core}")
        if self.profile:
            parts.append(hashlib.sha256(self.profile.encode()).hexdigest()[:8])
        return ".".join(parts) + ENGINE_SUFFIX


@dataclass
class Sidecar:
    """What an engine file is; written beside it as ``<engine>.json``."""

    key: EngineKey
    onnx_path: str
    inputs: dict = field(default_factory=dict)   # name -> {"min","opt","max"} or shape
    outputs: dict = field(default_factory=dict)  # name -> shape
    build: dict = field(default_factory=dict)    # options, seconds, workspace...
    accuracy: dict = field(default_factory=dict)  # cosine vs ONNX Runtime
    metadata: dict = field(default_factory=dict)  # the ONNX graph's moduseg.* metadata
    created: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["format"] = "moduseg-engine-sidecar/1"
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Sidecar":
        key = EngineKey(**d["key"])
        return cls(key=key, onnx_path=d.get("onnx_path", ""), inputs=d.get("inputs", {}),
                   outputs=d.get("outputs", {}), build=d.get("build", {}),
                   accuracy=d.get("accuracy", {}), metadata=d.get("metadata", {}),
                   created=d.get("created", ""))


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", str(text)).strip("-") or "x"


def graph_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of an ONNX graph and its external weights (``<path>.data``), if any: what
    an engine is keyed by (``io.sha256_file`` hashes one file)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(chunk), b""):
            h.update(b)
    data = Path(str(path) + ".data")  # external weights change the model too
    if data.is_file():
        with open(data, "rb") as f:
            for b in iter(lambda: f.read(chunk), b""):
                h.update(b)
    return h.hexdigest()


def engine_cache_dir(home: str | os.PathLike | None = None) -> Path:
    from ..home import cache_dir

    return cache_dir("engines", home)


def sidecar_path(engine: str | Path) -> Path:
    return Path(str(engine) + SIDECAR_SUFFIX)


def save_engine(engine_bytes: bytes, path: Path, sidecar: Sidecar) -> Path:
    """Engine then sidecar, each atomically (a sidecar never describes a partial engine)."""
    sidecar.created = sidecar.created or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write_bytes(Path(path), bytes(engine_bytes))
    write_bytes(sidecar_path(path), json.dumps(sidecar.to_dict(), indent=1).encode())
    return Path(path)


def read_sidecar(engine: str | Path) -> Sidecar:
    p = sidecar_path(engine)
    if not p.is_file():
        raise EngineMismatchError(
            f"{engine} has no sidecar {p.name}: its TensorRT version and device are unknown, "
            f"so it is not loaded (a mismatched engine can crash the process). Rebuild it "
            f"with 'moduseg export engine MODEL.onnx'")
    try:
        return Sidecar.from_dict(json.loads(p.read_text()))
    except (ValueError, KeyError, TypeError) as e:
        raise EngineMismatchError(f"sidecar {p} is unreadable ({e}); rebuild the engine "
                                  f"with 'moduseg export engine MODEL.onnx'") from None


def mismatches(key: EngineKey, device: DeviceInfo) -> list[str]:
    """Human-readable differences that make an engine unusable on ``device``."""
    out = []
    if key.trt_version != device.trt_version:
        out.append(f"TensorRT {key.trt_version} (this machine has {device.trt_version})")
    if key.compute_capability != device.compute_capability:
        out.append(f"compute capability {key.compute_capability} (this GPU is "
                   f"{device.compute_capability})")
    if key.device_name != device.name:
        out.append(f"device {key.device_name!r} (this GPU is {device.name!r})")
    return out


def validate(engine: str | Path, device: DeviceInfo, strict_device_name: bool = False
             ) -> Sidecar:
    """The engine's sidecar if it may be deserialized here, else ``EngineMismatchError``.

    TensorRT version and compute capability must match exactly; a different
    device *name* with the same compute capability only fails when
    ``strict_device_name`` (TensorRT allows it, performance may differ).
    """
    engine = Path(engine)
    if not engine.is_file():
        raise ModelNotFoundError(f"TensorRT engine {engine} does not exist; build it with "
                                 f"'moduseg export engine MODEL.onnx'")
    side = read_sidecar(engine)
    bad = mismatches(side.key, device)
    if not strict_device_name:
        bad = [b for b in bad if not b.startswith("device ")]
    if bad:
        onnx = side.onnx_path or "MODEL.onnx"
        raise EngineMismatchError(
            f"{engine.name} was built for " + " and ".join(bad) + ". TensorRT engines are "
            f"not portable across TensorRT versions or GPU architectures; rebuild it here "
            f"with 'moduseg export engine {onnx} --precision {side.key.precision}'")
    return side


def find_engine(cache_dir: str | Path, onnx_path: str | Path, device: DeviceInfo,
                precision: str = "fp16", profile: str = "", dla_core: int | None = None,
                onnx_sha256: str | None = None) -> Path | None:
    """The cached engine for this ONNX file, device and precision, if built already."""
    sha = onnx_sha256 or graph_sha256(onnx_path)
    key = EngineKey.for_device(sha, device, precision, profile, dla_core)
    path = Path(cache_dir) / key.filename(Path(onnx_path).stem)
    if path.is_file() and sidecar_path(path).is_file():
        return path
    return None


def cached_engines(cache_dir: str | Path, onnx_path: str | Path, device: DeviceInfo,
                   precision: str = "fp16", onnx_sha256: str | None = None) -> list[Path]:
    """Every cached engine of this graph for this device and precision (any profile),
    newest first."""
    sha = onnx_sha256 or graph_sha256(onnx_path)
    key = EngineKey.for_device(sha, device, precision)
    prefix = key.filename(Path(onnx_path).stem)[:-len(ENGINE_SUFFIX)]
    found = [p for p in Path(cache_dir).glob(prefix + "*" + ENGINE_SUFFIX)
             if sidecar_path(p).is_file()]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def current_device(index: int = 0) -> DeviceInfo:
    """This machine's GPU and TensorRT, or ``BackendUnavailableError`` saying what is missing."""
    try:
        import tensorrt as trt
    except ImportError as e:
        raise BackendUnavailableError(
            f"TensorRT is not installed ({e}); install it with 'pip install tensorrt' "
            f"(x86_64) or use JetPack's python3-libnvinfer on Jetson, or use an ONNX "
            f"Runtime backend (--backend cpu or cuda)") from None
    name, cc = cuda_device_properties(index)
    return DeviceInfo(name=name, compute_capability=cc, trt_version=str(trt.__version__),
                      index=index)


def cuda_device_properties(index: int = 0) -> tuple[str, str]:
    """(device name, "major.minor") through cuda-python's runtime API."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError as e:
        raise BackendUnavailableError(
            f"cuda-python is not installed ({e}); 'pip install cuda-python'") from None
    err, count = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess or not count:
        raise BackendUnavailableError(
            f"needs an NVIDIA GPU and driver: cudaGetDeviceCount returned {err.name} "
            f"({count or 0} devices); use the ONNX Runtime CPU backend here")
    if index >= count:
        raise BackendUnavailableError(f"GPU index {index} does not exist ({count} devices)")
    err, prop = cudart.cudaGetDeviceProperties(index)
    if err != cudart.cudaError_t.cudaSuccess:
        raise BackendUnavailableError(f"cudaGetDeviceProperties({index}) failed: {err.name}")
    raw = prop.name
    name = raw.decode(errors="replace").split("\x00")[0] if isinstance(raw, bytes) else str(raw)
    return name.strip(), f"{prop.major}.{prop.minor}"
