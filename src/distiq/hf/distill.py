"""Embedding distillation: a student sentence encoder trained to give the teacher's sentence embeddings.

The loss (:func:`embedding_loss`) is ``cosine_weight * (1 - cos(s, t)) + mse_weight * ||s - t||² / H``
on the L2-normalised mean-pooled embeddings, optionally plus ``hidden_weight`` times the MSE of the
student's hidden states against the teacher layers it was cut from (TinyBERT's hidden-state term,
Jiao et al., 2020, without the projection since the widths are equal), and ``neighbour_weight`` times
:func:`neighbour_loss` (the teacher's distribution over which training texts are nearest, asked of
the student). Cosine is what retrieval with these embeddings measures; the MSE term keeps the scale
of the un-normalised direction stable. The neighbour term is off by default: on all-MiniLM-L6-v2's
3-layer student (3,000 fortunes, one epoch) it lowered the held-out cosine from 0.836 to 0.801 and
the top-10 overlap from 0.437 to 0.401.

Training runs through distiq's one loop (:func:`distiq.engine.train.train`): seeded epochs, the
learning-rate schedule, divergence checks and checkpoints come with it. That loop holds image-shaped
``(x, y)`` tensors, so each text rides as one float32 sample ``[2, 1, L]`` (token ids and the
attention mask; ids below 2**24 are exact in float32) with a dummy label, and the objective unpacks
it. The teacher's sentence embeddings of the training texts are computed once and looked up by
sample index (offline distillation); only the hidden-state term runs the teacher per batch.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from distiq.data.arrays import ArrayDataset
from distiq.engine.config import training_views
from distiq.engine.objective import Objective
from distiq.engine.train import TrainResult, train
from distiq.errors import DistiqError

from .minilm import encode, sentence_embedding, tokenize


def embedding_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    *,
    cosine_weight: float = 1.0,
    mse_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """Loss terms between student and teacher sentence embeddings ``[B, H]``.

    Returns ``{"loss", "cosine", "mse"}``: ``cosine = mean(1 - cos(s, t))``,
    ``mse = mean((s - t)²)`` over all elements, ``loss = cosine_weight * cosine + mse_weight * mse``.
    """
    cosine = (1 - F.cosine_similarity(student, teacher, dim=-1)).mean()
    mse = F.mse_loss(student, teacher)
    return {"loss": cosine_weight * cosine + mse_weight * mse, "cosine": cosine, "mse": mse}


def neighbour_loss(
    student: torch.Tensor, teacher: torch.Tensor, bank: torch.Tensor, temperature: float
) -> torch.Tensor:
    """KL from the teacher's to the student's softmax over cosine similarities to ``bank``.

    ``bank`` ``[N, H]`` holds unit-length teacher embeddings of other texts (distiq uses all the
    training texts', normalised once): for each text the teacher's similarities to the bank,
    sharpened by ``temperature``, are a distribution over which texts are its neighbours, and the
    student is asked for the same one.
    Why: retrieval with these embeddings reads only which texts are nearest, and a per-text cosine
    term leaves the residual error free to point anywhere, reordering neighbours (3-layer MiniLM
    student: held-out cosine 0.90 but top-10 overlap 0.53). Measured, it did not pay (module
    docstring); kept as an option to try with longer training. Mean over the batch of
    ``KL(p_t || p_s)`` in nats.
    """
    s = F.normalize(student, dim=-1) @ bank.T / temperature
    t = F.normalize(teacher, dim=-1) @ bank.T / temperature
    return F.kl_div(
        F.log_softmax(s, dim=-1), F.log_softmax(t, dim=-1), log_target=True, reduction="batchmean"
    )


def hidden_state_loss(
    student_states: Sequence[torch.Tensor], teacher_states: Sequence[torch.Tensor], mask: torch.Tensor
) -> torch.Tensor:
    """Mean over pairs of the MSE between hidden states ``[B, T, H]`` on the tokens ``mask`` keeps."""
    keep = mask.unsqueeze(-1).to(student_states[0].dtype)
    count = keep.sum() * student_states[0].shape[-1]
    terms = [
        (((s - t) ** 2) * keep).sum() / count for s, t in zip(student_states, teacher_states, strict=True)
    ]
    return torch.stack(terms).mean()


class EmbeddingDistillSpec(BaseModel):
    """How to distil a sentence encoder (validated on construction).

    Training options (``epochs``, ``lr``, ``batch_size``, ``schedule``, ``seed``, ...) are the
    engine's own and are passed beside it.
    """

    model_config = ConfigDict(extra="forbid")

    cosine_weight: float = Field(1.0, ge=0, description="Weight of 1 - cos(student, teacher).")
    mse_weight: float = Field(1.0, ge=0, description="Weight of the embedding MSE.")
    hidden_weight: float = Field(0.0, ge=0, description="Weight of the hidden-state MSE (0: off).")
    neighbour_weight: float = Field(
        0.0, ge=0, description="Weight of the neighbour-distribution KL over the training texts (0: off)."
    )
    neighbour_temperature: float = Field(
        0.05, gt=0, description="Temperature of the cosine similarities in the neighbour term."
    )
    teacher_layers: list[int] | None = Field(
        None, description="Teacher layer each student layer was cut from (needed by the hidden term)."
    )
    max_length: int = Field(64, ge=2, description="Truncation of the training texts (tokens).")
    dropout: float | None = Field(
        0.0, ge=0, lt=1, description="Student dropout while distilling (None: the model's own, 0.1 for BERT)."
    )


def pack_tokens(tokenizer: object, texts: Sequence[str], max_length: int) -> ArrayDataset:
    """``texts`` as an :class:`ArrayDataset` of ``[2, 1, L]`` samples (ids, mask) with label 0."""
    enc = tokenize(tokenizer, texts, max_length, padding="max_length")
    x = torch.stack([enc["input_ids"], enc["attention_mask"]], dim=1).unsqueeze(2).to(torch.float32)
    return ArrayDataset(x, torch.zeros(len(texts), dtype=torch.int64), classes=["text"], name="texts")


def unpack_tokens(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` of a packed batch, trimmed to its longest text."""
    ids, mask = x[:, 0, 0].long(), x[:, 1, 0].long()
    length = max(int(mask.sum(1).max()), 1)
    return ids[:, :length], mask[:, :length]


class EmbeddingObjective(Objective):
    """The engine's objective for embedding distillation (see the module docstring)."""

    def __init__(self, teacher_embeddings: torch.Tensor, spec: EmbeddingDistillSpec, teacher=None) -> None:
        super().__init__()
        self.register_buffer("teacher_embeddings", teacher_embeddings, persistent=False)
        if spec.neighbour_weight > 0:  # the neighbour term's bank, normalised once, not every step
            self.register_buffer("bank", F.normalize(teacher_embeddings, dim=-1), persistent=False)
        self.spec = spec
        self.teacher = teacher  # a plain attribute: not trained, not checkpointed

    def forward(self, model, x, y, index):
        ids, mask = unpack_tokens(x)
        if self.spec.hidden_weight > 0:
            states = model.hidden_states(ids, mask)
            emb = sentence_embedding(states[-1], mask)
        else:
            states, emb = None, model(ids, mask)
        terms = embedding_loss(
            emb,
            self.teacher_embeddings[index],
            cosine_weight=self.spec.cosine_weight,
            mse_weight=self.spec.mse_weight,
        )
        if self.spec.neighbour_weight > 0:
            terms["neighbour"] = neighbour_loss(
                emb, self.teacher_embeddings[index], self.bank, self.spec.neighbour_temperature
            )
            terms["loss"] = terms["loss"] + self.spec.neighbour_weight * terms["neighbour"]
        if states is not None:
            with torch.no_grad():
                t_states = self.teacher.hidden_states(ids, mask)
            # hidden_states[0] is the embedding output; student layer k was teacher layer layers[k]
            pairs = [t_states[i + 1] for i in self.spec.teacher_layers]
            terms["hidden"] = hidden_state_loss(states[1:], pairs, mask)
            terms["loss"] = terms["loss"] + self.spec.hidden_weight * terms["hidden"]
        return torch.zeros(len(ids), 1), terms  # no classes: the loop's accuracy is not used


@contextlib.contextmanager
def _dropout(model: nn.Module, p: float | None) -> Iterator[None]:
    """Every ``nn.Dropout`` of ``model`` at probability ``p`` inside the block (None: unchanged).

    Why off by default: the student starts close to the teacher and is matched to fixed targets on a
    few thousand texts; dropout's noise then slows fitting more than it regularises (3-layer MiniLM
    student, 1,000 fortunes, one epoch: held-out cosine 0.805 without dropout, 0.797 with BERT's
    0.1). transformers' BERT attention reads its dropout probability from the same modules.
    """
    modules = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    before = [m.p for m in modules]
    try:
        if p is not None:
            for m in modules:
                m.p = p
        yield
    finally:
        for m, q in zip(modules, before, strict=True):
            m.p = q


@dataclass
class DistillResult:
    """A distilled student and what it was measured at.

    Attributes:
        student: The trained :class:`SentenceEncoder` (eval mode).
        train: The engine's result (history per epoch).
        held_out_cosine: Mean cosine to the teacher on the held-out texts after each epoch
            (index 0: before training).
    """

    student: nn.Module
    train: TrainResult
    held_out_cosine: list[float] = field(default_factory=list)


def distill_embeddings(
    teacher: nn.Module,
    student: nn.Module,
    tokenizer: object,
    texts: Sequence[str],
    held_out: Sequence[str] = (),
    *,
    spec: EmbeddingDistillSpec | None = None,
    label: str = "student",
    eval_max_length: int = 128,
    teacher_embeddings: torch.Tensor | None = None,
    **train_options: object,
) -> DistillResult:
    """Train ``student`` (in place) to give ``teacher``'s sentence embeddings of ``texts``.

    Prints one line per epoch to stderr: the loss terms, the mean cosine to the teacher on
    ``held_out`` and the epoch's seconds.

    Args:
        teacher: A :class:`SentenceEncoder` (put in eval mode; its weights are not changed).
        student: A :class:`SentenceEncoder` with the same hidden width.
        tokenizer: Their shared tokenizer.
        texts: Training texts.
        held_out: Texts to report the cosine on after each epoch (none: not reported).
        spec: Loss weights and truncation (default :class:`EmbeddingDistillSpec`).
        label: Names the run in the progress lines.
        eval_max_length: Truncation of the held-out texts.
        teacher_embeddings: The teacher's embeddings of ``texts`` at ``spec.max_length``, when
            already computed (several students of one teacher); computed here otherwise.
        **train_options: The engine's options (``epochs``, ``lr``, ``batch_size``, ``seed``, ...).
    """
    if training_views(train_options).count > 1:
        raise DistiqError("augment_flip/augment_shift: mirror and shift images; leave them off for text")
    spec = spec or EmbeddingDistillSpec()
    if spec.hidden_weight > 0 and spec.teacher_layers is None:
        layers = getattr(student.model.config, "distiq_teacher_layers", None)
        spec = spec.model_copy(update={"teacher_layers": layers})
    if spec.hidden_weight > 0 and spec.teacher_layers is None:
        raise DistiqError("hidden_weight > 0 needs teacher_layers (the student's source layers)")
    teacher.eval()
    data = pack_tokens(tokenizer, texts, spec.max_length)
    if teacher_embeddings is None:
        teacher_embeddings = encode(teacher, tokenizer, list(texts), max_length=spec.max_length)
    if teacher_embeddings.shape[0] != len(texts):
        raise DistiqError(f"teacher_embeddings: {teacher_embeddings.shape[0]} rows for {len(texts)} texts")
    t_emb = teacher_embeddings
    held = list(held_out)
    t_held = encode(teacher, tokenizer, held, max_length=eval_max_length) if held else None

    def held_cosine() -> float:
        if t_held is None:
            return float("nan")
        s = encode(student, tokenizer, held, max_length=eval_max_length)
        return float(F.cosine_similarity(s, t_held, dim=-1).mean())

    cosines = [held_cosine()]
    epochs = train_options.get("epochs", "?")
    start = time.perf_counter()

    def report(epoch: int, record: dict) -> None:
        nonlocal start
        cosines.append(held_cosine())
        terms = "  ".join(
            f"{k[6:]} {v:.4f}"
            for k, v in record.items()
            if k.startswith("train_") and k not in ("train_seconds", "train_accuracy")
        )
        print(
            f"distill {label}: epoch {epoch + 1}/{epochs}  {terms}  held-out cos {cosines[-1]:.4f}  "
            f"{time.perf_counter() - start:.1f} s",
            file=sys.stderr,
            flush=True,
        )
        start = time.perf_counter()

    objective = EmbeddingObjective(t_emb, spec, teacher if spec.hidden_weight > 0 else None)
    with _dropout(student, spec.dropout):
        result = train(
            student, data, objective=objective, on_epoch_end=report, progress=False, **train_options
        )
    student.eval()
    return DistillResult(student=student, train=result, held_out_cosine=cosines)
