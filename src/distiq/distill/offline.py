"""Offline distillation: the teacher's outputs computed once, cached on disk, reused every epoch.

Why: the teacher is usually far bigger than the student, so running it on every batch dominates the
cost of online KD. Without data augmentation its outputs are the same every epoch, so they can be
computed once. The cache file is keyed by a hash of the teacher's weights and of the data, so a
changed teacher or dataset never reuses stale outputs.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from distiq.data.arrays import ArrayDataset
from distiq.engine import distributed as dd
from distiq.engine.batches import predict_logits
from distiq.engine.weights import read_safetensors, state_tensors
from distiq.errors import DataError
from distiq.io import atomic_path


def fingerprint(teacher: nn.Module, data: ArrayDataset) -> str:
    """A hash of the teacher's weights and the data it is run on."""
    h = hashlib.sha256()
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
) -> torch.Tensor:
    """The teacher's logits for every row of ``data``, from ``cache_dir`` when already computed.

    Returns:
        A ``[len(data), num_classes]`` tensor, row ``i`` for sample ``i``.
    """
    dd.init_from_env()
    if cache_dir is None:
        return _computed(teacher, data, batch_size)
    path = Path(cache_dir) / f"teacher-logits-{fingerprint(teacher, data)}.safetensors"
    dd.barrier()  # every rank sees the same cache: none is being written between these barriers
    if path.exists():
        tensors, _ = read_safetensors(path)
        logits = tensors.get("logits")
        if logits is None or logits.ndim != 2 or len(logits) != len(data):
            raise DataError(f"{path}: cached teacher logits do not match the {len(data)} samples")
        return logits
    logits = _computed(teacher, data, batch_size)
    if dd.is_main():
        with atomic_path(path) as tmp:
            save_file({"logits": logits.contiguous()}, str(tmp))
    dd.barrier()
    return logits


def _computed(teacher: nn.Module, data: ArrayDataset, batch_size: int) -> torch.Tensor:
    """The teacher run over ``data``; under torch.distributed each rank runs its shard, then all gather."""
    rows = dd.shard(torch.arange(len(data)))
    part = predict_logits(teacher, data.subset(rows) if dd.world_size() > 1 else data, batch_size)
    return dd.gather_rows(part, rows, len(data))
