"""Magnitude pruning of a Keras model's kernels, the zeros kept through any further training.

Why masks on gradients: on the torch backend each Keras kernel is a ``torch.nn.Parameter``, so a hook
on it that zeroes the gradient of pruned entries keeps them at exactly zero under Keras's ``fit`` and
distiq's engine alike (SGD, momentum and Adam all leave a zero weight with zero gradient at zero;
decoupled weight decay multiplies it). The masks come from distiq's pure
:func:`~distiq.prune.magnitude.magnitude_masks` (one global threshold, or the same fraction per layer).

Channels: distiq's structured pruning rebuilds ``torch.nn`` layers from a traced graph, and a Keras
model's layers are Keras ops, so it is refused with that reason rather than pruning nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import keras
import torch

from distiq.errors import DistiqError
from distiq.prune.magnitude import magnitude_masks

from .module import KerasModule

PRUNABLE = ("Dense", "Conv1D", "Conv2D", "Conv3D", "DepthwiseConv2D", "SeparableConv2D")


@dataclass
class PruneResult:
    """What :func:`prune_` did: the masks by layer name and the hooks that keep them."""

    masks: dict[str, torch.Tensor]
    handles: list = field(default_factory=list)

    @property
    def sparsity(self) -> float:
        """Fraction of the pruned layers' kernel entries that are zero."""
        total = sum(m.numel() for m in self.masks.values())
        return sum(int((m == 0).sum()) for m in self.masks.values()) / max(total, 1)

    def release(self) -> None:
        """Remove the gradient hooks (the weights stay as they are)."""
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


def kernels(model: keras.Model, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """The kernel variables of the Dense and convolution layers, by layer name.

    Raises:
        DistiqError: an ``exclude`` entry that names no such layer.
    """
    found = {
        layer.name: layer.kernel
        for layer in model._flatten_layers(include_self=False)
        if type(layer).__name__ in PRUNABLE and hasattr(layer, "kernel")
    }
    unknown = sorted(set(exclude) - set(found))
    if unknown:
        raise DistiqError(f"exclude: no Dense/Conv layer named {', '.join(unknown)}; have {', '.join(found)}")
    return {name: k for name, k in found.items() if name not in exclude}


def kernel_sparsity(model: Any, exclude: tuple[str, ...] = ()) -> float:
    """Fraction of zeros in the Dense and convolution kernels of ``model`` (or its view) as they are now:
    what pruning left, measured on the weights rather than read from the masks."""
    keras_model = model.keras_model if isinstance(model, KerasModule) else model
    values = [k.value.detach() for k in kernels(keras_model, exclude).values()]
    total = sum(v.numel() for v in values)
    return sum(int((v == 0).sum()) for v in values) / max(total, 1)


def prune_(
    model: Any,
    amount: float,
    *,
    scope: str = "global",
    structured: bool = False,
    exclude: tuple[str, ...] = (),
) -> PruneResult:
    """Zero the smallest-magnitude kernel weights of ``model`` in place and keep them zero.

    Args:
        model: A ``keras.Model`` or its :class:`KerasModule` view.
        amount: Fraction in ``[0, 1)`` of the kernel weights to remove (biases are kept).
        scope: "global" (one threshold over all layers) or "layer" (the fraction in every layer).
        structured: Channel pruning; refused for Keras models (see the module docstring).
        exclude: Layer names to leave dense (often the output layer).

    Returns:
        The masks and gradient hooks (``result.release()`` removes the hooks).
    """
    keras_model = model.keras_model if isinstance(model, KerasModule) else model
    if structured:
        raise DistiqError(
            "prune.structured: channel pruning rebuilds torch.nn Conv/Linear layers from a traced graph and "
            "a Keras model's layers are Keras ops; use unstructured magnitude pruning (structured: false)"
        )
    found = kernels(keras_model, exclude)
    if not found:
        raise DistiqError(f"Keras model {keras_model.name!r} has no Dense or convolution layer to prune")
    params = {name: k.value for name, k in found.items()}
    masks = magnitude_masks({n: p.detach() for n, p in params.items()}, amount, scope)
    result = PruneResult(masks)
    with torch.no_grad():
        for name, param in params.items():
            mask = masks[name].to(param.dtype)
            param.copy_(torch.where(mask.bool(), param, torch.zeros_like(param)))
            result.handles.append(param.register_hook(lambda grad, m=mask: grad * m))
    return result
