"""A tiny BERT and a tokenizer of its own, built in the test (no download, no 90 MB model): the
hf tests check the mechanics on them; the real all-MiniLM-L6-v2 runs in bench/minilm.py."""

from __future__ import annotations

import pytest
from tiny_bert import WORDS, tiny_bert


@pytest.fixture(scope="package")
def tokenizer(tmp_path_factory):
    """A WordPiece tokenizer over :data:`WORDS`, the letters and their ``##`` continuations."""
    import transformers
    from transformers import BertTokenizerFast

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ","] + sorted(set(WORDS))
    vocab += [c for c in letters if c not in vocab] + [f"##{c}" for c in letters]
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n")
    # transformers 5 takes the vocabulary as ``vocab`` (4.x: ``vocab_file``, ignored by 5 without a word)
    key = "vocab" if int(transformers.__version__.split(".")[0]) >= 5 else "vocab_file"
    tok = BertTokenizerFast(**{key: str(path)}, do_lower_case=True)
    assert len(tok) == len(vocab), "the tokenizer did not read the vocabulary"
    return tok


@pytest.fixture
def teacher(tokenizer):
    """A 4-layer tiny teacher :class:`SentenceEncoder`."""
    from distiq.hf.minilm import SentenceEncoder

    return SentenceEncoder(tiny_bert(len(tokenizer), layers=4))
