"""Numerical parity between two runs of one backbone (PyTorch, ONNX Runtime, TensorRT).

The measure is per-patch cosine similarity: bank retrieval compares patch
vectors by cosine, so this is the error that matters downstream. Min and
mean are reported; an export fails when the minimum is below the threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import InputError, ModuSegError

DEFAULT_THRESHOLD = 0.999


class ParityError(ModuSegError):
    """Two runs of the same backbone disagree beyond the threshold."""


@dataclass(frozen=True)
class CosineStats:
    min: float
    mean: float
    patches: int

    def __str__(self) -> str:
        return (f"min {self.min:.7f} mean {self.mean:.7f} (1 - min = {1 - self.min:.2e}) "
                f"over {self.patches} patches")


def patch_cosine(a: np.ndarray, b: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Cosine over the channel axis of two ``[B, D, h, w]`` maps -> ``[B, h, w]``."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 4:
        raise InputError(
            f"parity needs two [B, D, h, w] feature maps of one shape, got {a.shape} and "
            f"{b.shape}; the exported graph's output does not match the reference")
    dot = (a * b).sum(1)
    na = np.sqrt((a * a).sum(1))
    nb = np.sqrt((b * b).sum(1))
    return dot / np.maximum(na * nb, eps)


def cosine_stats(a: np.ndarray, b: np.ndarray) -> CosineStats:
    cos = patch_cosine(a, b)
    if not np.isfinite(cos).all():
        return CosineStats(float("nan"), float("nan"), int(cos.size))
    return CosineStats(float(cos.min()), float(cos.mean()), int(cos.size))


@dataclass
class ParityReport:
    """Cosine statistics per named input, judged against one threshold."""

    reference: str
    candidate: str
    cases: dict[str, CosineStats]
    threshold: float = DEFAULT_THRESHOLD

    @property
    def min(self) -> float:
        return min(c.min for c in self.cases.values())

    @property
    def mean(self) -> float:
        total = sum(c.mean * c.patches for c in self.cases.values())
        return total / max(1, sum(c.patches for c in self.cases.values()))

    @property
    def ok(self) -> bool:
        return all(np.isfinite(c.min) and c.min >= self.threshold for c in self.cases.values())

    def lines(self) -> list[str]:
        out = [f"parity {self.candidate} vs {self.reference} (per-patch cosine, "
               f"threshold {self.threshold}):"]
        for name, c in self.cases.items():
            flag = "ok" if np.isfinite(c.min) and c.min >= self.threshold else "FAIL"
            out.append(f"  {name}: {c} [{flag}]")
        return out

    def to_dict(self) -> dict:
        return {"reference": self.reference, "candidate": self.candidate,
                "threshold": self.threshold, "ok": self.ok,
                "min": self.min, "mean": self.mean,
                "cases": {k: {"min": v.min, "mean": v.mean, "patches": v.patches}
                          for k, v in self.cases.items()}}

    def raise_if_failed(self, hint: str = "") -> None:
        if not self.ok:
            raise ParityError(
                f"{self.candidate} disagrees with {self.reference}: minimum per-patch cosine "
                f"{self.min:.6f} < {self.threshold} (mean {self.mean:.6f}). "
                + (hint or "Do not use this model; re-export it and check the opset "
                           "and precision"))


# a network as a function of its one input (a torch module or a graph's first output)
ArrayFunction = Callable[[np.ndarray], np.ndarray]


def compare(reference: ArrayFunction, candidate: ArrayFunction, inputs: Sequence[tuple[str, np.ndarray]],
            reference_name: str = "reference", candidate_name: str = "candidate",
            threshold: float = DEFAULT_THRESHOLD) -> ParityReport:
    """Run both on each input ``[1, 3, H, W]`` float32 and collect cosine stats."""
    cases = {name: cosine_stats(reference(x), candidate(x)) for name, x in inputs}
    return ParityReport(reference_name, candidate_name, cases, threshold)


def load_image_input(path: str | Path, resolution: tuple[int, int]) -> np.ndarray:
    """An image file -> ``[1, 3, H, W]`` RGB float32 in [0, 1] at the export resolution."""
    import cv2

    from ..io import read_image
    from ..text import printable

    path = Path(path)
    try:
        img = read_image(path)
    except InputError:
        raise InputError(f"--image {printable(path)} is not a readable image file "
                         f"(png/jpg)") from None
    h, w = resolution
    img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(img.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0


def parity_inputs(resolution: tuple[int, int], images: Sequence[str | Path] = (),
                  n_random: int = 1, batch: int = 1, seed: int = 0
                  ) -> list[tuple[str, np.ndarray]]:
    """Random [0, 1] noise (seeded) plus real images resized to the resolution."""
    rng = np.random.default_rng(seed)
    h, w = resolution
    out = [(f"random{i}", rng.random((batch, 3, h, w), dtype=np.float32))
           for i in range(n_random)]
    for p in images:
        x = load_image_input(p, resolution)
        out.append((Path(p).name, np.repeat(x, batch, axis=0) if batch > 1 else x))
    return out


def onnx_runner(path: str | Path, providers: str = "cpu", threads: int | None = None
                ) -> ArrayFunction:
    """A function running the first input -> first output of an ONNX graph."""
    from ..runtime.runners import OrtRunner

    runner = OrtRunner(path, providers=providers, threads=threads)
    name, out = runner.inputs[0].name, runner.outputs[0].name

    def run(x: np.ndarray) -> np.ndarray:
        return runner.run({name: np.ascontiguousarray(x, dtype=np.float32)}, [out])[out]

    return run


def torch_runner(module) -> ArrayFunction:
    import torch

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(np.ascontiguousarray(x))).float().numpy()

    return run
