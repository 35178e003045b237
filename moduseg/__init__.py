"""ModuSeg: segmentation split into *where* (class-agnostic proposals) and
*what* (retrieval against a bank of prototype features).

Heavy modules load lazily; ``import moduseg`` needs neither torch, tensorrt
nor a GPU.
"""

from .config import BankConfig, ModuSegConfig, RuntimeConfig, preset
from .errors import BankError, InputError, ModuSegError
from .types import (IGNORE, Backbone, BackboneIdentity, Bank, FeatureMap, GridGeometry,
                    Proposals, Proposer, Segment, SegmentationResult)

__version__ = "0.1.0"


def load_segmenter(bank: str | None = None, preset: str | None = None, home: str | None = None,
                   backend: str = "auto", proposer: str | None = None, offline: bool = False,
                   **overrides):
    """The default models with a bank (default: the preset's embedded one): ``load_segmenter()(rgb)``.

    Missing default models are fetched first (unless ``offline``).
    ``overrides`` are settings such as ``{"runtime.top_k": 10}`` passed as
    keyword arguments with dots replaced by ``__`` (``runtime__top_k=10``).
    ``backend``: cpu, cuda, tensorrt, tensorrt-native or auto; ``proposer``:
    sam or entityseg (default: the bank's). Built by ``moduseg.build``.
    """
    from .bank.embedded import resolve_bank
    from .bank.segmenter import segmenter_from_bank
    from .models import ensure_models

    sets = {k.replace("__", "."): v for k, v in overrides.items()}
    bank = resolve_bank(bank, preset)
    ensure_models(home, offline=offline)
    return segmenter_from_bank(bank, home, preset, sets, backend=backend, proposer=proposer)


def load_video_segmenter(bank: str | None = None, preset: str | None = None,
                         temporal: bool = True, **kwargs):
    """``load_segmenter`` wrapped in the temporal path, for the frames of one video or
    stream in order: ``vs = load_video_segmenter(); for rgb in frames: vs(rgb)``;
    ``vs.reset()`` before another stream. ``temporal=False`` gives the per-frame
    results unchanged. Other arguments as ``load_segmenter``.
    """
    from .temporal import TemporalConfig, TemporalSegmenter
    seg = load_segmenter(bank, preset, **kwargs)
    return TemporalSegmenter(seg, TemporalConfig.from_config(seg, enabled=bool(temporal)))


def segment_video(frames, segmenter=None, temporal: bool = True):
    """Iterate over the results of RGB ``frames`` (any iterable: a list, a generator
    reading a camera) with the temporal path; ``segmenter`` defaults to
    ``load_segmenter()``."""
    from .temporal import TemporalConfig, segment_stream
    seg = segmenter if segmenter is not None else load_segmenter()
    return segment_stream(seg, frames, TemporalConfig.from_config(seg, enabled=bool(temporal)))


def __getattr__(name):
    if name == "Segmenter":
        from .runtime.pipeline import Segmenter
        return Segmenter
    if name in ("TemporalSegmenter", "TemporalConfig", "TemporalResult"):
        from . import temporal
        return getattr(temporal, name)
    raise AttributeError(f"module 'moduseg' has no attribute {name!r}")

__all__ = [
    "BankConfig", "ModuSegConfig", "RuntimeConfig", "preset", "BankError", "InputError",
    "ModuSegError", "IGNORE", "Backbone", "BackboneIdentity", "Bank", "FeatureMap",
    "GridGeometry", "Proposals", "Proposer", "Segment", "SegmentationResult",
    "Segmenter", "load_segmenter", "load_video_segmenter", "segment_video",
    "TemporalSegmenter", "TemporalConfig", "TemporalResult",
]
