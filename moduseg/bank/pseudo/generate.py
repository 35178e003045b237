"""Images + image-level labels -> a folder of pseudo label-map PNGs.

Output layout (what ``moduseg bank build --dataset folder`` and
``moduseg eval --pred`` read): ``<out>/<image stem>.png`` (mode P, VOC
palette, class indices, 255 = ignore), ``<out>/classes.txt`` (the class
names, one per line) and ``<out>/pseudo.json`` (settings and counts).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ...errors import InputError
from ...io import IMAGE_SUFFIXES, read_image, write_json, write_label_png
from ...types import IGNORE, Proposer
from .correction import correct_with_proposals
from .dense import DenseClipSegmenter, SlidingWindow
from .filtering import filtered_argmax
from .labels import ImageLabels, presence_vector, write_class_names
from .model import load_clip_model
from .text import BACKGROUND_WORDS, OnnxTextEncoder, build_vocabulary, cached_query_embeddings


@dataclass
class PseudoMask:
    """One image's pseudo label map and how it was made."""

    label_map: np.ndarray      # H x W uint8
    confidence: np.ndarray     # H x W float32 softmax probability of the chosen class
    allowed: list[str]         # classes that could be predicted
    corrected_pixels: int = 0  # pixels the proposal correction changed


class PseudoMaskGenerator:
    """Dense CLIP logits -> label filtering -> argmax -> optional proposal correction."""

    def __init__(self, segmenter: DenseClipSegmenter, class_names: list[str],
                 background_index: int | None, proposer: Proposer | None = None,
                 min_proposal_score: float = 0.5, filter_labels: bool = True,
                 min_confidence: float = 0.0):
        if not 0.0 <= min_confidence < 1.0:
            raise InputError(f"min_confidence must be in [0, 1), got {min_confidence}")
        if len(class_names) > 255:
            raise InputError(f"{len(class_names)} classes do not fit a uint8 label map "
                             f"(255 is ignore); at most 255 classes")
        self.segmenter = segmenter
        self.class_names = list(class_names)
        self.background_index = background_index
        self.proposer = proposer
        self.min_proposal_score = float(min_proposal_score)
        self.filter_labels = filter_labels
        self.min_confidence = float(min_confidence)

    def __call__(self, image: np.ndarray, labels: list[str] | None,
                 image_id: str = "?") -> PseudoMask:
        logits = self.segmenter.class_logits(image)
        present = None
        if self.filter_labels and labels is not None:
            present = presence_vector(labels, self.class_names, self.background_index,
                                      image_id)
        label_map, conf = filtered_argmax(logits, present)
        if self.min_confidence > 0:  # unsure pixels carry no label (and cast no vote below)
            label_map[conf < self.min_confidence] = IGNORE
        allowed = self.class_names if present is None else \
            [n for n, p in zip(self.class_names, present) if p]
        changed = 0
        if self.proposer is not None:
            corrected = correct_with_proposals(label_map, self.proposer(image),
                                               self.min_proposal_score)
            changed = int((corrected != label_map).sum())
            label_map = corrected
        return PseudoMask(label_map, conf, allowed, changed)


def build_generator(clip_dir: str | Path, class_names: list[str], background_index: int | None,
                    window: SlidingWindow | None = None,
                    synonyms: dict[str, list[str]] | None = None,
                    background_words=BACKGROUND_WORDS, cache_dir: str | Path | None = None,
                    providers: str = "auto", threads: int | None = None,
                    proposer: Proposer | None = None, min_proposal_score: float = 0.5,
                    filter_labels: bool = True, min_confidence: float = 0.0,
                    runners=None) -> tuple[PseudoMaskGenerator, dict]:
    """Load the exported CLIP, get (cached) text embeddings, wire the generator; its two
    graphs open with ``runners`` (``runtime.runners.RunnerFactory``), else ONNX Runtime
    on ``providers``."""
    model = load_clip_model(clip_dir)
    vocab = build_vocabulary(class_names, background_index, synonyms, background_words)
    emb, cached = cached_query_embeddings(
        vocab, model.text_sha256(),
        lambda: OnnxTextEncoder(model.text_onnx, model.context_length, providers, threads,
                                runners=runners),
        cache_dir)
    if window is None:
        window = SlidingWindow(crop=model.crop, stride=max(1, model.crop // 3),
                               short_side=model.crop)
    seg = DenseClipSegmenter(model, emb, vocab.query_class, len(class_names), window,
                             providers, threads, runners=runners)
    info = {"clip": {"dir": str(model.root), "model": model.name,
                     "pretrained": model.pretrained, "attention": model.attention,
                     "text_sha256": model.text_sha256()},
            "window": asdict(seg.window), "queries": list(vocab.queries),
            "query_class": [class_names[c] for c in vocab.query_class],
            "templates": list(vocab.templates), "text_cache_hit": cached,
            "filter_labels": filter_labels,
            "proposer": getattr(proposer, "name", None) if proposer else None,
            "min_proposal_score": min_proposal_score, "min_confidence": min_confidence}
    gen = PseudoMaskGenerator(seg, class_names, background_index, proposer,
                              min_proposal_score, filter_labels, min_confidence)
    return gen, info


@dataclass
class FolderSummary:
    written: int = 0
    skipped_no_labels: list[str] = field(default_factory=list)
    labels_without_image: list[str] = field(default_factory=list)
    ms_per_image: float = 0.0
    corrected_pixel_fraction: float = 0.0


def list_images(images_dir: str | Path) -> list[Path]:
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise InputError(f"images folder {images_dir} does not exist")
    paths = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise InputError(f"images folder {images_dir} has no images ({', '.join(IMAGE_SUFFIXES)})")
    return paths


def generate_folder(generator: PseudoMaskGenerator, images_dir: str | Path,
                    out_dir: str | Path, image_labels: ImageLabels | None,
                    limit: int | None = None, info: dict | None = None,
                    progress: bool = False) -> FolderSummary:
    """Write ``<out>/<stem>.png`` for every image (with labels, when filtering)."""
    out_dir = Path(out_dir)
    paths = list_images(images_dir)
    summary = FolderSummary()
    if image_labels is not None:
        stems = {p.stem for p in paths}
        summary.labels_without_image = sorted(set(image_labels) - stems)
        summary.skipped_no_labels = [p.stem for p in paths if p.stem not in image_labels]
        paths = [p for p in paths if p.stem in image_labels]
        if not paths:
            raise InputError(f"no image in {images_dir} has an entry in the labels file; "
                             f"entries are keyed by image file stem")
    if limit is not None:
        paths = paths[:limit]
    out_dir.mkdir(parents=True, exist_ok=True)
    write_class_names(out_dir / "classes.txt", generator.class_names)
    if progress:
        from tqdm import tqdm
        paths = tqdm(paths, desc="pseudo masks", unit="img")
    t0, changed, total = time.perf_counter(), 0, 0
    for p in paths:
        image = read_image(p)
        labels = image_labels.get(p.stem) if image_labels is not None else None
        result = generator(image, labels, p.stem)
        write_label_png(out_dir / f"{p.stem}.png", result.label_map)
        summary.written += 1
        changed += result.corrected_pixels
        total += result.label_map.size
    summary.ms_per_image = (time.perf_counter() - t0) * 1e3 / max(1, summary.written)
    summary.corrected_pixel_fraction = changed / max(1, total)
    record = {"class_names": generator.class_names,
              "background_index": generator.background_index,
              "images_dir": str(images_dir), **(info or {}), "summary": asdict(summary)}
    write_json(out_dir / "pseudo.json", record)
    return summary
