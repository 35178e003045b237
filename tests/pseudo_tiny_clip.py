"""A tiny random CLIP built with open_clip's own model code (no weights needed).

Shared by the CLIP export and pseudo-mask tests: 2 image blocks of width 32,
patch 8 at 32 px, 1 text block, 16-d joint embedding. Exports in well under
a second.
"""

from __future__ import annotations

import json
from pathlib import Path

TINY_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8,
                   "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2,
                 "layers": 1},
}

VOC = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
       "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
       "sheep", "sofa", "train", "tvmonitor"]


def tiny_clip(seed: int = 0):
    import torch
    from open_clip.model import CLIP

    torch.manual_seed(seed)
    return CLIP(**TINY_CFG).eval()


def write_tiny_config(path: Path) -> Path:
    path.write_text(json.dumps(TINY_CFG))
    return path


def export_tiny(out_dir: Path, crop: int = 48, seed: int = 0, **options):
    """Export the tiny CLIP; returns (torch model, ClipExport)."""
    from moduseg.export.clip import DenseClipOptions, export_clip_model

    model = tiny_clip(seed)
    meta = export_clip_model(model, out_dir, DenseClipOptions(crop=crop, **options),
                             model_name="tiny-clip", pretrained="none")
    return model, meta


class HalvesProposer:
    """Two confident proposals (left and right image halves) and one weak one."""

    name = "halves"

    def __call__(self, image):
        import numpy as np

        from moduseg.types import Proposals

        H, W = image.shape[:2]
        m = np.zeros((3, H, W), bool)
        m[0, :, : W // 2] = True
        m[1, :, W // 2:] = True
        m[2, : H // 2] = True
        return Proposals(m, np.array([0.9, 0.9, 0.2], np.float32), (H, W))


def halves_proposer():
    return HalvesProposer()
