"""Training checkpoints: safetensors for tensors, JSON for the rest, written atomically.

Layout of a checkpoint directory::

    state.json                 {"file": "ckpt-000003.safetensors", "epoch": 3, ...}
    ckpt-000003.safetensors    model.*, objective.*, optimizer.*, best.* tensors

The tensor file is written first and ``state.json`` is replaced last, in one rename, so a run killed
at any instant leaves either the previous checkpoint or the new one, never a mix.

``state.json`` also records what made the checkpoint: the training options
(:meth:`TrainConfig.identity`) and the caller's ``inputs`` (model, data and input files' hashes).
:func:`input_changes` compares them with a rerun's, so a checkpoint is resumed only by the training
that made it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from distiq.errors import DataError
from distiq.io import atomic_path, write_json_atomic

from .config import TrainConfig
from .weights import read_safetensors

STATE_FILE = "state.json"
_TENSOR_FILE = re.compile(r"ckpt-\d{6,}\.safetensors")
# what resuming reads from state.json, and the type each must have
_META = {"epoch": int, "history": list, "best_epoch": int, "stopped": str, "optimizer": dict}


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
    """The directory's current checkpoint as ``(tensors, meta)``, or ``None`` if there is none.

    Raises:
        DataError: ``state.json`` is not what :func:`save_checkpoint` writes, or names a missing or
            unreadable tensor file; the message names the file.
    """
    directory = Path(directory)
    name = _current(directory)
    if name is None:
        return None
    meta = _read_state(directory / STATE_FILE)
    for key, kind in _META.items():
        if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool):
            raise _corrupt(directory / STATE_FILE, f"{key!r} missing or not {kind.__name__}")
    tensors, _ = read_safetensors(directory / name)
    return tensors, meta


def checkpoint_file(directory: str | os.PathLike[str] | None) -> Path | None:
    """The tensor file of the directory's current checkpoint, or ``None`` (no directory, none yet)."""
    if not directory:
        return None
    name = _current(Path(directory))
    return Path(directory) / name if name else None


def clear_checkpoint(directory: str | os.PathLike[str]) -> None:
    """Remove the directory's checkpoint (a run told to start fresh); other files stay."""
    directory = Path(directory)
    (directory / STATE_FILE).unlink(missing_ok=True)
    for path in directory.glob("ckpt-*.safetensors"):
        path.unlink()


def input_changes(meta: dict, cfg: TrainConfig, inputs: object) -> list[str]:
    """What differs between the training that made a checkpoint and ``cfg``/``inputs`` (empty: none).

    ``epochs`` alone may grow: the run then continues, and ends as a fresh run with the new count
    would, provided the learning rates of the epochs already done are unchanged (true of a constant
    schedule, not of a cosine one over more epochs).
    """
    before = meta.get("config")
    if not isinstance(before, dict):
        return ["it records no training options (made by an older distiq)"]
    now = plain(cfg.identity())
    changes = [
        f"{k}: {before.get(k)!r} -> {now.get(k)!r}"
        for k in sorted(set(before) | set(now))
        if k != "epochs" and before.get(k) != now.get(k)
    ]
    done = int(meta.get("epoch", 0))
    if not changes and before.get("epochs") != cfg.epochs and not _extends(before, cfg, done):
        changes.append(f"epochs: {before.get('epochs')!r} -> {cfg.epochs} after {done} done")
    earlier, inputs = meta.get("inputs"), plain(inputs)
    if earlier != inputs:
        a, b = (x if isinstance(x, dict) else {"inputs": x} for x in (earlier, inputs))
        changes += [f"{k} changed" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return changes


def _extends(before: dict, cfg: TrainConfig, done: int) -> bool:
    """Whether ``cfg`` continues a run of options ``before`` after ``done`` epochs unchanged."""
    if done > cfg.epochs:
        return False
    try:
        old = TrainConfig(**before)
    except (TypeError, ValueError):
        return False
    return all(old.lr_at(e) == cfg.lr_at(e) for e in range(done))


def plain(value: object) -> object:
    """``value`` as it reads back from JSON (tuples as lists, paths as strings), for comparisons."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _read_state(state: Path) -> dict:
    try:
        meta = json.loads(state.read_text())
    except (OSError, ValueError) as e:
        raise _corrupt(state, str(e)) from None
    if not isinstance(meta, dict):
        raise _corrupt(state, "not a JSON object")
    return meta


def _corrupt(state: Path, why: str) -> DataError:
    return DataError(f"{state}: corrupt checkpoint state ({why}); delete {state.parent} to start afresh")


def _current(directory: Path) -> str | None:
    state = directory / STATE_FILE
    if not state.is_file():
        return None
    name = _read_state(state).get("file")
    if not isinstance(name, str) or not _TENSOR_FILE.fullmatch(name):
        raise _corrupt(state, f"'file' is {name!r}, not a ckpt-NNNNNN.safetensors name")
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
