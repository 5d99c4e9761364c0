"""Model weights as safetensors files: nothing is ever unpickled from disk.

The model's ``config`` (name and constructor options, set by :func:`distiq.models.create`) travels in
the file's metadata, so :func:`load_model` can rebuild the architecture from the file alone.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from distiq.errors import DataError, DistiqError
from distiq.io import atomic_path


def state_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """A module's state dict as contiguous, unshared CPU tensors (what safetensors requires)."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}


def save_weights(model: nn.Module, path: str | os.PathLike[str], metadata: dict | None = None) -> Path:
    """Write ``model``'s weights (and its ``config``, if any) to a safetensors file, atomically."""
    meta = {"format": "distiq-weights"}
    config = getattr(model, "config", None)
    if config is not None:
        meta["config"] = json.dumps(config)
    meta.update({k: json.dumps(v) for k, v in (metadata or {}).items()})
    with atomic_path(path) as tmp:
        save_file(state_tensors(model), str(tmp), metadata=meta)
    return Path(path)


def read_safetensors(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and metadata of a safetensors file; a missing or corrupt file names its path."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: weights file not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable safetensors file ({e})") from None
    return tensors, meta


def load_weights(model: nn.Module, path: str | os.PathLike[str], strict: bool = True) -> nn.Module:
    """Load weights from ``path`` into ``model`` in place; mismatches name the layer and shapes."""
    tensors, _ = read_safetensors(path)
    own = model.state_dict()
    problems = [
        f"{k}: file has {tuple(v.shape)}, model has {tuple(own[k].shape)}"
        for k, v in tensors.items()
        if k in own and own[k].shape != v.shape
    ]
    if strict:
        problems += [f"{k}: missing from file" for k in own if k not in tensors]
        problems += [f"{k}: not in model" for k in tensors if k not in own]
    if problems:
        shown = "; ".join(problems[:5]) + (" ..." if len(problems) > 5 else "")
        raise DistiqError(f"{path}: weights do not fit {type(model).__name__}: {shown}")
    model.load_state_dict({k: v for k, v in tensors.items() if k in own}, strict=strict)
    return model


def read_config(path: str | os.PathLike[str]) -> dict:
    """The model config stored in a weights file (``DistiqError`` if it has none)."""
    _, meta = read_safetensors(path)
    if "config" not in meta:
        raise DistiqError(f"{path}: no model config in metadata; create the model and load_weights")
    return json.loads(meta["config"])


def load_model(path: str | os.PathLike[str]) -> nn.Module:
    """Rebuild a model from the config stored in its weights file, then load the weights."""
    from distiq.models import create_from_config  # models sit beside engine; imported when needed

    model = create_from_config(read_config(path))
    return load_weights(model, path)
