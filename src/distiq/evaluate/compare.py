"""What compression changed: prediction flips against a reference and per-class degradation.

Top-1 accuracy hides damage. A student 0.2 points below its teacher may still disagree with it on
5% of the samples (fixing some, breaking others), or may have lost 6 points on one class while
gaining on the rest. These functions compare a candidate (student, pruned or quantized model) with
a reference (teacher, float model) sample by sample.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from distiq.data.arrays import as_arrays

from .metrics import accuracy, confusion_matrix, f1_macro, per_class_accuracy, per_class_f1
from .stats import McNemarResult, int_array, mcnemar


@dataclass
class Flips:
    """Prediction changes of a candidate against a reference, on the same samples.

    Attributes:
        n: Samples compared.
        flipped: Samples whose predicted class changed.
        flip_rate: ``flipped / n``; ``1 - flip_rate`` is the top-1 agreement.
        correct_to_wrong: Reference right, candidate wrong (what compression broke).
        wrong_to_correct: Reference wrong, candidate right (what it fixed, often by chance).
        wrong_to_wrong: Both wrong but with different classes.
    """

    n: int
    flipped: int
    flip_rate: float
    correct_to_wrong: int
    wrong_to_correct: int
    wrong_to_wrong: int

    @property
    def agreement(self) -> float:
        return 1.0 - self.flip_rate

    def to_dict(self) -> dict:
        return asdict(self) | {"agreement": self.agreement}


def prediction_flips(
    reference_pred: torch.Tensor | np.ndarray,
    candidate_pred: torch.Tensor | np.ndarray,
    target: torch.Tensor | np.ndarray,
) -> Flips:
    """Count where ``candidate_pred`` differs from ``reference_pred`` and in which direction."""
    r, c, y = int_array(reference_pred), int_array(candidate_pred), int_array(target)
    if not len(r) == len(c) == len(y):
        raise ValueError(f"need equally many predictions and targets, got {len(r)}, {len(c)}, {len(y)}")
    changed = r != c
    ok_r, ok_c = r == y, c == y
    n = len(y)
    return Flips(
        n=n,
        flipped=int(changed.sum()),
        flip_rate=float(changed.mean()) if n else 0.0,
        correct_to_wrong=int((ok_r & ~ok_c).sum()),
        wrong_to_correct=int((~ok_r & ok_c).sum()),
        wrong_to_wrong=int((changed & ~ok_r & ~ok_c).sum()),
    )


@dataclass
class ClassChange:
    """One class's accuracy (recall) and F1 under the reference and the candidate."""

    index: int
    name: str
    support: int
    accuracy_reference: float
    accuracy_candidate: float
    accuracy_drop: float
    f1_reference: float
    f1_candidate: float
    f1_drop: float


def per_class_degradation(
    reference_pred: torch.Tensor | np.ndarray,
    candidate_pred: torch.Tensor | np.ndarray,
    target: torch.Tensor | np.ndarray,
    num_classes: int | None = None,
    classes: Sequence[str] | None = None,
) -> list[ClassChange]:
    """Per-class accuracy and F1 drops (reference minus candidate; positive = candidate worse).

    Sorted by class index; ``max(changes, key=lambda c: c.accuracy_drop)`` is the most damaged class.
    """
    r, c, y = (torch.from_numpy(int_array(v)) for v in (reference_pred, candidate_pred, target))
    k = num_classes or int(max(r.max(), c.max(), y.max())) + 1
    names = [*(classes or [])][:k]
    names += [str(i) for i in range(len(names), k)]
    cm_r, cm_c = confusion_matrix(r, y, k), confusion_matrix(c, y, k)
    acc_r, acc_c = per_class_accuracy(cm_r), per_class_accuracy(cm_c)
    f1_r, f1_c = per_class_f1(cm_r), per_class_f1(cm_c)
    support = cm_r.sum(1)
    return [
        ClassChange(
            i,
            names[i],
            int(support[i]),
            float(acc_r[i]),
            float(acc_c[i]),
            float(acc_r[i] - acc_c[i]),
            float(f1_r[i]),
            float(f1_c[i]),
            float(f1_r[i] - f1_c[i]),
        )
        for i in range(k)
    ]


@dataclass
class Comparison:
    """Everything :func:`compare` measures about a candidate against its reference.

    Attributes:
        accuracy_reference: Top-1 accuracy of the reference.
        accuracy_candidate: Top-1 accuracy of the candidate.
        f1_macro_reference: Macro F1 of the reference.
        f1_macro_candidate: Macro F1 of the candidate.
        flips: Prediction changes (see :class:`Flips`).
        mcnemar: Paired test of equal accuracy (reference = A, candidate = B).
        per_class: Per-class changes (see :class:`ClassChange`).
    """

    accuracy_reference: float
    accuracy_candidate: float
    f1_macro_reference: float
    f1_macro_candidate: float
    flips: Flips
    mcnemar: McNemarResult
    per_class: list[ClassChange] = field(default_factory=list)

    @property
    def worst_class(self) -> ClassChange | None:
        """The class whose accuracy dropped most."""
        return max(self.per_class, key=lambda ch: ch.accuracy_drop, default=None)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["flips"] = self.flips.to_dict()
        worst = self.worst_class
        out["worst_class"] = None if worst is None else asdict(worst)
        return out


def compare_predictions(
    reference_pred: torch.Tensor | np.ndarray,
    candidate_pred: torch.Tensor | np.ndarray,
    target: torch.Tensor | np.ndarray,
    num_classes: int | None = None,
    classes: Sequence[str] | None = None,
) -> Comparison:
    """:class:`Comparison` of two prediction vectors on the same samples."""
    r, c, y = (torch.from_numpy(int_array(v)) for v in (reference_pred, candidate_pred, target))
    k = num_classes or int(max(r.max(), c.max(), y.max())) + 1
    cm_r, cm_c = confusion_matrix(r, y, k), confusion_matrix(c, y, k)
    return Comparison(
        accuracy_reference=accuracy(cm_r),
        accuracy_candidate=accuracy(cm_c),
        f1_macro_reference=f1_macro(cm_r),
        f1_macro_candidate=f1_macro(cm_c),
        flips=prediction_flips(r, c, y),
        mcnemar=mcnemar(r, c, y),
        per_class=per_class_degradation(r, c, y, k, classes),
    )


def compare(
    reference: nn.Module | str | os.PathLike[str],
    candidate: nn.Module | str | os.PathLike[str],
    data: Dataset,
    *,
    batch_size: int = 256,
) -> Comparison:
    """Compare two models (modules or ``.onnx`` paths) on ``data``: flips, McNemar, per-class drops."""
    from .api import model_logits  # api imports this module for evaluate_full

    arrays = as_arrays(data)
    lr = model_logits(reference, arrays, batch_size)
    lc = model_logits(candidate, arrays, batch_size)
    k = max(arrays.num_classes, lr.shape[1], lc.shape[1])
    return compare_predictions(lr.argmax(1), lc.argmax(1), arrays.y, k, arrays.classes)
