"""A tiny random CLIP built with open_clip's own model code (no weights needed).

Shared by the CLIP export and pseudo-mask tests: 2 image blocks of width 32,
patch 8 at 32 px, 1 text block, 16-d joint embedding. Exports in well under
a second.
"""

from __future__ import annotations

import json
from pathlib import Path

TINY_CFG = dict(
    embed_dim=16,
    vision_cfg=dict(image_size=32, layers=2, width=32, patch_size=8, head_width=16),
    text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=1),
)

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
