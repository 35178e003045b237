"""The temporal path for videos, cameras and streams (issue 25).

``TemporalSegmenter(segmenter, TemporalConfig())(rgb) -> TemporalResult``
with ``reset()``; ``segment_stream(segmenter, frames)`` is the iterator form.
Pure functions per concern: ``flow`` (DIS and warps), ``keyframes`` (the
choice), ``memory`` (per-pixel class scores), ``tracks`` (track ids),
``consistency`` (the TC metric).
"""

from ..config import TemporalOptions
from .segmenter import (MODES, TemporalConfig, TemporalResult, TemporalSegmenter,
                        TemporalState, keyframe_summary, segment_stream)

__all__ = ["TemporalOptions", "MODES", "TemporalConfig", "TemporalResult", "TemporalSegmenter",
           "TemporalState", "keyframe_summary", "segment_stream"]
