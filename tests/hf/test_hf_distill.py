"""Embedding distillation: the loss terms by hand, and a short run that brings the student closer."""

import math

import pytest

pytest.importorskip("transformers", reason="the hf extra is not installed: pip install distiq[hf]")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from tiny_bert import TEXTS, tiny_bert  # noqa: E402

from distiq.errors import DistiqError  # noqa: E402
from distiq.hf.distill import (  # noqa: E402
    EmbeddingDistillSpec,
    distill_embeddings,
    embedding_loss,
    hidden_state_loss,
    neighbour_loss,
    pack_tokens,
    unpack_tokens,
)
from distiq.hf.minilm import SentenceEncoder, encode, tokenize  # noqa: E402
from distiq.hf.student import make_student  # noqa: E402


def test_embedding_loss_by_hand():
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    terms = embedding_loss(s, t, cosine_weight=2.0, mse_weight=0.5)
    assert terms["cosine"].item() == pytest.approx(0.5)  # (0 + 1) / 2
    assert terms["mse"].item() == pytest.approx(0.5)  # (0 + 0 + 1 + 1) / 4
    assert terms["loss"].item() == pytest.approx(2 * 0.5 + 0.5 * 0.5)


def test_hidden_state_loss_counts_kept_tokens_only():
    s = [torch.zeros(1, 3, 2)]
    t = [torch.tensor([[[1.0, 1.0], [3.0, 3.0], [50.0, 50.0]]])]
    mask = torch.tensor([[1, 1, 0]])
    assert hidden_state_loss(s, t, mask).item() == pytest.approx((1 + 1 + 9 + 9) / 4)


def test_neighbour_loss_by_hand():
    bank = torch.eye(2)
    t, s = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 3.0]])  # the student's length does not count
    # p_t = softmax([1, 0]), p_s = softmax([0, 1]): KL = (p - (1 - p)) * ln(p / (1 - p)) = tanh(1/2) * 1
    assert neighbour_loss(s, t, bank, temperature=1.0).item() == pytest.approx(math.tanh(0.5), rel=1e-5)
    assert neighbour_loss(2 * t, t, bank, temperature=0.05).item() == pytest.approx(0.0, abs=1e-6)


def test_tokens_survive_packing(tokenizer):
    data = pack_tokens(tokenizer, TEXTS[:5], max_length=24)
    assert data.x.shape == (5, 2, 1, 24) and data.x.dtype == torch.float32
    ids, mask = unpack_tokens(data.x)
    enc = tokenize(tokenizer, TEXTS[:5], 24)
    assert torch.equal(ids, enc["input_ids"]) and torch.equal(mask, enc["attention_mask"])


def _cos(a, b):
    return float(F.cosine_similarity(a, b, dim=-1).mean())


@pytest.mark.parametrize(("hidden_weight", "neighbour_weight"), [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0)])
def test_distillation_brings_the_student_closer(tokenizer, hidden_weight, neighbour_weight, capsys):
    teacher = SentenceEncoder(tiny_bert(len(tokenizer), layers=4, seed=1))
    student = make_student(teacher, [0, 3])
    train, held = TEXTS[:80], TEXTS[80:]
    t_held = encode(teacher, tokenizer, held)
    before = _cos(encode(student, tokenizer, held), t_held)
    spec = EmbeddingDistillSpec(hidden_weight=hidden_weight, neighbour_weight=neighbour_weight, max_length=32)
    result = distill_embeddings(
        teacher, student, tokenizer, train, held, spec=spec, label="tiny", epochs=4, lr=3e-3, batch_size=16
    )
    after = _cos(encode(student, tokenizer, held), t_held)
    assert after > before + 0.02
    assert result.held_out_cosine[0] == pytest.approx(before, abs=1e-5)
    assert result.held_out_cosine[-1] == pytest.approx(after, abs=1e-5)
    losses = [h["train_loss"] for h in result.train.history]
    assert losses[-1] < losses[0]
    assert ("train_hidden" in result.train.history[0]) == (hidden_weight > 0)
    assert ("train_neighbour" in result.train.history[0]) == (neighbour_weight > 0)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("distill tiny")]
    assert len(lines) == 4 and "held-out cos" in lines[0]
    assert not student.training


def test_teacher_is_not_changed(tokenizer):
    teacher = SentenceEncoder(tiny_bert(len(tokenizer), layers=4, seed=2))
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    distill_embeddings(teacher, make_student(teacher, [1, 3]), tokenizer, TEXTS[:32], epochs=1, batch_size=16)
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())


def test_image_augmentation_is_refused_for_text_before_any_work(tokenizer):
    teacher = SentenceEncoder(tiny_bert(len(tokenizer), layers=4, seed=2))
    with pytest.raises(DistiqError, match="augment_flip/augment_shift: mirror and shift images"):
        distill_embeddings(teacher, make_student(teacher, [1, 3]), tokenizer, TEXTS[:32], augment_shift=1)
