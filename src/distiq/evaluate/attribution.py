"""Does a compressed model look at the same evidence as its teacher? Attribution maps and their agreement.

A student can match its teacher's accuracy for different reasons: it may have learnt the same
strokes, or found a shortcut that happens to work on this test set. Attribution maps say which input
pixels drove each prediction; the rank correlation of a stage's map with the teacher's, image by
image, says whether the two models weigh the pixels in the same order.

Maps come from Captum (integrated gradients, Sundararajan et al., 2017, or plain gradient saliency,
Simonyan et al., 2014) with respect to the *true* class, so every model explains the same target.
A map is the attribution's magnitude summed over channels: evidence for and against a class both
count as "looked at". Agreement is Spearman's rho (scipy) of two flattened maps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from .stats import _scipy_stats

#: Attribution methods by name: Captum's class of each (imported on use: Captum pulls in matplotlib).
METHODS = {"integrated-gradients": "IntegratedGradients", "saliency": "Saliency"}
"""Attribution methods by the names a recipe uses."""


def attribution_maps(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    method: str = "integrated-gradients",
    *,
    steps: int = 32,
    batch_size: int = 64,
) -> torch.Tensor:
    """``[N, H, W]`` maps: ``|attribution|`` of ``model``'s logit for ``target`` summed over channels.

    Integrated gradients integrates from an all-zero input (the mean image once inputs are
    standardised) in ``steps`` steps; saliency is the gradient's magnitude at the input.

    Raises:
        ValueError: An unknown ``method``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown attribution method {method!r}; known: {', '.join(METHODS)}")
    was_training = model.training
    model.eval()
    from captum import attr

    explainer = getattr(attr, METHODS[method])(model)
    options = {"n_steps": steps} if method == "integrated-gradients" else {"abs": True}
    try:
        maps = [
            explainer.attribute(xb.clone().requires_grad_(True), target=tb, **options).detach()
            for xb, tb in zip(x.split(batch_size), target.split(batch_size), strict=True)
        ]
    finally:
        model.train(was_training)
    return torch.cat(maps).abs().sum(1)


def spearman(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> np.ndarray:
    """Spearman's rho of each pair of rows (maps flattened): ``[N]``; NaN where a map is constant."""
    a = np.asarray(a, dtype=float).reshape(len(a), -1)
    b = np.asarray(b, dtype=float).reshape(len(b), -1)
    rho = np.full(len(a), np.nan)
    for i, (u, v) in enumerate(zip(a, b, strict=True)):
        if np.ptp(u) > 0 and np.ptp(v) > 0:
            rho[i] = _scipy_stats().spearmanr(u, v).statistic
    return rho


def _mean(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else None


@dataclass
class StageAgreement:
    """How one model's attribution maps rank pixels against the reference's.

    Attributes:
        stage: The model's name.
        mean: Mean Spearman rho over the images (None when every map was constant).
        per_class: Mean rho over the images of each true class, by class name.
        per_image: Rho of each image (NaN where a map was constant).
    """

    stage: str
    mean: float | None
    per_class: dict[str, float | None] = field(default_factory=dict)
    per_image: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self) | {"per_image": [None if np.isnan(v) else v for v in self.per_image]}


def agreement(
    reference_maps: torch.Tensor,
    maps: torch.Tensor,
    target: torch.Tensor,
    classes: Sequence[str],
    stage: str = "model",
) -> StageAgreement:
    """Spearman agreement of ``maps`` with ``reference_maps``, overall and per true class."""
    rho = spearman(reference_maps, maps)
    y = target.numpy()
    per_class = {str(classes[c]): _mean(rho[y == c]) for c in np.unique(y)}
    return StageAgreement(stage, _mean(rho), per_class, [float(v) for v in rho])


def attribution_agreement(
    reference: nn.Module,
    models: Mapping[str, nn.Module],
    x: torch.Tensor,
    target: torch.Tensor,
    classes: Sequence[str],
    method: str = "integrated-gradients",
    *,
    steps: int = 32,
) -> tuple[list[StageAgreement], dict[str, torch.Tensor]]:
    """Every model's agreement with ``reference`` on the images ``x`` (true classes ``target``).

    Returns:
        One :class:`StageAgreement` per model (in ``models``' order), and the maps themselves by
        name (``"reference"`` for the reference's), for a figure.
    """
    maps = {"reference": attribution_maps(reference, x, target, method, steps=steps)}
    results = []
    for name, model in models.items():
        maps[name] = attribution_maps(model, x, target, method, steps=steps)
        results.append(agreement(maps["reference"], maps[name], target, classes, name))
    return results, maps
