"""Offline distillation: the teacher's outputs computed once, cached on disk, reused every epoch.

Why: the teacher is usually far bigger than the student, so running it on every batch dominates the
cost of online KD. Its outputs are the same every epoch, so they can be computed once: per training
image, or, when training augments the images, per image and view of the finite set
:class:`~distiq.data.views.ImageViews` draws from. The cache file is keyed by a hash of the teacher's
weights, the data and the views, so a changed teacher, dataset or augmentation never reuses stale
outputs.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from distiq.data.arrays import ArrayDataset
from distiq.data.views import ImageViews
from distiq.engine import distributed as dd
from distiq.engine.batches import predict_logits
from distiq.engine.weights import read_safetensors, state_tensors
from distiq.errors import DataError
from distiq.io import atomic_path

NO_VIEWS = ImageViews()


def fingerprint(teacher: nn.Module, data: ArrayDataset, views: ImageViews = NO_VIEWS) -> str:
    """A hash of the teacher's weights, the data it is run on and the views of it (none: the hash
    of caches written before views existed)."""
    h = hashlib.sha256()
    if views.count > 1:
        h.update(f"views flip={views.flip} shift={views.shift}".encode())
    for name, tensor in sorted(state_tensors(teacher).items()):
        h.update(name.encode())
        h.update(tensor.numpy().tobytes())
    h.update(data.x.numpy().tobytes())
    h.update(data.y.numpy().tobytes())
    return h.hexdigest()[:20]


def teacher_logits(
    teacher: nn.Module,
    data: ArrayDataset,
    cache_dir: str | os.PathLike[str] | None = None,
    batch_size: int = 1024,
    views: ImageViews = NO_VIEWS,
) -> torch.Tensor:
    """The teacher's logits for every row of ``data`` and view of it, from ``cache_dir`` when already
    computed.

    Returns:
        A ``[views.count * len(data), num_classes]`` tensor, row ``v * len(data) + i`` for view ``v``
        of sample ``i`` (row ``i`` for sample ``i`` without views).
    """
    dd.init_from_env()
    rows = views.count * len(data)
    if cache_dir is None:
        return _all_views(teacher, data, batch_size, views)
    path = Path(cache_dir) / f"teacher-logits-{fingerprint(teacher, data, views)}.safetensors"
    dd.barrier()  # every rank sees the same cache: none is being written between these barriers
    if path.exists():
        tensors, _ = read_safetensors(path)
        logits = tensors.get("logits")
        if logits is None or logits.ndim != 2 or len(logits) != rows:
            raise DataError(f"{path}: cached teacher logits do not match the {rows} samples and views")
        return logits
    logits = _all_views(teacher, data, batch_size, views)
    if dd.is_main():
        with atomic_path(path) as tmp:
            save_file({"logits": logits.contiguous()}, str(tmp))
    dd.barrier()
    return logits


def _all_views(teacher: nn.Module, data: ArrayDataset, batch_size: int, views: ImageViews) -> torch.Tensor:
    """The teacher's logits for view 0 of every sample, then view 1, and so on."""
    if views.count == 1:
        return _computed(teacher, data, batch_size)
    parts = []
    for view in range(views.count):
        chunks = [views.apply(x, torch.full((len(x),), view)) for x in data.x.split(batch_size)]
        shown = ArrayDataset(torch.cat(chunks), data.y, data.classes, data.name)
        parts.append(_computed(teacher, shown, batch_size))
    return torch.cat(parts)


def _computed(teacher: nn.Module, data: ArrayDataset, batch_size: int) -> torch.Tensor:
    """The teacher run over ``data``; under torch.distributed each rank runs its shard, then all gather."""
    rows = dd.shard(torch.arange(len(data)))
    part = predict_logits(teacher, data.subset(rows) if dd.world_size() > 1 else data, batch_size)
    return dd.gather_rows(part, rows, len(data))
