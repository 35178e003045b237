"""Class prompts, prompt ensembling and the on-disk text-embedding cache."""

import numpy as np
import pytest

from moduseg.bank.pseudo.text import (
    build_vocabulary,
    cache_key,
    cached_query_embeddings,
    query_embeddings,
    read_synonyms,
)
from moduseg.errors import InputError


def test_vocabulary_queries_synonyms_and_background_words():
    names = ["background", "cat", "tvmonitor", "wall"]
    v = build_vocabulary(names, 0, background_words=["sky", "wall", "floor"])
    assert v.queries == ("cat", "tv monitor", "television", "computer monitor", "wall",
                         "sky", "floor")           # 'wall' is a class: not a background word
    assert v.query_class == (1, 2, 2, 2, 3, 0, 0)
    v2 = build_vocabulary(["cat", "my_dog"], None, {"cat": ["kitten", "cat"]})
    assert v2.queries == ("kitten", "cat", "my dog") and v2.query_class == (0, 0, 1)
    with pytest.raises(InputError, match="unknown classes"):
        build_vocabulary(names, 0, {"horse": ["pony"]})
    with pytest.raises(InputError, match="must contain"):
        build_vocabulary(names, 0, templates=("no slot",))


def test_read_synonyms(tmp_path):
    p = tmp_path / "p.json"
    p.write_text('{"cat": ["kitten"]}')
    assert read_synonyms(p) == {"cat": ["kitten"]}
    p.write_text('{"cat": "kitten"}')
    with pytest.raises(InputError, match="non-empty lists"):
        read_synonyms(p)


def _fake_encoder(calls):
    """Template i of query text t -> a fixed unit vector; records the texts."""
    def encode(texts):
        calls.append(list(texts))
        out = np.zeros((len(texts), 4), np.float32)
        for i, t in enumerate(texts):
            out[i, len(t) % 4] = 2.0          # not unit length: must be normalised
        return out
    return encode


def test_prompt_ensembling_known_answer():
    v = build_vocabulary(["cat"], None, templates=("a {}", "the {} x"))
    calls = []
    emb = query_embeddings(v, _fake_encoder(calls))
    assert calls == [["a cat", "the cat x"]]
    # "a cat" (5 chars) -> e1, "the cat x" (9 chars) -> e1: mean e1
    np.testing.assert_allclose(emb, [[0, 1, 0, 0]])
    v = build_vocabulary(["ox"], None, templates=("a {}", "the {}"))
    emb = query_embeddings(v, _fake_encoder([]))      # "a ox" -> e0, "the ox" -> e2
    np.testing.assert_allclose(emb, [[2 ** -0.5, 0, 2 ** -0.5, 0]], rtol=1e-6)


def test_cache_hit_skips_the_encoder_and_keys_on_model_and_prompts(tmp_path):
    v = build_vocabulary(["background", "cat"], 0, background_words=["sky"])
    made = []

    def factory():
        made.append(1)
        return _fake_encoder([])

    e1, hit1 = cached_query_embeddings(v, "sha-a", factory, tmp_path)
    e2, hit2 = cached_query_embeddings(v, "sha-a", factory, tmp_path)
    assert (hit1, hit2) == (False, True) and len(made) == 1
    np.testing.assert_array_equal(e1, e2)
    _, hit3 = cached_query_embeddings(v, "sha-b", factory, tmp_path)
    assert not hit3 and len(made) == 2
    v2 = build_vocabulary(["background", "cat"], 0, background_words=["sea"])
    assert cache_key("sha-a", v) != cache_key("sha-a", v2)
    assert len(list(tmp_path.glob("*.npy"))) == 2


torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")


def test_onnx_text_encoder_matches_torch(tmp_path):
    import open_clip
    from pseudo_tiny_clip import export_tiny

    from moduseg.bank.pseudo.model import load_clip_model
    from moduseg.bank.pseudo.text import OnnxTextEncoder

    model, _ = export_tiny(tmp_path, crop=32)
    clip = load_clip_model(tmp_path)
    enc = OnnxTextEncoder(clip.text_onnx, clip.context_length, "cpu", 1, batch=2)
    texts = ["a photo of a cat.", "a photo of the dog.", "sky"]
    got = enc(texts)
    with torch.no_grad():
        ref = torch.nn.functional.normalize(
            model.encode_text(open_clip.tokenize(texts, 77)), dim=-1).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-5)
    # the cache key is the text tower's checksum as it is on disk
    from moduseg.export.clip import sha256_file
    assert clip.text_sha256() == sha256_file(clip.text_onnx)
