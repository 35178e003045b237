"""An exported CLIP on disk: ``clip.json`` plus the two ONNX towers.

``moduseg export clip`` writes the folder; this reads and checks it so every
later error names the file and the fix instead of failing inside ORT.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ...errors import InputError, ModelNotFoundError

META_NAME = "clip.json"
SUPPORTED_FORMAT = 1


@dataclass(frozen=True)
class ClipModel:
    """Paths and facts of an exported CLIP (see ``moduseg.export.clip``)."""

    root: Path
    image_onnx: Path
    text_onnx: Path
    crop: int
    patch: int
    embed_dim: int
    logit_scale: float
    context_length: int
    attention: str
    name: str
    pretrained: str
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)

    @property
    def grid(self) -> int:
        return self.crop // self.patch

    def text_sha256(self) -> str:
        """Checksum of the text tower as it is on disk now (keys the embedding cache)."""
        return _sha256(str(self.text_onnx), self.text_onnx.stat().st_mtime_ns)


@lru_cache(maxsize=8)
def _sha256(path: str, _mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_clip_model(root: str | Path) -> ClipModel:
    """Read ``<root>/clip.json`` and check that both ONNX files are there."""
    root = Path(root)
    meta_path = root / META_NAME
    if not meta_path.is_file():
        raise ModelNotFoundError(
            f"{meta_path} does not exist; export CLIP first: moduseg export clip --model "
            f"ViT-B-16 --pretrained <tag or checkpoint> --out {root}")
    try:
        meta = json.loads(meta_path.read_text())
        fmt = int(meta.get("format_version", 0))
        tok = meta["tokenizer"]
        model = ClipModel(
            root=root, image_onnx=root / meta["image_onnx"], text_onnx=root / meta["text_onnx"],
            crop=int(meta["crop"]), patch=int(meta["patch"]), embed_dim=int(meta["embed_dim"]),
            logit_scale=float(meta["logit_scale"]), context_length=int(tok["context_length"]),
            attention=str(meta.get("attention", "?")), name=str(meta.get("model", "?")),
            pretrained=str(meta.get("pretrained", "?")),
            mean=tuple(float(v) for v in meta.get("mean", ClipModel.mean)))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise InputError(f"{meta_path} is not a valid CLIP export description ({e}); "
                         f"re-run moduseg export clip") from None
    if fmt != SUPPORTED_FORMAT:
        raise InputError(f"{meta_path} has format version {fmt}; this moduseg reads "
                         f"{SUPPORTED_FORMAT}; re-run moduseg export clip")
    if tok.get("kind") != "clip-bpe":
        raise InputError(f"{meta_path}: tokenizer {tok.get('kind')!r} is not supported "
                         f"(only the CLIP BPE tokenizer)")
    for p in (model.image_onnx, model.text_onnx):
        if not p.is_file():
            raise ModelNotFoundError(f"{p} is missing; re-run moduseg export clip --out {root}")
    return model
