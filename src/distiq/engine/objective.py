"""What the training loop minimises: an ``Objective`` turns a batch into logits and loss terms.

Why a separate object: plain training, online and offline distillation and feature distillation all
share one loop (:func:`distiq.engine.train.train`); they differ only in how a batch becomes a loss.
An objective may own trainable parameters (feature adapters), which the loop optimises and
checkpoints with the model, and may need set-up (forward hooks) that must be undone at the end.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from distiq.data.arrays import ArrayDataset


class Objective(nn.Module):
    """Cross-entropy on the labels; subclasses add distillation terms.

    ``forward(model, x, y, index)`` returns ``(logits, terms)`` where ``terms["loss"]`` is what the
    optimiser minimises and the other entries are logged. ``index`` holds each row's position in the
    training set; when training augments (:class:`~distiq.data.views.ImageViews`), ``view * N +
    position``, so a cache per (sample, view) can look the row up.
    """

    def setup(self, model: nn.Module, train_data: ArrayDataset) -> None:
        """Called once before the first epoch (register hooks, build caches)."""

    def teardown(self) -> None:
        """Called once when training ends, also on error (remove hooks)."""

    def forward(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = model(x)
        ce = F.cross_entropy(logits, y)
        return logits, {"loss": ce, "ce": ce}
