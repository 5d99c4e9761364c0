"""Layer-subset students: the chosen teacher layers, embeddings and pooler copied exactly."""

import pytest

pytest.importorskip("transformers", reason="the hf extra is not installed: pip install distiq[hf]")

import torch  # noqa: E402
from tiny_bert import TEXTS  # noqa: E402

from distiq.errors import DistiqError  # noqa: E402
from distiq.hf.minilm import encode, mean_pool, sentence_embedding  # noqa: E402
from distiq.hf.student import layer_subset, make_student, spread_layers  # noqa: E402


@pytest.mark.parametrize(
    ("n_teacher", "n_student", "expected"),
    [(6, 3, [0, 3, 5]), (6, 2, [0, 5]), (4, 2, [0, 3]), (4, 3, [0, 2, 3]), (6, 1, [5]), (4, 4, [0, 1, 2, 3])],
)
def test_spread_layers(n_teacher, n_student, expected):
    assert spread_layers(n_teacher, n_student) == expected


def test_spread_layers_rejects_more_than_the_teacher():
    with pytest.raises(DistiqError, match="7 layers"):
        spread_layers(6, 7)


def test_student_holds_the_chosen_layers(teacher):
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = make_student(teacher, [1, 3])
    assert student.model.config.num_hidden_layers == 2
    assert student.model.config.distiq_teacher_layers == [1, 3]
    assert teacher.model.config.num_hidden_layers == 4
    s, t = student.model.state_dict(), teacher.model.state_dict()
    for key, value in s.items():
        if key.startswith("encoder.layer."):
            k = int(key.split(".")[2])
            source = key.replace(f"encoder.layer.{k}.", f"encoder.layer.{[1, 3][k]}.", 1)
            assert torch.equal(value, t[source]), key
        else:
            assert torch.equal(value, t[key]), key  # embeddings, pooler
    layer_keys = [sum(k.startswith("encoder.layer.") for k in d) for d in (s, t)]
    assert layer_keys[0] * 2 == layer_keys[1]
    student.model.embeddings.word_embeddings.weight.data += 1  # a copy, not shared
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())


def test_full_subset_reproduces_the_teacher(teacher, tokenizer):
    student = make_student(teacher, [0, 1, 2, 3])
    a, b = encode(teacher, tokenizer, TEXTS[:8]), encode(student, tokenizer, TEXTS[:8])
    assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("layers", [[], [0, 4], [2, 1], [1, 1]])
def test_bad_layer_lists_are_refused(teacher, layers):
    with pytest.raises(DistiqError, match="layers"):
        layer_subset(teacher.model, layers)


def test_mean_pool_skips_padding():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert torch.equal(mean_pool(hidden, mask), torch.tensor([[2.0, 3.0]]))
    assert torch.allclose(sentence_embedding(hidden, mask), torch.tensor([[2.0, 3.0]]) / 13**0.5)
