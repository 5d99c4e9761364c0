"""``distiq.keras.Distiller``: Keras's own ``keras.distillation.Distiller`` with distiq's losses.

Why a subclass: a Keras user's script (``Distiller(teacher=..., student=..., distillation_losses=...)``,
``compile(optimizer, loss, metrics)``, ``fit``, ``evaluate``, ``predict``, ``distiller.student``) must
move over by changing only the import, and the surest way to behave as Keras's Distiller is to be it:
the constructor's checks, the ``student_loss_weight · student_loss + (1 - student_loss_weight) ·
Σ w_k · distillation_loss_k`` objective, the loss trackers and ``call`` returning the student's
predictions are Keras's code. What this class adds:

- ``distillation_losses`` may be omitted (logit KD at temperature 3, distiq's ``kd``: the
  ``T² · KL(softmax(t/T) ‖ softmax(s/T))`` of Hinton et al.), or name distiq's losses: "kd", "mse",
  "hard-kd", "dkd" (or a dict with their options), and feature terms by layer name
  (``{"kind": "hint", "teacher_layer_name": ..., "student_layer_name": ...}``); Keras's own
  ``LogitsDistillation`` and ``FeatureDistillation`` objects are used as they are.
- the batch's labels reach the losses that need them (DKD, hard-sample KD), which Keras's interface
  (``compute_loss(teacher_outputs, student_outputs)``) does not pass;
- the parameters of feature adapters (the hint's 1x1 convolution) are trained with the student.
"""

from __future__ import annotations

from typing import Any

import keras
from torch import nn

from .losses import DistiqFeature, DistiqLogits, as_distillation_loss, labels


def default_losses() -> DistiqLogits:
    """Logit KD at temperature 3 (Keras's ``LogitsDistillation`` default temperature)."""
    return DistiqLogits("kd", temperature=3.0)


class Distiller(keras.distillation.Distiller):
    """A ``keras.Model`` training ``student`` from the frozen ``teacher`` (see the module docstring).

    Args:
        teacher: A trained ``keras.Model``; frozen.
        student: The ``keras.Model`` to train; after ``fit``, ``distiller.student`` is it.
        distillation_losses: One loss or a list: Keras ``DistillationLoss`` objects, distiq loss names
            ("kd", "mse", "hard-kd", "dkd") or dicts (``{"loss": "dkd", "temperature": 4, "beta": 8}``,
            ``{"kind": "hint", "teacher_layer_name": ..., "student_layer_name": ...}``).
            ``None``: distiq's KD at temperature 3.
        distillation_loss_weights: One weight per loss of a list (``None``: all 1), as in Keras.
        student_loss_weight: Weight in ``[0, 1]`` of the supervised loss given to ``compile``; the
            distillation losses get ``1 - student_loss_weight``.
        name: The model's name.
        **kwargs: Passed to ``keras.Model``.
    """

    def __init__(
        self,
        teacher: keras.Model,
        student: keras.Model,
        distillation_losses: Any = None,
        distillation_loss_weights: list[float] | None = None,
        student_loss_weight: float = 0.5,
        name: str = "distiller",
        **kwargs: Any,
    ) -> None:
        if distillation_losses is None:
            distillation_losses = default_losses()
        elif isinstance(distillation_losses, list | tuple):
            distillation_losses = [as_distillation_loss(entry) for entry in distillation_losses]
        else:
            distillation_losses = as_distillation_loss(distillation_losses)
        super().__init__(
            teacher,
            student,
            distillation_losses,
            distillation_loss_weights=distillation_loss_weights,
            student_loss_weight=student_loss_weight,
            name=name,
            **kwargs,
        )
        adapters = [
            loss.term
            for loss in self.distillation_losses
            if isinstance(loss, DistiqFeature) and any(p.requires_grad for p in loss.term.parameters())
        ]
        if adapters:  # a Keras layer around them: Keras's optimiser then updates them with the student
            self.feature_adapters = keras.layers.TorchModuleWrapper(nn.ModuleList(adapters))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Keras's combined loss, with the batch's labels lent to the distiq losses while it runs."""
        lent = [loss for loss in self.distillation_losses if isinstance(loss, DistiqLogits)]
        target = None if y is None or isinstance(y, list | tuple | dict) else labels(y)
        for loss in lent:
            loss.target = target
        try:
            return super().compute_loss(
                x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training
            )
        finally:
            for loss in lent:
                loss.target = None
