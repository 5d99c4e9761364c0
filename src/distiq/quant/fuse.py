"""Conv+BN folding and Conv/Linear+ReLU fusion, found from the recorded dataflow.

Why before calibration: an integer runtime executes ``Conv -> BN -> ReLU`` as one integer convolution
whose weights already contain the BN affine map, and whose output is quantized after the ReLU. Folding
BN first means the weights that get quantized are the ones that run (a BN scale of 10 would otherwise
amplify a weight's rounding error tenfold after the fact); fusing the ReLU means no quantization step
sits between the conv and the ReLU, which would waste half the grid on negatives about to be zeroed.

Patterns are found on the graph recorded by :func:`distiq.quant.trace.trace`, not on module names or
``nn.Sequential`` order: a BN folds into the conv (or Linear) that produced its input only if nothing
else reads the conv's output and each module runs once; likewise for the ReLU. The BN and ReLU modules
become ``nn.Identity`` in place, so every module path stays valid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .trace import Dataflow, trace

FOLDABLE = ((nn.Conv2d, nn.BatchNorm2d), (nn.Conv1d, nn.BatchNorm1d), (nn.Linear, nn.BatchNorm1d))
FUSABLE = (nn.Conv2d, nn.Linear)


@dataclass
class FusedGroup:
    """One fused pattern: the layer, the BN folded into it (if any) and the ReLU fused after it."""

    layer: str
    bn: str | None = None
    relu: str | None = None


@torch.no_grad()
def fold_bn(layer: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> nn.Module:
    """A copy of ``layer`` (Conv or Linear) computing ``bn(layer(x))`` in eval mode.

    ``w' = w * gamma / sqrt(var + eps)`` per output channel and
    ``b' = (b - mean) * gamma / sqrt(var + eps) + beta``, in float64 so the folded layer matches the
    pair to float32 rounding.
    """
    import copy

    folded = copy.deepcopy(layer)
    w = layer.weight.double()
    mean, var = bn.running_mean.double(), bn.running_var.double()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(mean)
    factor = gamma / torch.sqrt(var + bn.eps)
    bias = layer.bias.double() if layer.bias is not None else torch.zeros_like(mean)
    shape = [-1] + [1] * (w.dim() - 1)
    folded.weight = nn.Parameter((w * factor.reshape(shape)).to(layer.weight.dtype))
    folded.bias = nn.Parameter(((bias - mean) * factor + beta).to(layer.weight.dtype))
    return folded


def set_module(model: nn.Module, path: str, module: nn.Module) -> None:
    """Replace the submodule at ``path`` (a ``named_modules`` path) by ``module``."""
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, name, module)


def _single_reader(graph: Dataflow, path: str) -> str | None:
    """The module that alone reads ``path``'s output, when both run once and nothing else reads it."""
    node = graph.module_node(path)
    if node is None or len(graph.modules[path]) != 1 or len(node.outputs) != 1:
        return None
    value = node.outputs[0]
    readers = graph.readers(value)
    if value in graph.outputs or len(readers) != 1 or readers[0].kind != "module":
        return None
    reader = readers[0].target
    return reader if len(graph.modules[reader]) == 1 else None


def find_fusions(model: nn.Module, graph: Dataflow) -> list[FusedGroup]:
    """Conv/Linear [-> BN] [-> ReLU] chains in ``model`` whose intermediate values nobody else reads."""
    modules = dict(model.named_modules())
    groups = []
    for path, module in modules.items():
        if not isinstance(module, FUSABLE + (nn.Conv1d,)) or graph.module_node(path) is None:
            continue
        group = FusedGroup(path)
        tail = path
        found = _single_reader(graph, tail)
        if found and any(isinstance(module, a) and type(modules[found]) is b for a, b in FOLDABLE):
            group.bn, tail = found, found
            found = _single_reader(graph, tail)
        if found and isinstance(module, FUSABLE) and type(modules[found]) is nn.ReLU:
            group.relu = found
        if group.bn or group.relu:
            groups.append(group)
    return groups


def fold_bn_(model: nn.Module, example_input: torch.Tensor) -> list[FusedGroup]:
    """Fold every foldable BN into its layer, in place (BN becomes ``nn.Identity``).

    Args:
        model: A model in eval mode (folding uses the running statistics).
        example_input: One batch, to record the dataflow.

    Returns:
        The fusable groups found (BN folded; ``relu`` names ReLUs that may be fused by quantization).
    """
    groups = find_fusions(model, trace(model, example_input))
    for group in groups:
        if group.bn is not None:
            layer = model.get_submodule(group.layer)
            set_module(model, group.layer, fold_bn(layer, model.get_submodule(group.bn)))
            set_module(model, group.bn, nn.Identity())
    return groups
