"""Fast batching over in-memory datasets, and batched inference.

Why not ``DataLoader``: the datasets are tensors already (:class:`~distiq.data.arrays.ArrayDataset`);
slicing them by a permutation costs microseconds per batch, and carrying each sample's index lets
offline distillation look up the teacher's cached outputs for exactly those samples.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from distiq.data.arrays import ArrayDataset


def iterate_batches(
    data: ArrayDataset,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield ``(x, y, index)`` batches; ``index`` holds each row's position in ``data``."""
    n = len(data)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        yield data.x[idx], data.y[idx], idx


@torch.no_grad()
def predict_logits(model: nn.Module, data: ArrayDataset, batch_size: int = 1024) -> torch.Tensor:
    """Logits of ``model`` (in eval mode, restored afterwards) for every row of ``data``, in order."""
    was_training = model.training
    model.eval()
    try:
        outs = [model(x) for x, _, _ in iterate_batches(data, batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(outs) if outs else torch.empty(0)
