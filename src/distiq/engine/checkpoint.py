"""Training checkpoints: safetensors for tensors, JSON for the rest, written atomically.

Layout of a checkpoint directory::

    state.json                 {"file": "ckpt-000003.safetensors", "epoch": 3, ...}
    ckpt-000003.safetensors    model.*, objective.*, optimizer.*, best.* tensors

The tensor file is written first and ``state.json`` is replaced last, in one rename, so a run killed
at any instant leaves either the previous checkpoint or the new one, never a mix.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from distiq.errors import DataError
from distiq.io import atomic_path, write_json_atomic

from .weights import read_safetensors

STATE_FILE = "state.json"


def flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer ``state_dict`` into tensors and JSON-safe values."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, slots in state["state"].items():
        for key, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{key}"] = value.detach().cpu().contiguous().clone()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"scalars": scalars, "param_groups": state["param_groups"]}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    """Inverse of :func:`flatten_optimizer`."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    for pid, slots in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(slots)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(directory: str | os.PathLike[str], tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write ``tensors`` and ``meta`` as the directory's current checkpoint; drop the old one."""
    directory = Path(directory)
    previous = _current(directory)
    name = f"ckpt-{int(meta.get('epoch', 0)):06d}.safetensors"
    with atomic_path(directory / name) as tmp:
        save_file(tensors, str(tmp))
    write_json_atomic(directory / STATE_FILE, {**meta, "file": name})
    if previous and previous != name:
        (directory / previous).unlink(missing_ok=True)
    return directory / name


def load_checkpoint(
    directory: str | os.PathLike[str],
) -> tuple[dict[str, torch.Tensor], dict] | None:
    """The directory's current checkpoint as ``(tensors, meta)``, or ``None`` if there is none."""
    directory = Path(directory)
    name = _current(directory)
    if name is None:
        return None
    meta = json.loads((directory / STATE_FILE).read_text())
    tensors, _ = read_safetensors(directory / name)
    return tensors, meta


def _current(directory: Path) -> str | None:
    state = directory / STATE_FILE
    if not state.is_file():
        return None
    try:
        name = json.loads(state.read_text())["file"]
    except (ValueError, KeyError) as e:
        raise DataError(f"{state}: corrupt checkpoint state ({e})") from None
    if not (directory / name).is_file():
        raise DataError(f"{state}: names {name}, which is missing")
    return name


def prefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``tensors`` with every key prefixed by ``prefix.``."""
    return {f"{prefix}.{k}": v for k, v in tensors.items()}


def section(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors whose key starts with ``prefix.``, with the prefix removed."""
    p = prefix + "."
    return {k[len(p) :]: v for k, v in tensors.items() if k.startswith(p)}
