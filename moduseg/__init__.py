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

__all__ = [
    "BankConfig", "ModuSegConfig", "RuntimeConfig", "preset", "BankError", "InputError",
    "ModuSegError", "IGNORE", "Backbone", "BackboneIdentity", "Bank", "FeatureMap",
    "GridGeometry", "Proposals", "Proposer", "Segment", "SegmentationResult",
]
