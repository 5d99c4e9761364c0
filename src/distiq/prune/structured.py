"""Structured pruning: remove whole channels, filters and neurons so the dense model gets smaller.

Unstructured zeros save storage but no time on dense kernels; removing a conv's output channel also
removes the matching BatchNorm entries and the next layer's input channel, so every kernel shrinks.
Which tensors must shrink together is what Torch-Pruning's ``DependencyGraph`` (Fang et al., 2023,
"DepGraph") works out by tracing the model: BatchNorm after a conv, the input of the next layer, the
flatten before a Linear, and residual additions whose branches must keep identical channels.

Importance is pluggable (:data:`IMPORTANCES`): ``"l1"`` / ``"l2"`` are the filter norms of Li et al.
(2017, "Pruning Filters for Efficient ConvNets"), ``"bn"`` the BatchNorm scale ``|γ|`` of network
slimming (Liu et al., 2017). A user registers another factory returning a
``torch_pruning.importance.Importance`` (``__call__(group) -> scores``).

A pruned model no longer matches the config it was created from. It is saved as ordinary
safetensors (the shapes are in the file) and rebuilt by :func:`load_pruned`: create the model from its
config, then prune it to the file's shapes with the same dependency graph (:func:`resize_to_shapes_`),
then load the weights. Nothing is pickled.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch
import torch_pruning as tp
from torch import nn

from distiq.engine.weights import load_weights, read_config, read_safetensors, save_weights
from distiq.errors import DistiqError
from distiq.models import create_from_config
from distiq.registry import Registry

from .magnitude import check_amount, masked_layers, prunable_layers
from .spec import SCOPE

IMPORTANCES: Registry[Callable[[], tp.importance.Importance]] = Registry("channel importance")


@IMPORTANCES.register("l1")
def l1_importance() -> tp.importance.Importance:
    """Sum of absolute weights of each channel's group (Li et al., 2017)."""
    return tp.importance.MagnitudeImportance(p=1)


@IMPORTANCES.register("l2")
def l2_importance() -> tp.importance.Importance:
    """Euclidean norm of each channel's group."""
    return tp.importance.MagnitudeImportance(p=2)


@IMPORTANCES.register("bn")
def bn_importance() -> tp.importance.Importance:
    """``|γ|`` of the BatchNorm after each channel (network slimming, Liu et al., 2017)."""
    return tp.importance.BNScaleImportance()


def output_layer(model: nn.Module) -> str:
    """Path of the layer producing the logits: the last Linear/Conv registered (distiq's convention)."""
    names = list(prunable_layers(model))
    if not names:
        raise DistiqError(f"{type(model).__name__} has no Linear/Conv layer")
    return names[-1]


def example_input_for(model: nn.Module, example_input: torch.Tensor | None = None) -> torch.Tensor:
    """``example_input``, or a one-image batch shaped from the model's ``config`` (for tracing)."""
    if example_input is not None:
        return example_input
    config = getattr(model, "config", None) or {}
    if "in_channels" not in config or "image_size" not in config:
        raise DistiqError(f"{type(model).__name__}: pass example_input (no config with the input size)")
    size = int(config["image_size"])
    return torch.zeros(1, int(config["in_channels"]), size, size)


def prune_channels_(
    model: nn.Module,
    amount: float | Mapping[str, float],
    *,
    importance: str = "l1",
    scope: str = SCOPE,
    example_input: torch.Tensor | None = None,
    exclude: Iterable[str] = (),
    max_layer_amount: float = 0.9,
    round_to: int | None = None,
) -> nn.Module:
    """Remove the least important channels of every prunable layer, in place.

    Args:
        model: Any traceable model; the layer producing the logits is never pruned.
        amount: Fraction of output channels to remove from each layer (``scope="layer"``), or of all
            channels together (``scope="global"``, importances normalised per layer, so layers end up
            with different widths). A mapping gives each named layer its own fraction.
        importance: A name in :data:`IMPORTANCES`: ``"l1"``, ``"l2"`` or ``"bn"``.
        scope: ``"layer"`` or ``"global"``.
        example_input: One input batch for tracing (default: from the model's ``config``).
        exclude: Layer paths whose output channels must be kept.
        max_layer_amount: Global scope never removes more than this fraction of one layer, so no layer
            collapses to nothing.
        round_to: Leave each pruned layer a multiple of this many channels (rounded down, at least
            ``round_to``). ONNX Runtime's int8 convs work on blocks of channels: at batch 256 a
            stride-2 student pruned to 11-21-42 channels ran its int8 file at half the speed of the
            same net at 16-24-40, slower than its own float file.

    Returns:
        ``model``, physically smaller.
    """
    if masked_layers(model):
        raise DistiqError("structured pruning needs a model without masks: fold_masks_ it first")
    if importance not in IMPORTANCES:
        raise DistiqError(f"importance: expected one of {', '.join(IMPORTANCES.names())}, got {importance!r}")
    if scope not in ("global", "layer"):
        raise DistiqError(f"scope: expected global or layer, got {scope!r}")
    if importance == "bn" and not any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()
    ):
        raise DistiqError(f"importance 'bn' needs BatchNorm layers; {type(model).__name__} has none")
    layers = prunable_layers(model, exclude)  # checks the exclude names
    modules = dict(model.named_modules())
    ignored = [modules[output_layer(model)], *(modules[n] for n in exclude)]
    kwargs: dict = {}
    if isinstance(amount, Mapping):
        unknown = sorted(set(amount) - set(layers))
        if unknown:
            raise DistiqError(f"amount: no prunable layer named {', '.join(unknown)}")
        kwargs["pruning_ratio"] = 0.0
        kwargs["pruning_ratio_dict"] = {layers[n]: check_amount(a, f"amount[{n}]") for n, a in amount.items()}
    else:
        kwargs["pruning_ratio"] = check_amount(amount)
    was_training = model.training
    model.eval()  # tracing must not update BatchNorm statistics
    pruner = tp.pruner.MetaPruner(
        model,
        example_input_for(model, example_input),
        importance=IMPORTANCES.get(importance)(),
        global_pruning=scope == "global",
        max_pruning_ratio=max_layer_amount,
        ignored_layers=ignored,
        round_to=round_to,
        **kwargs,
    )
    pruner.step()
    model.train(was_training)
    return model


def layer_shapes(model: nn.Module) -> dict[str, list[int]]:
    """Shape of every tensor of the state dict: what a pruned model's architecture is."""
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def resize_to_shapes_(
    model: nn.Module, shapes: Mapping[str, Iterable[int]], example_input: torch.Tensor | None = None
) -> nn.Module:
    """Prune a freshly built ``model`` in place until its tensors have ``shapes``.

    Which channels go does not matter (the weights are loaded next), only how many: each layer with
    more output channels than ``shapes`` says loses its last ones, with every coupled tensor
    (BatchNorm, next layer's input, residual partners) through the dependency graph.

    Raises:
        DistiqError: shapes no pruning of this model can reach (another architecture, a wider layer).
    """
    shapes = {k: [int(d) for d in v] for k, v in shapes.items()}
    if layer_shapes(model) == shapes:
        return model
    was_training = model.training
    model.eval()
    graph = tp.DependencyGraph().build_dependency(
        model, example_inputs=example_input_for(model, example_input)
    )
    for name, module in prunable_layers(model).items():
        want = shapes.get(f"{name}.weight")
        have = module.weight.shape[0]
        if want is None or want[0] >= have:
            continue
        fn = tp.prune_linear_out_channels if isinstance(module, nn.Linear) else tp.prune_conv_out_channels
        graph.get_pruning_group(module, fn, idxs=list(range(want[0], have))).prune()
    model.train(was_training)
    have = layer_shapes(model)
    wrong = [f"{k}: file {v}, model {have.get(k)}" for k, v in shapes.items() if have.get(k) != v]
    wrong += [f"{k}: not in file" for k in have if k not in shapes]
    if wrong:
        shown = "; ".join(wrong[:4]) + (" ..." if len(wrong) > 4 else "")
        raise DistiqError(f"cannot prune {type(model).__name__} to the saved shapes: {shown}")
    return model


def save_pruned(model: nn.Module, path: str | os.PathLike[str]) -> Path:
    """Save a (possibly channel-pruned) model as safetensors; :func:`load_pruned` rebuilds it.

    The file is a normal distiq weights file (its tensors carry the pruned shapes, its metadata the
    original config); this function exists so the pairing with :func:`load_pruned` is explicit.
    """
    if masked_layers(model):
        raise DistiqError("fold the pruning masks (fold_masks_) before saving")
    return save_weights(model, path, metadata={"pruned_shapes": layer_shapes(model)})


def load_pruned(
    path: str | os.PathLike[str],
    example_input: torch.Tensor | None = None,
    *,
    allow_code: str | Iterable[str] = (),
) -> nn.Module:
    """Rebuild a model saved by :func:`save_pruned` (or any distiq weights file) and load its weights.

    ``allow_code``: the ``"package.module:factory"`` references the file may name (see
    :func:`distiq.models.create_from_config`); any other is refused before anything is imported.
    """
    tensors, _ = read_safetensors(path)
    model = create_from_config(read_config(path), allow_code=allow_code, source=str(path))
    resize_to_shapes_(model, {k: list(v.shape) for k, v in tensors.items()}, example_input)
    return load_weights(model, path)
