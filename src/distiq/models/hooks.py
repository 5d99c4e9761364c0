"""Reach inside a model by module path, with forward hooks, never by editing its ``forward``.

Feature distillation (FitNets hints, attention transfer), calibration and the "which layer is this"
questions of a recipe all need intermediate outputs of models distiq did not write. Keying them by
``named_modules`` path ("features.layer2.0.relu2") works for any ``nn.Module``, and a context manager
guarantees the hooks are removed again, even when the code inside raises (the torchdistill
``forward_hook`` approach).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from distiq.errors import DistiqError


def module_names(model: nn.Module) -> list[str]:
    """Every submodule's path, in registration order, without the root's empty name."""
    return [name for name, _ in model.named_modules() if name]


def get_module(model: nn.Module, path: str) -> nn.Module:
    """The submodule at ``path`` (``""`` is the model itself).

    Raises:
        DistiqError: (a ``ValueError``) naming the path and the closest real paths, since layer
            names come from recipes and are easy to mistype.
    """
    modules = dict(model.named_modules())
    if path in modules:
        return modules[path]
    names = module_names(model)
    close = difflib.get_close_matches(path, names, n=5, cutoff=0.5) or names[:5]
    raise DistiqError(
        f"layer {path!r} not found in {type(model).__name__}; close matches: "
        f"{', '.join(close) or 'none (the model has no submodules)'}"
    )


@contextmanager
def capture(model: nn.Module, paths: str | Iterable[str]) -> Iterator[dict[str, Any]]:
    """Record the outputs of the modules at ``paths`` while the block runs.

    Outputs are kept as they are (not detached), so a distillation loss on them trains the model;
    each forward pass replaces the previous entry. Every path is checked before any hook is
    registered, and the hooks are removed on exit whatever happens.

    Args:
        model: The model to watch.
        paths: A module path or several.

    Yields:
        A dict path -> latest output, filled as forward passes run.

    Example:
        >>> with capture(model, ["features.relu1"]) as feats:
        ...     logits = model(x)
        >>> feats["features.relu1"].shape
    """
    paths = [paths] if isinstance(paths, str) else list(paths)
    modules = {path: get_module(model, path) for path in paths}
    outputs: dict[str, Any] = {}
    handles = []
    try:
        for path, module in modules.items():
            handles.append(module.register_forward_hook(_store(outputs, path)))
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


def feature_shapes(
    model: nn.Module, paths: str | Iterable[str], example_input: torch.Tensor
) -> dict[str, tuple[int, ...]]:
    """Output shapes (batch dimension included) of the modules at ``paths`` for ``example_input``.

    Used to size the adapters of feature distillation before training. Runs one forward pass in
    eval mode without gradients (so batch-norm statistics are untouched) and restores the mode.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), capture(model, paths) as outputs:
            model(example_input)
    finally:
        model.train(was_training)
    return {path: tuple(output.shape) for path, output in outputs.items()}


def _store(outputs: dict[str, Any], path: str) -> Callable[[nn.Module, Any, Any], None]:
    def hook(module: nn.Module, inputs: Any, output: Any) -> None:
        outputs[path] = output

    return hook
