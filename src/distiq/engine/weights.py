"""Model weights as safetensors files: nothing is ever unpickled from disk.

The model's ``config`` (name and constructor options, set by :func:`distiq.models.create`) travels in
the file's metadata, so :func:`load_model` can rebuild the architecture from the file alone. The
config is data: it names a registered model, or a user factory that the caller allowed (``allow_code``);
see :func:`distiq.models.create_from_config`. A tensor holding NaN or inf is refused at load, because
such weights evaluate to chance accuracy without any other sign that they are broken.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import nn

from distiq.errors import DataError, DistiqError
from distiq.io import write_bytes_atomic


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
    write_bytes_atomic(path, canonical_safetensors(save(state_tensors(model), metadata=meta)))
    return Path(path)


def canonical_safetensors(blob: bytes) -> bytes:
    """The same safetensors file with its JSON header's keys sorted.

    Why: the library writes the metadata map in a random order, so saving the same weights twice gave
    files with different bytes (and hashes) — and a rerun's output could not be compared by hash.
    """
    (n,) = struct.unpack_from("<Q", blob)
    header = json.dumps(json.loads(blob[8 : 8 + n]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # the data stays 8-byte aligned, as the library writes it
    return struct.pack("<Q", len(header)) + header + blob[8 + n :]


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


def check_finite(tensors: Mapping[str, torch.Tensor], path: str | os.PathLike[str]) -> None:
    """Refuse weights holding NaN or inf, naming the file, the first such tensor and its count."""
    bad = {}
    for name, tensor in tensors.items():
        if tensor.is_floating_point() or tensor.is_complex():
            count = int((~torch.isfinite(tensor)).sum())
            if count:
                bad[name] = count
    if bad:
        name, count = next(iter(bad.items()))
        more = f" (and {len(bad) - 1} more tensors)" if len(bad) > 1 else ""
        raise DataError(f"{path}: tensor {name!r} has {count} non-finite values (NaN/inf){more}; not loaded")


def load_weights(model: nn.Module, path: str | os.PathLike[str], strict: bool = True) -> nn.Module:
    """Load weights from ``path`` into ``model`` in place; mismatches name the layer and shapes.

    Raises:
        DataError: a missing or corrupt file, or a tensor with NaN/inf values.
        DistiqError: tensors that do not fit the model.
    """
    tensors, _ = read_safetensors(path)
    check_finite(tensors, path)
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
    """The model config stored in a weights file (``DistiqError`` if it has none or it is not JSON)."""
    _, meta = read_safetensors(path)
    if "config" not in meta:
        raise DistiqError(f"{path}: no model config in metadata; create the model and load_weights")
    try:
        return json.loads(meta["config"])
    except ValueError as e:
        raise DataError(f"{path}: model config in metadata is not JSON ({e})") from None


def load_model(path: str | os.PathLike[str], *, allow_code: str | Iterable[str] = ()) -> nn.Module:
    """Rebuild a model from the config stored in its weights file, then load the weights.

    Args:
        path: A safetensors file written by distiq.
        allow_code: ``"package.module:factory"`` references the file may name (the user's own models);
            a file naming any other is refused before anything is imported.
    """
    from distiq.models import create_from_config  # models sit beside engine; imported when needed

    model = create_from_config(read_config(path), allow_code=allow_code, source=str(path))
    return load_weights(model, path)
