"""Logit distillation losses, registered by the name a recipe or ``dq.distill(loss=...)`` uses.

Each loss is a small ``nn.Module`` around a function of :mod:`distiq.distill.functional`, with one
interface so the trainer never special-cases a method: the constructor takes keyword options and
``forward(student_logits, teacher_logits, target)`` returns a scalar. A user adds a method in a file
of their own::

    @LOGIT_LOSSES.register("my-kd")
    class MyKD(LogitLoss):
        def __init__(self, temperature: float = 4.0, margin: float = 0.1) -> None: ...
        def forward(self, student_logits, teacher_logits, target): ...

The modules detach the teacher's logits: they are the student's objective and the teacher is fixed.
Online (mutual) distillation, where both learn, calls the functions directly.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from distiq.distill import functional as Fd
from distiq.registry import Registry

LOGIT_LOSSES: Registry[type[LogitLoss]] = Registry("distillation loss")


def _positive(name: str, value: float) -> float:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return float(value)


def _non_negative(name: str, value: float) -> float:
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return float(value)


class LogitLoss(nn.Module):
    """Base class: ``forward(student_logits [N, K], teacher_logits [N, K], target [N]) -> scalar``."""

    def forward(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        options = {k: v for k, v in vars(self).items() if type(v) in (int, float)}
        return ", ".join(f"{k}={v}" for k, v in options.items())


@LOGIT_LOSSES.register("kd")
class KDLoss(LogitLoss):
    """Hinton et al. (2015) KD: ``T² · KL(teacher_T ‖ student_T)``; see :func:`functional.kd`."""

    def __init__(self, temperature: float = 4.0) -> None:
        super().__init__()
        self.temperature = _positive("temperature", temperature)

    def forward(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        return Fd.kd(student_logits, teacher_logits.detach(), self.temperature)


@LOGIT_LOSSES.register("mse")
class LogitMSELoss(LogitLoss):
    """Ba & Caruana (2014) logit matching; see :func:`functional.logit_mse`.

    Accepts ``temperature`` and ignores it, so a recipe can switch ``loss`` between methods without
    editing the other options.
    """

    def __init__(self, temperature: float = 4.0) -> None:
        super().__init__()
        _positive("temperature", temperature)

    def forward(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        return Fd.logit_mse(student_logits, teacher_logits.detach())


@LOGIT_LOSSES.register("hard-kd")
class HardKDLoss(LogitLoss):
    """KD weighted towards samples the student still gets wrong; see :func:`functional.hard_kd`.

    Args:
        temperature: ``T`` of the KL term.
        gamma: Focal exponent on ``1 - p_student(true class)``.
        disagreement: Extra weight where student and teacher predict different classes.
    """

    def __init__(self, temperature: float = 4.0, gamma: float = 2.0, disagreement: float = 1.0) -> None:
        super().__init__()
        self.temperature = _positive("temperature", temperature)
        self.gamma = _non_negative("gamma", gamma)
        self.disagreement = _non_negative("disagreement", disagreement)

    def forward(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        return Fd.hard_kd(
            student_logits,
            teacher_logits.detach(),
            target,
            self.temperature,
            self.gamma,
            self.disagreement,
        )


@LOGIT_LOSSES.register("dkd")
class DKDLoss(LogitLoss):
    """Decoupled KD (Zhao et al., 2022): ``alpha·TCKD + beta·NCKD``; see :func:`functional.dkd`.

    ``alpha`` here weights the target-class term; it is not the trainer's ``alpha`` that mixes the
    distillation loss with cross-entropy.
    """

    def __init__(self, temperature: float = 4.0, alpha: float = 1.0, beta: float = 8.0) -> None:
        super().__init__()
        self.temperature = _positive("temperature", temperature)
        self.alpha = _non_negative("alpha", alpha)
        self.beta = _non_negative("beta", beta)

    def forward(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        return Fd.dkd(
            student_logits,
            teacher_logits.detach(),
            target,
            self.alpha,
            self.beta,
            self.temperature,
        )


def logit_loss_options(name: str) -> dict[str, Any]:
    """The options the loss ``name`` accepts, with their defaults (for CLI help and recipes)."""
    params = inspect.signature(LOGIT_LOSSES.get(name)).parameters.values()
    return {p.name: p.default for p in params if p.kind is not p.VAR_KEYWORD}


def make_logit_loss(name: str, **options: Any) -> LogitLoss:
    """Build the registered loss ``name`` with ``options``.

    Options are checked against the constructor's signature so a typo in a recipe fails at build
    time, naming the loss and what it accepts, instead of being silently ignored.

    Raises:
        ValueError: Unknown name (listing the known ones), unknown option, or a bad value.
    """
    cls = LOGIT_LOSSES.get(name)
    params = inspect.signature(cls).parameters.values()
    if not any(p.kind is p.VAR_KEYWORD for p in params):
        accepted = [p.name for p in params]
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise ValueError(
                f"distillation loss {name!r} does not accept option(s) {', '.join(unknown)}; "
                f"accepted: {', '.join(accepted) or '(none)'}"
            )
    return cls(**options)
