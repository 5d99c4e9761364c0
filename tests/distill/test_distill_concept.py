"""Concept distillation: probability summation by hand, mapping validation, a tiny run that learns."""

from __future__ import annotations

import json
import math

import pytest
import torch

import distiq as dq
from distiq.data.concepts import builtin_mappings, load_mapping, to_concepts
from distiq.data.fashion_mnist import CLASSES
from distiq.distill.concept import concept_kd, concept_logits, concept_probabilities, distill_concepts
from distiq.errors import DataError, DistiqError

LN = torch.log(torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64))  # softmax = [.1 .2 .3 .4]
A_B = load_mapping({"concepts": {"A": [0, 3], "B": [1, 2]}})


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run ~10x faster on one thread when the other core is busy."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_concept_probabilities_by_hand():
    # A = {0, 3}: 0.1 + 0.4 = 0.5; B = {1, 2}: 0.2 + 0.3 = 0.5. At T = 2 the logits 2·ln(k) give
    # softmax(t / 2) = the same [.1 .2 .3 .4], so the same sums.
    p = concept_probabilities(LN, A_B.membership(), 1.0)
    assert p[0].tolist() == pytest.approx([0.5, 0.5], abs=1e-12)
    p = concept_probabilities(2 * LN, A_B.membership(), 2.0)
    assert p[0].tolist() == pytest.approx([0.5, 0.5], abs=1e-12)
    ab = load_mapping({"concepts": {"A": [0, 1, 2], "B": [3]}})
    assert concept_probabilities(LN, ab.membership())[0].tolist() == pytest.approx([0.6, 0.4], abs=1e-12)


def test_unmapped_mass_is_renormalised_by_hand():
    # label 3 unmapped: [0.1, 0.2 + 0.3] / 0.6 = [1/6, 5/6]
    m = load_mapping({"concepts": {"A": [0], "B": [1, 2]}, "unmapped": [3]})
    assert m.unmapped == ["3"]
    p = concept_probabilities(LN, m.membership())
    assert p[0].tolist() == pytest.approx([1 / 6, 5 / 6], abs=1e-12)


def test_concept_kd_by_hand():
    # teacher concepts [0.5, 0.5]; student logits [0, ln 3] -> q = [0.25, 0.75];
    # KL = 0.5·ln(0.5/0.25) + 0.5·ln(0.5/0.75) = 0.5·ln(4/3); at T = 2 with logits doubled, times T² = 4.
    s = torch.tensor([[0.0, math.log(3.0)]], dtype=torch.float64)
    assert float(concept_kd(s, LN, A_B.membership(), 1.0)) == pytest.approx(0.5 * math.log(4 / 3))
    kd_labels = concept_kd(2 * s, 2 * LN, A_B.membership(), 2.0, temperature_on="labels")
    assert float(kd_labels) == pytest.approx(2 * math.log(4 / 3))
    # equals the plain KD loss when every concept is one label
    one = load_mapping({"concepts": {"a": [0], "b": [1], "c": [2], "d": [3]}})
    t, st = torch.randn(5, 4), torch.randn(5, 4)
    for form in ("concepts", "labels"):
        got = concept_kd(st, t, one.membership(), 3.0, temperature_on=form)
        assert float(got) == pytest.approx(float(dq.losses.kd(st, t, 3.0)))


def test_temperature_on_labels_versus_concepts_by_hand():
    # A = {0, 1, 2}, B = {3}, teacher softmax [.1 .2 .3 .4] at T = 1 -> [0.6, 0.4] both ways.
    m = load_mapping({"concepts": {"A": [0, 1, 2], "B": [3]}}).membership()
    # "labels", T = 2: softmax(ln k / 2) = √k / Σ√k -> A = (1 + √2 + √3) / (1 + √2 + √3 + 2)
    r2, r3 = math.sqrt(2), math.sqrt(3)
    a = (1 + r2 + r3) / (3 + r2 + r3)
    assert concept_probabilities(LN, m, 2.0)[0].tolist() == pytest.approx([a, 1 - a], abs=1e-12)
    # "concepts", T = 2: z = [ln 6, ln 4] -> softmax(z / 2) = [√6, 2] / (√6 + 2)
    z = concept_logits(LN, m)
    assert z[0].tolist() == pytest.approx([math.log(6), math.log(4)], abs=1e-12)
    s = torch.tensor([[0.3, -0.2]], dtype=torch.float64)
    q = torch.softmax(s / 2, 1)[0]
    p = torch.tensor([math.sqrt(6), 2.0], dtype=torch.float64) / (math.sqrt(6) + 2)
    expected = 4 * float((p * (p.log() - q.log())).sum())
    assert float(concept_kd(s, LN, m, 2.0, "concepts")) == pytest.approx(expected, abs=1e-12)
    # the labels form gives the 3-label concept more mass than the marginal; the concepts form less
    assert a > 0.6 > math.sqrt(6) / (math.sqrt(6) + 2)
    assert float(concept_kd(s, LN, m, 1.0, "concepts")) == pytest.approx(
        float(concept_kd(s, LN, m, 1.0, "labels"))
    )
    with pytest.raises(ValueError, match="temperature_on"):
        concept_kd(s, LN, m, 2.0, "both")


def test_builtin_fashion_mnist_mapping():
    assert "fashion-mnist-4" in builtin_mappings()
    m = load_mapping("fashion-mnist-4", teacher_labels=CLASSES)
    assert m.members() == {
        "upper-body garment": ["T-shirt/top", "Pullover", "Coat", "Shirt"],
        "lower/full-body garment": ["Trouser", "Dress"],
        "footwear": ["Sandal", "Sneaker", "Ankle boot"],
        "bag": ["Bag"],
    }
    assert m.membership().sum(0).tolist() == [4, 2, 3, 1]


def write(tmp_path, text, name="map.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


LABELS = ["cat", "dog", "car", "bus"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "concepts: {animal: [cat, dgo], vehicle: [car, bus]}",
            "concepts.animal: unknown teacher label 'dgo'; did you mean 'dog'",
        ),
        (
            "concepts: {animal: [cat, dog, car], vehicle: [car, bus]}",
            "concepts.vehicle: teacher label 'car' .2. is already mapped to 'animal'",
        ),
        (
            "concepts: {animal: [cat, dog], vehicle: [car]}",
            r"teacher label\(s\) 'bus' \(3\) mapped to no concept",
        ),
        (
            "concepts: {animal: [cat, dog], vehicle: [car, 7]}",
            "concepts.vehicle: teacher label index 7 outside 0..3",
        ),
        ("concepts: {animal: [cat, dog], vehicle: []}", "concepts.vehicle: expected a non-empty list"),
        ("concepts: {animal: [cat, dog, car, bus]}", "need at least 2 concepts"),
        (
            "concepts: {animal: [cat, dog], vehicle: [car]}\nunmapped: [bus, cat]",
            "unmapped: teacher label 'cat' .0. is also mapped to 'animal'",
        ),
        (
            "concepts: {animal: [cat, dog], vehicle: [car, bus]}\nunmaped: []",
            "unknown top-level key.s. 'unmaped'",
        ),
        ("animal: [cat, dog]\nvehicle: [car]\nanimal: [bus]", "duplicate key 'animal'"),
        ("- cat\n- dog", "expected a mapping of concept names"),
    ],
)
def test_mapping_errors_name_file_and_entry(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(DistiqError, match=message) as err:
        load_mapping(path, teacher_labels=LABELS)
    assert str(path) in str(err.value)


def test_unmapped_allowed_and_bare_form(tmp_path):
    m = load_mapping(
        write(tmp_path, "concepts: {animal: [cat, dog], vehicle: [car]}\nunmapped: [bus]"), LABELS
    )
    assert m.concept_of == (0, 0, 1, -1)
    bare = load_mapping(write(tmp_path, "animal: [0, 1]\nvehicle: [2, 3]"))  # indices need no names
    assert bare.teacher_labels == ("0", "1", "2", "3") and bare.concept_of == (0, 0, 1, 1)


def test_json_and_file_errors(tmp_path):
    path = write(
        tmp_path, json.dumps({"teacher_labels": LABELS, "concepts": {"a": [0, 1], "v": [2, 3]}}), "m.json"
    )
    assert load_mapping(path).concepts == ("a", "v")
    dup = write(tmp_path, '{"a": [0, 1], "a": [2, 3]}', "dup.json")
    with pytest.raises(DistiqError, match=f"{dup}: duplicate key 'a'"):
        load_mapping(dup)
    with pytest.raises(DataError, match="nope.yaml: concept mapping file not found"):
        load_mapping(tmp_path / "nope.yaml")
    with pytest.raises(DataError, match="bad.yaml: not valid YAML"):
        load_mapping(write(tmp_path, "a: [b", "bad.yaml"))
    with pytest.raises(DistiqError, match="need the teacher's vocabulary"):
        load_mapping(write(tmp_path, "animal: [cat, dog]\nvehicle: [car, bus]"))
    with pytest.raises(DistiqError, match="differ from the teacher's"):
        load_mapping(path, teacher_labels=["cat", "dog", "car", "tram"])


EVEN_ODD = {"concepts": {"even": [0, 2, 4, 6, 8], "odd": [1, 3, 5, 7, 9]}}


def test_to_concepts_relabels_and_drops_unmapped():
    data = dq.data.load("digits", "test")
    m = load_mapping(EVEN_ODD)
    out = to_concepts(data, m)
    assert torch.equal(out.y, data.y % 2) and out.classes == ["even", "odd"]
    partial = load_mapping({"concepts": {"even": [0, 2], "odd": [1, 3]}, "unmapped": [4, 5, 6, 7, 8, 9]})
    kept = to_concepts(data, partial)
    assert len(kept) == int((data.y < 4).sum()) and torch.equal(kept.y, data.y[data.y < 4] % 2)


def test_tiny_concept_distillation_learns():
    train = dq.data.subsample(dq.data.load("digits"), 500, seed=0)
    test = dq.data.load("digits", "test")
    torch.manual_seed(0)
    teacher = dq.models.create("vgg-small", image_size=8, width=0.5)
    dq.train(teacher, train, epochs=8, lr=3e-3, progress=False)
    torch.manual_seed(1)
    student = dq.models.create("mlp", num_classes=2, image_size=8)
    m = load_mapping(EVEN_ODD)
    res = distill_concepts(
        teacher, student, train, mapping=m, temperature=4.0, alpha=0.9, epochs=8, lr=1e-2, progress=False
    )
    assert res.history[-1]["train_distill"] < res.history[0]["train_distill"]
    assert {"train_ce", "train_distill"} <= set(res.history[0])
    acc = dq.evaluate(res.model, to_concepts(test, m))["accuracy"]
    assert acc > 0.8  # chance is 0.5
    assert all(not p.requires_grad for p in teacher.parameters())


def test_distill_concepts_checks_shapes_and_labels(tmp_path):
    data = dq.data.subsample(dq.data.load("digits"), 50, seed=0)
    teacher = dq.models.create("mlp", image_size=8)
    student = dq.models.create("mlp", num_classes=2, image_size=8)
    with pytest.raises(DistiqError, match="student outputs 10 logits, expected 2"):
        distill_concepts(teacher, dq.models.create("mlp", image_size=8), data, mapping=load_mapping(EVEN_ODD))
    three = load_mapping({"concepts": {"a": [0], "b": [1, 2]}})
    with pytest.raises(DistiqError, match="classes match neither"):
        distill_concepts(teacher, student, data, mapping=three, epochs=1)
    with pytest.raises(DistiqError, match="labels: expected"):
        distill_concepts(teacher, student, data, mapping=load_mapping(EVEN_ODD), labels="fine")
    # a mapping file path works as well as a parsed mapping, and concept-labelled data is used as is
    path = tmp_path / "even_odd.json"
    path.write_text(json.dumps(EVEN_ODD))
    concept_data = to_concepts(data, load_mapping(EVEN_ODD))
    res = distill_concepts(
        teacher, student, concept_data, mapping=path, labels="concepts", epochs=1, progress=False
    )
    assert len(res.history) == 1
