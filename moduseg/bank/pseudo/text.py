"""Class prompts -> CLIP text embeddings, computed once and cached on disk.

Each class is one or more *queries* (its name and synonyms; for the
background class, a list of background words). A query's embedding is the
mean of its prompt-template embeddings, re-normalised (prompt ensembling).
A class's pixel logit is the max over its queries' logits. The embeddings
depend only on the text tower and the prompt strings, so they are cached
under a key made from the text ONNX checksum and those strings.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...owned import atomic_path
from ...errors import InputError

# Prompt templates (CLIP-style prompt ensembling; '{}' is the query text).
TEMPLATES = (
    "a photo of a {}.",
    "a photo of the {}.",
    "a close-up photo of a {}.",
    "a cropped photo of the {}.",
    "a bright photo of a {}.",
    "a dark photo of the {}.",
    "a photo of a small {}.",
    "a photo of a large {}.",
    "a blurry photo of a {}.",
    "a good photo of the {}.",
    "there is a {} in the scene.",
    "a picture showing a {}.",
)

# Words whose regions count as background (stuff and scenery). Any that equal
# a foreground query are dropped so background never shadows a real class.
BACKGROUND_WORDS = (
    "sky", "wall", "tree", "grass", "road", "floor", "ceiling", "water", "sea", "river",
    "mountain", "hill", "field", "sand", "snow", "cloud", "ground", "building", "fence",
    "door", "window", "curtain", "shelf", "rock", "stairs", "railing", "wood", "street",
)

# Readable queries for class names that are not plain words (PASCAL VOC spellings).
DEFAULT_SYNONYMS = {
    "aeroplane": ["aeroplane", "airplane"],
    "diningtable": ["dining table", "table"],
    "motorbike": ["motorbike", "motorcycle"],
    "pottedplant": ["potted plant"],
    "tvmonitor": ["tv monitor", "television", "computer monitor"],
    "person": ["person", "people"],
}


@dataclass(frozen=True)
class Vocabulary:
    """The text side of the segmenter: queries, which class each serves, templates."""

    class_names: tuple[str, ...]
    queries: tuple[str, ...]
    query_class: tuple[int, ...]
    templates: tuple[str, ...]

    def cache_payload(self) -> dict:
        return {"queries": list(self.queries), "templates": list(self.templates)}


def build_vocabulary(class_names: list[str], background_index: int | None,
                     synonyms: dict[str, list[str]] | None = None,
                     background_words: list[str] | tuple[str, ...] | None = BACKGROUND_WORDS,
                     templates: tuple[str, ...] = TEMPLATES) -> Vocabulary:
    """Queries for every class; unknown keys in ``synonyms`` are an error."""
    syn = dict(DEFAULT_SYNONYMS)
    if synonyms:
        unknown = sorted(set(synonyms) - set(class_names))
        if unknown:
            raise InputError(f"prompt synonyms given for unknown classes {unknown}; keys must "
                             f"be names from the class-names file {class_names}")
        syn.update(synonyms)
    if not templates or any("{}" not in t for t in templates):
        raise InputError("every prompt template must contain '{}' for the class text")
    queries, owner = [], []
    for c, name in enumerate(class_names):
        if c == background_index:
            continue
        words = syn.get(name) or [name.replace("_", " ")]
        for w in dict.fromkeys(words):
            queries.append(w)
            owner.append(c)
    if background_index is not None:
        taken = {q.lower() for q in queries}
        words = [w for w in (background_words or ()) if w.lower() not in taken]
        words = words or [class_names[background_index]]
        for w in dict.fromkeys(words):
            queries.append(w)
            owner.append(background_index)
    return Vocabulary(tuple(class_names), tuple(queries), tuple(owner), tuple(templates))


def read_synonyms(path: str | Path) -> dict[str, list[str]]:
    """A JSON object ``{"class name": ["query", ...]}``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"prompts file {path} does not exist") from None
    except json.JSONDecodeError as e:
        raise InputError(f"prompts file {path} is not valid JSON: {e}") from None
    if not isinstance(data, dict) or not all(
            isinstance(v, list) and v and all(isinstance(s, str) for s in v)
            for v in data.values()):
        raise InputError(f"prompts file {path} must map class names to non-empty lists of "
                         f'strings, e.g. {{"tvmonitor": ["television", "monitor"]}}')
    return data


class OnnxTextEncoder:
    """Texts -> L2-normalised embeddings with the exported text tower."""

    def __init__(self, text_onnx: str | Path, context_length: int, providers: str = "auto",
                 threads: int | None = None, batch: int = 64, runners=None):
        from ...runtime.runners import default_factory

        self.runner = default_factory(runners, providers)(text_onnx, "clip_text",
                                                          threads=threads)
        self.input = self.runner.inputs[0].name
        self.output = self.runner.outputs[0].name
        self.context_length = context_length
        self.batch = batch

    def tokenize(self, texts: list[str]) -> np.ndarray:
        try:
            from open_clip.tokenizer import tokenize
        except ImportError:
            raise InputError("computing CLIP text embeddings needs the CLIP tokenizer from "
                             "open_clip_torch: pip install 'moduseg[clip]' (cached "
                             "embeddings need nothing)") from None
        return tokenize(list(texts), context_length=self.context_length).numpy().astype(
            np.int64)

    def __call__(self, texts: list[str]) -> np.ndarray:
        tokens = self.tokenize(texts)
        out = [self.runner.run({self.input: tokens[i:i + self.batch]},
                               [self.output])[self.output]
               for i in range(0, len(tokens), self.batch)]
        return np.concatenate(out, 0).astype(np.float32)


def query_embeddings(vocab: Vocabulary, encode: Callable[[list[str]], np.ndarray]) -> np.ndarray:
    """``[Q, E]``: per query, the re-normalised mean over its template embeddings."""
    texts = [t.format(q) for q in vocab.queries for t in vocab.templates]
    emb = encode(texts).reshape(len(vocab.queries), len(vocab.templates), -1)
    emb = emb / np.linalg.norm(emb, axis=-1, keepdims=True).clip(1e-12)
    mean = emb.mean(1)
    return (mean / np.linalg.norm(mean, axis=-1, keepdims=True).clip(1e-12)).astype(np.float32)


def cache_key(model_sha256: str, vocab: Vocabulary) -> str:
    payload = json.dumps({"v": 1, "model": model_sha256, **vocab.cache_payload()},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def text_cache_dir() -> Path:
    from ...home import cache_dir

    return cache_dir("clip-text")


def cached_query_embeddings(vocab: Vocabulary, model_sha256: str,
                            encoder: Callable[[], Callable[[list[str]], np.ndarray]],
                            cache_dir: str | Path | None = None) -> tuple[np.ndarray, bool]:
    """Embeddings from the cache, or computed with ``encoder()`` and stored.

    ``encoder`` is a factory so a cache hit never loads the text model or the
    tokenizer. Returns ``(embeddings, was_cached)``.
    """
    cache_dir = Path(cache_dir) if cache_dir else text_cache_dir()
    path = cache_dir / f"{cache_key(model_sha256, vocab)}.npy"
    if path.is_file():
        try:
            emb = np.load(path)
            if emb.shape[0] == len(vocab.queries):
                return emb.astype(np.float32), True
        except (OSError, ValueError):
            pass  # unreadable cache entry: recompute and overwrite
    emb = query_embeddings(vocab, encoder())
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, emb)
    return emb, False
