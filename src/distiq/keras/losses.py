"""distiq's distillation losses as Keras ``DistillationLoss`` objects.

Why adapters and not new losses: the math lives once, in :mod:`distiq.distill.functional`, wrapped by
the registered logit losses (:data:`~distiq.distill.logits.LOGIT_LOSSES`: kd, mse, hard-kd, dkd, and
any the user registers) and feature terms (:data:`~distiq.distill.features.FEATURES`: hint,
attention). On Keras's torch backend the tensors Keras hands a ``DistillationLoss`` are torch tensors,
so the adapters only reorder arguments (Keras passes the teacher first, distiq the student), give the
losses that need them the batch's labels, and turn Keras's channels-last feature maps into the
``[N, C, H, W]`` maps distiq's feature terms expect.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import torch
from torch import nn

from distiq.distill.features import FEATURES
from distiq.distill.logits import make_logit_loss
from distiq.errors import DistiqError

LABEL_FREE = ("kd", "mse")  # logit losses whose value does not depend on the labels


def labels(y: Any) -> torch.Tensor:
    """Keras targets as distiq's int64 ``[N]`` class indices: sparse labels (``[N]`` or ``[N, 1]``)
    as they are, one-hot or soft labels (``[N, K]``) by their argmax."""
    y = torch.as_tensor(y)
    if y.dim() == 2 and y.shape[1] > 1:
        y = y.argmax(dim=1)
    return y.reshape(-1).long()


class DistiqLogits(keras.distillation.DistillationLoss):
    """A registered distiq logit loss between the teacher's and the student's final outputs.

    Args:
        loss: Registered name: "kd", "mse", "hard-kd", "dkd" or one of the user's.
        temperature: Softening temperature (ignored by "mse").
        **options: The loss's own options, e.g. ``alpha=1.0, beta=8.0`` for DKD.

    The outputs must be logits (a final ``Dense`` without softmax), as for Keras's own
    ``LogitsDistillation``. Losses that weigh samples by their true class (hard-kd, dkd) read the
    labels of the batch, which :class:`distiq.keras.Distiller` sets before each loss is computed.
    """

    teacher_layer_name = None  # Keras's Distiller: final outputs, not a layer's
    student_layer_name = None

    def __init__(self, loss: str = "kd", temperature: float = 3.0, **options: Any) -> None:
        try:
            self.fn = make_logit_loss(loss, temperature=temperature, **options)
        except ValueError as e:
            raise DistiqError(f"distillation_losses: {e}") from None
        self.loss, self.temperature, self.options = loss, float(temperature), dict(options)
        self.target: torch.Tensor | None = None

    def compute_loss(self, teacher_outputs, student_outputs, target=None, **kwargs):
        """``fn(student, teacher, labels)``, a scalar; labels are needed by hard-kd and dkd only."""
        target = self.target if target is None else labels(target)
        if target is None and self.loss not in LABEL_FREE:
            raise DistiqError(f"distillation loss {self.loss!r} needs the batch's labels (fit with y)")
        if target is None:
            target = torch.zeros(student_outputs.shape[0], dtype=torch.long)
        return self.fn(student_outputs, teacher_outputs, target)

    def get_config(self) -> dict:
        return {"loss": self.loss, "temperature": self.temperature, **self.options}


def _map_shape(shape: Sequence[int | None]) -> tuple[int, ...]:
    """A Keras layer's output shape without the batch, as distiq's ``(C, H, W)`` or ``(D,)``."""
    dims = tuple(int(d) for d in shape[1:])
    return (dims[2], dims[0], dims[1]) if len(dims) == 3 else dims


def channels_first(x: torch.Tensor) -> torch.Tensor:
    """A channels-last ``[N, H, W, C]`` Keras map as ``[N, C, H, W]``; vectors unchanged."""
    return x.permute(0, 3, 1, 2) if x.dim() == 4 else x


class DistiqFeature(keras.distillation.DistillationLoss):
    """A distiq feature term ("hint", "attention") between a teacher layer and a student layer.

    Built for the two layers' output shapes when the Distiller checks the models
    (:meth:`validate_model_compatibility`); a term with parameters (the hint's 1x1 adapter) is trained
    with the student, by the Distiller's optimiser, and dropped with the Distiller.

    Args:
        kind: A registered single-teacher feature term ("hint", "attention" or one of the user's).
        teacher_layer_name: Name of the teacher layer (a Functional or Sequential model's).
        student_layer_name: Name of the student layer.
    """

    def __init__(self, kind: str, teacher_layer_name: str, student_layer_name: str) -> None:
        if kind not in FEATURES:
            raise DistiqError(f"distillation_losses: {FEATURES.unknown(kind)}")
        if getattr(FEATURES.get(kind), "many_teachers", False):
            raise DistiqError(
                f"distillation_losses: {kind!r} takes several teacher layers and Keras's Distiller gives "
                "a loss one; use dq.distill(..., features=[...]) on the models for it"
            )
        self.kind = kind
        self.teacher_layer_name, self.student_layer_name = teacher_layer_name, student_layer_name
        self.term: nn.Module | None = None

    def validate_model_compatibility(self, teacher, student) -> None:
        """Check both layers exist in graph models and build the term for their output shapes."""
        for role, model, name in (
            ("teacher", teacher, self.teacher_layer_name),
            ("student", student, self.student_layer_name),
        ):
            if getattr(model, "inputs", None) is None:
                raise DistiqError(
                    f"{self.kind}: the {role} is a subclassed model; "
                    "feature terms need a Functional or Sequential one"
                )
            try:
                model.get_layer(name=name)
            except ValueError as e:
                raise DistiqError(f"{self.kind}: in the {role} model: {e}") from None
        s = _map_shape(student.get_layer(name=self.student_layer_name).output.shape)
        t = _map_shape(teacher.get_layer(name=self.teacher_layer_name).output.shape)
        try:
            self.term = FEATURES.get(self.kind)(s, t)
        except ValueError as e:
            raise DistiqError(
                f"{self.kind} {self.student_layer_name} <- {self.teacher_layer_name}: {e}"
            ) from None

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        return self.term(channels_first(student_outputs), channels_first(teacher_outputs))

    def get_config(self) -> dict:
        return {
            "kind": self.kind,
            "teacher_layer_name": self.teacher_layer_name,
            "student_layer_name": self.student_layer_name,
        }


def as_distillation_loss(entry: Any) -> keras.distillation.DistillationLoss:
    """A Keras ``DistillationLoss`` (kept as is), a distiq loss name ("dkd") or a dict
    (``{"loss": "dkd", "temperature": 4, "beta": 8}`` or ``{"kind": "hint", "teacher_layer_name": ...,
    "student_layer_name": ...}``) as a distillation loss."""
    if isinstance(entry, keras.distillation.DistillationLoss):
        return entry
    if isinstance(entry, str):
        return DistiqLogits(entry)
    if isinstance(entry, dict) and "kind" in entry:
        return DistiqFeature(**entry)
    if isinstance(entry, dict):
        return DistiqLogits(**entry)
    raise DistiqError(
        "distillation_losses: expected a keras.distillation.DistillationLoss, a distiq loss name "
        f"(kd, mse, hard-kd, dkd) or a dict of one, got {type(entry).__name__}"
    )
