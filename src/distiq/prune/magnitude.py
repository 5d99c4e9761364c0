"""Unstructured magnitude pruning: zero the smallest weights, keep the zeros through fine-tuning.

Han et al. (2015, "Learning both Weights and Connections") prune a weight when its magnitude is below a
threshold and retrain the rest. The threshold is chosen either per layer (every layer loses the same
fraction) or globally (one threshold over all layers, so a large, redundant layer such as LeNet-300-100's
784x300 one goes sparser than the small output layer; usually better at equal total sparsity).

Masks are attached with :func:`torch.nn.utils.prune.custom_from_mask`: the module keeps ``weight_orig``
(trained) and a ``weight_mask`` buffer, and a forward pre-hook recomputes ``weight = weight_orig *
weight_mask`` before every forward, so the pruned weights stay zero through any training loop, and the
gradient of a pruned weight is zero. :func:`fold_masks_` makes the zeros permanent (plain ``weight``
again) once fine-tuning is over.

The functions computing masks are pure (tensors in, masks out); the ones ending in ``_`` change a model
in place.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping

import torch
from rich.table import Table
from torch import nn
from torch.nn.utils import prune as tprune

from distiq.errors import DistiqError

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
SCOPES = ("global", "layer")


class EmptiedLayerWarning(UserWarning):
    """A pruning left a layer with no weight at all (its output is its bias alone)."""


def check_amount(amount: object, what: str = "amount") -> float:
    """``amount`` as a float in [0, 1), else :class:`DistiqError` (1 would delete the whole layer)."""
    if isinstance(amount, bool) or not isinstance(amount, int | float) or not 0.0 <= amount < 1.0:
        raise DistiqError(f"{what}: expected a fraction in [0, 1), got {amount!r}")
    return float(amount)


def prunable_layers(model: nn.Module, exclude: Iterable[str] = ()) -> dict[str, nn.Module]:
    """Linear and conv layers by module path, in registration order, minus the ``exclude`` paths.

    Raises:
        DistiqError: an ``exclude`` path that names no prunable layer (a typo would silently prune it).
    """
    layers = {name: m for name, m in model.named_modules() if isinstance(m, PRUNABLE)}
    excluded = set(exclude)
    unknown = sorted(excluded - set(layers))
    if unknown:
        raise DistiqError(
            f"exclude: no Linear/Conv layer named {', '.join(unknown)}; have {', '.join(layers)}"
        )
    return {name: m for name, m in layers.items() if name not in excluded}


def apply_mask(weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``weight`` with the masked entries set to +0.0.

    Not ``weight * mask``: a negative weight times 0 is -0.0, whose sign bit a bit-exact format (and
    :mod:`distiq.prune.sparse_format` is one) would have to store.
    """
    return weight.detach().masked_fill(mask == 0, 0.0)


def effective_weight(module: nn.Module) -> torch.Tensor:
    """The weight the module computes with: ``weight_orig`` masked while masked, else ``weight``."""
    if tprune.is_pruned(module) and hasattr(module, "weight_mask"):
        return apply_mask(module.weight_orig, module.weight_mask)
    return module.weight.detach()


def _n_pruned(amount: float, numel: int) -> int:
    # torch.nn.utils.prune's rule (round half to even), so results match it mask for mask
    return round(amount * numel)


def _mask_smallest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """A mask (1 keep, 0 prune) of ``scores``' shape zeroing exactly its ``k`` smallest entries."""
    mask = torch.ones_like(scores, dtype=torch.float32)
    if k > 0:
        idx = torch.topk(scores.reshape(-1), k, largest=False).indices
        mask.view(-1)[idx] = 0.0
    return mask


def magnitude_masks(
    weights: Mapping[str, torch.Tensor],
    amount: float | Mapping[str, float],
    scope: str = "global",
) -> dict[str, torch.Tensor]:
    """Masks that zero the smallest-magnitude weights.

    Args:
        weights: Weight tensors by layer name.
        amount: Fraction of weights to prune. With ``scope="global"`` the fraction of all weights
            together (one threshold); with ``scope="layer"`` the fraction of each layer. A mapping gives
            each layer its own fraction (layers not named keep every weight), whatever the scope.
        scope: ``"global"`` or ``"layer"``.

    Returns:
        One float mask per layer (1 keeps, 0 prunes); exactly ``round(amount * n)`` zeros per layer
        (layer scope) or in total (global scope). An already-zero weight always ranks below a non-zero one,
        so pruning masked weights again to a higher amount never revives a weight (ties between equal
        non-zero magnitudes are broken by :func:`torch.topk`).
    """
    if scope not in SCOPES:
        raise DistiqError(f"scope: expected one of {', '.join(SCOPES)}, got {scope!r}")
    if isinstance(amount, Mapping):
        unknown = sorted(set(amount) - set(weights))
        if unknown:
            raise DistiqError(f"amount: no prunable layer named {', '.join(unknown)}")
        per_layer = {name: check_amount(amount.get(name, 0.0), f"amount[{name}]") for name in weights}
        return {n: _mask_smallest(w.abs(), _n_pruned(per_layer[n], w.numel())) for n, w in weights.items()}
    amount = check_amount(amount)
    if scope == "layer":
        return {n: _mask_smallest(w.abs(), _n_pruned(amount, w.numel())) for n, w in weights.items()}
    flat = torch.cat([w.detach().abs().reshape(-1).float() for w in weights.values()])
    keep = _mask_smallest(flat, _n_pruned(amount, flat.numel()))
    masks, start = {}, 0
    for name, w in weights.items():
        masks[name] = keep[start : start + w.numel()].reshape(w.shape).clone()
        start += w.numel()
    emptied = [name for name, m in masks.items() if not m.any()]
    if emptied:  # one global threshold can land above every weight of a layer initialised small
        warnings.warn(
            f"global pruning at amount {amount:g} removes every weight of {', '.join(emptied)}: "
            "the network no longer passes its input through; use scope 'layer', a smaller amount, "
            "or exclude the layer",
            EmptiedLayerWarning,
            stacklevel=2,
        )
    return masks


def attach_masks_(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """Apply ``masks`` (by layer name) to ``model``'s weights, keeping them applied from now on.

    A layer already masked gets its mask replaced in place (the gradual schedule does this every few
    steps); a new one is reparametrised with :func:`torch.nn.utils.prune.custom_from_mask`. The masked
    entries of ``weight_orig`` are zeroed too, so stale optimiser momentum cannot hide behind the mask.
    """
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        module = modules.get(name)
        if module is None or not isinstance(module, PRUNABLE):
            raise DistiqError(f"masks: no Linear/Conv layer named {name!r}")
        mask = mask.to(device=module.weight.device, dtype=module.weight.dtype)
        if tprune.is_pruned(module) and hasattr(module, "weight_mask"):
            module.weight_mask.copy_(mask)
        else:
            tprune.custom_from_mask(module, "weight", mask)
        with torch.no_grad():
            module.weight_orig.masked_fill_(module.weight_mask == 0, 0.0)
            module.weight = module.weight_orig * module.weight_mask  # visible before the next forward
    return model


def reapply_masks_(model: nn.Module) -> None:
    """Zero the masked entries of every ``weight_orig`` again (called after each optimiser step)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, PRUNABLE) and hasattr(module, "weight_mask"):
                module.weight_orig.masked_fill_(module.weight_mask == 0, 0.0)


def masked_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Layers that currently carry a mask, by module path."""
    return {n: m for n, m in model.named_modules() if isinstance(m, PRUNABLE) and hasattr(m, "weight_mask")}


def fold_masks_(model: nn.Module) -> nn.Module:
    """Make the masks permanent: the masked ``weight_orig`` as a plain ``weight`` parameter again.

    After folding, the model's state dict has its original keys (``weight``), so it saves, loads and
    exports like an unpruned model; the zeros are simply values.
    """
    for module in masked_layers(model).values():
        mask = module.weight_mask.clone()
        tprune.remove(module, "weight")
        with torch.no_grad():
            module.weight.masked_fill_(mask == 0, 0.0)  # +0.0, not the -0.0 of a negative weight * 0
        # remove() re-registers weight after bias; restore the usual order so state dicts line up
        params = module._parameters
        rest = [(k, v) for k, v in params.items() if k != "weight"]
        weight = params["weight"]
        params.clear()
        params.update([("weight", weight), *rest])
    return model


def prune_magnitude_(
    model: nn.Module,
    amount: float | Mapping[str, float],
    scope: str = "global",
    exclude: Iterable[str] = (),
) -> dict[str, torch.Tensor]:
    """Prune ``model`` in place to ``amount`` by weight magnitude and keep the masks attached.

    Returns:
        The masks, by layer name. Call :func:`fold_masks_` when fine-tuning is done.
    """
    layers = prunable_layers(model, exclude)
    if not layers:
        raise DistiqError(f"{type(model).__name__} has no Linear/Conv layer to prune")
    masks = magnitude_masks({n: effective_weight(m) for n, m in layers.items()}, amount, scope)
    attach_masks_(model, masks)
    return masks


def sparsity_table(model: nn.Module) -> dict[str, dict[str, float]]:
    """Per-layer weight counts and sparsity of every Linear/Conv layer, plus a ``"total"`` row.

    Counts the zeros of the effective weight (mask applied, if any); biases are not counted, as they
    are not pruned. Rows: ``{"params", "nonzero", "sparsity"}``.
    """
    rows: dict[str, dict[str, float]] = {}
    total = nonzero = 0
    for name, module in prunable_layers(model).items():
        w = effective_weight(module)
        nz = int(torch.count_nonzero(w))
        rows[name] = {"params": w.numel(), "nonzero": nz, "sparsity": 1.0 - nz / max(w.numel(), 1)}
        total += w.numel()
        nonzero += nz
    rows["total"] = {"params": total, "nonzero": nonzero, "sparsity": 1.0 - nonzero / max(total, 1)}
    return rows


def sparsity_rich_table(rows: Mapping[str, Mapping[str, float]], title: str = "sparsity") -> Table:
    """A rich table of :func:`sparsity_table`'s rows, for the console."""
    table = Table(title=title)
    for col, justify in (
        ("layer", "left"),
        ("weights", "right"),
        ("non-zero", "right"),
        ("sparsity", "right"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for name, r in rows.items():
        table.add_row(name, f"{int(r['params']):,}", f"{int(r['nonzero']):,}", f"{100 * r['sparsity']:.2f}%")
    return table
