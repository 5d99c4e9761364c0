"""The distillation objective: hard-label cross-entropy, a logit term and feature terms, mixed.

``loss = alpha · logit_term(student, teacher) + (1 - alpha) · CE(student, y) + Σ_k w_k · feature_k``

Teacher logits come from the teacher run on each batch (online) or from a cache computed once
(offline, :mod:`distiq.distill.offline`). Features are read with forward hooks keyed by module path
and removed in :meth:`DistillObjective.teardown`, so neither model's ``forward`` is touched.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from distiq.data.arrays import ArrayDataset
from distiq.engine.objective import Objective
from distiq.errors import DistiqError
from distiq.models.hooks import capture, feature_shapes

from .features import FEATURES
from .logits import LogitLoss


@dataclass
class FeatureSpec:
    """One feature-distillation term.

    Attributes:
        kind: A registered feature term (:data:`~distiq.distill.features.FEATURES`): "hint" (FitNets),
            "attention" (attention transfer), "merge" (layer merging) or one of the user's.
        student: Module path of the student layer.
        teacher: Module path of the teacher layer; a list of paths for "merge".
        weight: Multiplier of this term in the loss.
    """

    kind: str
    student: str
    teacher: str | list[str]
    weight: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in FEATURES:
            raise DistiqError(f"features.kind: {FEATURES.unknown(self.kind)}")
        many = self.many_teachers
        if not many and not isinstance(self.teacher, str):
            raise DistiqError(f"features.teacher: {self.kind} takes one teacher layer, got {self.teacher!r}")
        if isinstance(self.teacher, str) and many:
            self.teacher = [self.teacher]

    @property
    def many_teachers(self) -> bool:
        return bool(getattr(FEATURES.get(self.kind), "many_teachers", False))

    @property
    def teacher_layers(self) -> list[str]:
        return [self.teacher] if isinstance(self.teacher, str) else list(self.teacher)


def _build_term(spec: FeatureSpec, s_shapes: dict, t_shapes: dict) -> nn.Module:
    s = s_shapes[spec.student][1:]  # shapes without the batch dimension
    ts = [t_shapes[t][1:] for t in spec.teacher_layers]
    try:
        return FEATURES.get(spec.kind)(s, ts if spec.many_teachers else ts[0])
    except ValueError as e:
        raise DistiqError(f"features {spec.kind} {spec.student} <- {spec.teacher}: {e}") from None


class DistillObjective(Objective):
    """Mixes cross-entropy, a logit distillation loss and feature terms (see module docstring).

    Args:
        student: The model being trained (used to size the feature adapters).
        teacher: The fixed teacher; kept in eval mode, never receives gradients.
        logit_loss: A registered logit loss module (``make_logit_loss``).
        alpha: Weight of the logit term; ``1 - alpha`` weights the cross-entropy.
        features: Feature terms by layer name.
        example_input: One batch of inputs, to probe feature shapes.
        cached_logits: Teacher logits per training sample (offline KD), or ``None`` (online).
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        logit_loss: LogitLoss,
        alpha: float,
        features: list[FeatureSpec],
        example_input: torch.Tensor,
        cached_logits: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise DistiqError(f"alpha: expected a weight in [0, 1], got {alpha}")
        if cached_logits is not None and features:
            raise DistiqError("offline KD caches logits only; feature terms need the teacher online")
        self.teacher = [teacher]  # a list keeps it out of this module's parameters and state
        self.logit_loss = logit_loss
        self.alpha = float(alpha)
        self.specs = features
        self.cached_logits = cached_logits
        s_shapes = feature_shapes(student, [f.student for f in features], example_input)
        t_shapes = feature_shapes(teacher, [t for f in features for t in f.teacher_layers], example_input)
        self.terms = nn.ModuleList(_build_term(f, s_shapes, t_shapes) for f in features)
        self._hooks = contextlib.ExitStack()
        self._s_feats: dict = {}
        self._t_feats: dict = {}

    def setup(self, model: nn.Module, train_data: ArrayDataset) -> None:
        teacher = self.teacher[0]
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        if self.specs:
            self._s_feats = self._hooks.enter_context(capture(model, [f.student for f in self.specs]))
            t_paths = [t for f in self.specs for t in f.teacher_layers]
            self._t_feats = self._hooks.enter_context(capture(teacher, t_paths))

    def teardown(self) -> None:
        self._hooks.close()

    def forward(self, model, x, y, index):
        if self.cached_logits is not None:
            t_logits = self.cached_logits[index]
        else:
            with torch.no_grad():
                t_logits = self.teacher[0](x)
        logits = model(x)
        ce = F.cross_entropy(logits, y)
        distill = self.logit_loss(logits, t_logits, y)
        terms = {"ce": ce, "distill": distill}
        loss = self.alpha * distill + (1.0 - self.alpha) * ce
        for spec, term in zip(self.specs, self.terms, strict=True):
            t_feats = [self._t_feats[t] for t in spec.teacher_layers]
            value = term(self._s_feats[spec.student], t_feats if spec.many_teachers else t_feats[0])
            terms[f"{spec.kind}:{spec.student}"] = value
            loss = loss + spec.weight * value
        terms["loss"] = loss
        return logits, terms
