"""Weight sharing (Deep Compression, Han et al., 2016): a k-means codebook per layer, centroids fine-tuned.

After pruning, the surviving weights of a layer take few distinct values without losing accuracy: Han et
al. cluster them with 1-D k-means into ``2**bits`` centroids, store per weight only the index of its
centroid (``bits`` bits, then Huffman-coded), and fine-tune the centroids: the gradient of a centroid is
the sum of the gradients of the weights assigned to it, while the assignments stay fixed. Linear
initialisation (centroids evenly spaced between the smallest and largest weight) keeps the few large
weights, which matter most, their own centroids; density initialisation (quantiles) spends the
centroids where the weights are many.

Here a shared layer keeps two tensors instead of its ``weight`` parameter: ``weight_codebook`` (the
centroids, a trainable float32 parameter) and ``weight_index`` (an int16 buffer of the weight's shape,
0 for a pruned weight and ``1 + k`` for one assigned to centroid ``k``). A forward pre-hook computes
``weight = [0, *codebook][index]`` before each forward, the way :mod:`torch.nn.utils.prune` computes a
masked weight, so any training loop (:func:`distiq.engine.train`) trains the centroids, autograd's
gather backward sums the member gradients per centroid, and pruned weights stay exactly +0.0.
``dq.sparse.save`` stores such a model as indices + codebooks + positions, entropy-coded.

The k-means itself is :func:`kmeans_1d`, a pure function (agrees with scikit-learn's Lloyd k-means
from the same initial centroids; a test checks it); the functions ending in ``_`` change a model in place.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from distiq.distill.api import distill
from distiq.engine.train import train
from distiq.errors import DistiqError

from .api import working_copies
from .magnitude import PRUNABLE, fold_masks_, masked_layers, prunable_layers

INITS = ("linear", "density")
MIN_BITS, MAX_BITS = 1, 8


def initial_centroids(values: np.ndarray, k: int, init: str = "linear") -> np.ndarray:
    """``k`` starting centroids for 1-D k-means over ``values`` (sorted, float64).

    ``"linear"``: evenly spaced from ``min`` to ``max`` (Deep Compression's choice: the rare large
    weights keep centroids of their own). ``"density"``: the ``(i + 0.5) / k`` quantiles, so each
    centroid starts with about as many weights.
    """
    if init not in INITS:
        raise DistiqError(f"init: expected one of {', '.join(INITS)}, got {init!r}")
    v = np.asarray(values, dtype=np.float64)
    if init == "linear":
        return np.linspace(v.min(), v.max(), k)
    return np.quantile(v, (np.arange(k) + 0.5) / k)


def kmeans_1d(
    values: np.ndarray, init: np.ndarray, max_iter: int = 300, relocate: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means in one dimension, exact: ``(centroids ascending, label of each value)``.

    In 1-D the nearest centroid of a sorted value list changes only at the midpoints between sorted
    centroids, so each iteration is a ``searchsorted`` and a segment mean (O(n) after one sort) instead
    of n x k distances. Iterates until no label changes (scikit-learn's ``tol=0``). A cluster left empty
    restarts at the value farthest from its centroid, as in scikit-learn (linear initialisation over
    pruned, two-humped weights leaves the centroids near zero empty); with ``relocate=False`` it keeps
    its centroid and is dropped at the end. Either way fewer than ``len(init)`` centroids may come back
    (too few distinct values); a value on a midpoint goes to the lower centroid.
    """
    v = np.asarray(values, dtype=np.float64)
    order = np.argsort(v, kind="stable")
    sv = v[order]
    csum = np.concatenate([[0.0], np.cumsum(sv)])
    c = np.asarray(init, dtype=np.float64)
    labels = None
    for _ in range(max_iter):
        c = np.sort(c)
        # a value x goes to centroid j when mid[j-1] < x <= mid[j]: a value on a midpoint goes low
        bounds = np.searchsorted(sv, (c[1:] + c[:-1]) / 2, side="right")
        starts, ends = np.concatenate([[0], bounds]), np.concatenate([bounds, [len(sv)]])
        new = np.repeat(np.arange(len(c)), ends - starts)
        if labels is not None and np.array_equal(new, labels):
            break  # c already holds the means of these labels
        labels = new
        counts = ends - starts
        full = counts > 0
        c[full] = (csum[ends[full]] - csum[starts[full]]) / counts[full]
        empty = np.flatnonzero(~full)
        if len(empty) and relocate:
            # as scikit-learn does: an empty cluster restarts at the value farthest from its centroid
            far = np.argsort(-np.abs(sv - c[labels]), kind="stable")
            c[empty] = sv[far[: len(empty)]]
    used = np.unique(labels)
    remap = np.full(len(c), -1)
    remap[used] = np.arange(len(used))
    out = np.empty(len(v), dtype=np.int64)
    out[order] = remap[labels]
    return c[used], out


def codebook_for(weight: torch.Tensor, bits: int, init: str = "linear") -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster the non-zero entries of ``weight``: ``(codebook float32 [K], index int16 like weight)``.

    ``K <= 2**bits``; index 0 marks a zero (pruned) weight, ``1 + k`` centroid ``k``. A layer with at
    most ``2**bits`` distinct non-zero values keeps them exactly. Labels are recomputed as the nearest
    float32 centroid, so the stored weights are exactly what the model computes with.
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise DistiqError(f"bits: expected an integer in [{MIN_BITS}, {MAX_BITS}], got {bits!r}")
    w = weight.detach().cpu().float()
    if not torch.isfinite(w).all():
        raise DistiqError("weight sharing needs finite weights")
    keep = w != 0
    index = torch.zeros(w.shape, dtype=torch.int16)
    values = w[keep].double().numpy()
    if values.size == 0:
        return torch.zeros(0, dtype=torch.float32), index
    unique = np.unique(values)
    if len(unique) <= 2**bits:
        centroids = unique
    else:
        centroids, _ = kmeans_1d(
            values, initial_centroids(unique if init == "linear" else values, 2**bits, init)
        )
    book = torch.from_numpy(np.unique(centroids.astype(np.float32)))
    book = book[book != 0]  # a centroid at exactly 0 would read as pruned; its weights go to the nearest
    nearest = nearest_centroid(w[keep], book)
    used, labels = torch.unique(nearest, return_inverse=True)
    index[keep] = (labels + 1).to(torch.int16)
    return book[used].contiguous(), index


def nearest_centroid(values: torch.Tensor, book: torch.Tensor) -> torch.Tensor:
    """Index of the nearest entry of the ascending ``book`` for each value (ties go low)."""
    pos = torch.searchsorted(book, values.contiguous()).clamp(1, len(book) - 1) if len(book) > 1 else None
    if pos is None:
        return torch.zeros(values.shape, dtype=torch.int64)
    lower = (values - book[pos - 1]).abs() <= (book[pos] - values).abs()
    return torch.where(lower, pos - 1, pos)


def shared_weight(codebook: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``[0, *codebook][index]``: the layer's weight; differentiable in the codebook.

    The backward of the gather adds up the gradients of all weights with the same index, which is
    Deep Compression's grouped centroid gradient; index 0 reads a constant +0.0 and gets none.
    """
    zero = torch.zeros(1, dtype=codebook.dtype, device=codebook.device)
    return torch.cat([zero, codebook])[index.long()]


class SharedWeightHook:
    """Forward pre-hook: ``module.<name> = shared_weight(<name>_codebook, <name>_index)``.

    Holds no reference to the module (copies and pickles of the model stay independent).
    """

    def __init__(self, name: str = "weight") -> None:
        self.name = name

    def __call__(self, module: nn.Module, inputs: object) -> None:
        codebook, index = getattr(module, f"{self.name}_codebook"), getattr(module, f"{self.name}_index")
        setattr(module, self.name, shared_weight(codebook, index))


def is_shared(module: nn.Module, name: str = "weight") -> bool:
    """Whether ``module`` carries a codebook and indices instead of its ``name`` parameter."""
    return hasattr(module, f"{name}_codebook") and hasattr(module, f"{name}_index")


def shared_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Layers with a shared weight, by module path."""
    return {n: m for n, m in model.named_modules() if isinstance(m, PRUNABLE) and is_shared(m)}


def _hooks(module: nn.Module) -> dict[int, SharedWeightHook]:
    return {k: h for k, h in module._forward_pre_hooks.items() if isinstance(h, SharedWeightHook)}


def _replace_param(module: nn.Module, old: str, new: str, value: nn.Parameter) -> None:
    """Put ``new`` where ``old`` was in the parameter order (state dicts keep their layout)."""
    items = [(new, value) if k == old else (k, v) for k, v in module._parameters.items()]
    module._parameters.clear()
    module._parameters.update(items)


def attach_sharing_(
    module: nn.Module, codebook: torch.Tensor, index: torch.Tensor, name: str = "weight"
) -> nn.Module:
    """Replace ``module.<name>`` by ``<name>_codebook`` (parameter) and ``<name>_index`` (int16 buffer)."""
    if is_shared(module, name):
        raise DistiqError(f"{type(module).__name__} already shares its {name}")
    param = module._parameters.get(name)
    if param is None:
        raise DistiqError(f"{type(module).__name__}: no plain {name} parameter (fold pruning masks first)")
    if tuple(index.shape) != tuple(param.shape) or (index.numel() and int(index.max()) > len(codebook)):
        raise DistiqError(f"index {list(index.shape)} does not fit {name} {list(param.shape)} / codebook")
    book = nn.Parameter(codebook.to(param.device, param.dtype).clone())
    _replace_param(module, name, f"{name}_codebook", book)
    module.register_buffer(f"{name}_index", index.to(device=param.device, dtype=torch.int16).clone())
    module.register_forward_pre_hook(SharedWeightHook(name))
    refresh_(module)
    return module


def refresh_(model: nn.Module) -> nn.Module:
    """Recompute every shared tensor outside autograd.

    The weight is visible before the next forward, and a model whose last forward was a training step
    can still be copied (``copy.deepcopy`` refuses tensors that carry a graph).
    """
    with torch.no_grad():
        for module in model.modules():
            for hook in _hooks(module).values():
                hook(module, None)
    return model


def fold_sharing_(model: nn.Module) -> nn.Module:
    """Make every shared tensor a plain parameter again (same values, hooks removed)."""
    for module in model.modules():
        for key, hook in _hooks(module).items():
            del module._forward_pre_hooks[key]
            name = hook.name
            codebook, index = getattr(module, f"{name}_codebook"), getattr(module, f"{name}_index")
            with torch.no_grad():
                value = nn.Parameter(shared_weight(codebook, index).clone())
            module.__dict__.pop(name, None)
            _replace_param(module, f"{name}_codebook", name, value)
            del module._buffers[f"{name}_index"]
    return model


def layer_bits(
    layers: Mapping[str, nn.Module], bits: int | Mapping[str, int], conv_bits: int | None
) -> dict[str, int]:
    """Bits per layer path: ``bits`` (one number or by path), ``conv_bits`` for conv layers if given."""
    if isinstance(bits, Mapping):
        unknown = sorted(set(bits) - set(layers))
        if unknown:
            raise DistiqError(f"bits: no Linear/Conv layer named {', '.join(unknown)}")
    out = {}
    for name, module in layers.items():
        if isinstance(bits, Mapping):
            out[name] = bits.get(name, MAX_BITS)
        elif conv_bits is not None and not isinstance(module, nn.Linear):
            out[name] = conv_bits
        else:
            out[name] = bits
    return out


def share_weights_(
    model: nn.Module,
    bits: int | Mapping[str, int] = 5,
    *,
    conv_bits: int | None = None,
    init: str = "linear",
    exclude: Iterable[str] = (),
    biases: bool = False,
) -> dict[str, int]:
    """Cluster each Linear/Conv layer's non-zero weights and attach the codebooks; returns ``K`` per layer.

    Pruning masks still attached are folded first (their zeros are the pruned weights). ``biases``:
    share each layer's bias too, with the layer's bits (see :func:`share_weights`).
    """
    if masked_layers(model):
        fold_masks_(model)
    layers = {n: m for n, m in prunable_layers(model, exclude).items() if not is_shared(m)}
    if not layers:
        raise DistiqError(f"{type(model).__name__} has no Linear/Conv layer to share")
    sizes = {}
    for name, b in layer_bits(layers, bits, conv_bits).items():
        codebook, index = codebook_for(layers[name].weight, b, init)
        attach_sharing_(layers[name], codebook, index)
        sizes[name] = len(codebook)
        if biases and layers[name]._parameters.get("bias") is not None:
            attach_sharing_(layers[name], *codebook_for(layers[name].bias, b, init), name="bias")
    return sizes


def share_weights(
    model: nn.Module,
    bits: int | Mapping[str, int] = 5,
    *,
    conv_bits: int | None = None,
    init: str = "linear",
    exclude: Iterable[str] = (),
    biases: bool = False,
    train_data: Dataset | None = None,
    val_data: Dataset | None = None,
    teacher: nn.Module | str | None = None,
    distill_options: Mapping[str, Any] | None = None,
    inplace: bool = False,
    **train_options: Any,
) -> nn.Module:
    """Share the weights of ``model`` (usually pruned) through per-layer codebooks; fine-tune the centroids.

    Args:
        model: The trained (pruned) model; left untouched unless ``inplace``.
        bits: Index bits per layer, 1 to 8 (``2**bits`` centroids at most), or a mapping by layer path
            (layers not named get 8). Deep Compression uses 5 for fully connected layers.
        conv_bits: Bits for conv layers (Deep Compression: 8), overriding a single ``bits``.
        init: ``"linear"`` (evenly spaced between min and max; the paper's recommendation) or
            ``"density"`` (quantiles).
        exclude: Layer paths left as they are (plain float weights).
        biases: Share each layer's bias as well (its own codebook, the layer's bits). Not in the paper,
            where biases are a negligible share of the bytes; in a small pruned network (LeNet-5 here)
            their float32 values can be a sixth of the file.
        train_data: Fine-tune the centroids (and the biases) on these; the assignments stay fixed.
        val_data: Validation data for the fine-tuning (best-epoch restore, early stopping).
        teacher: Distil from this model, or ``"original"`` for ``model`` as given, while fine-tuning.
        distill_options: Options of :func:`distiq.distill` (``loss``, ``temperature``, ``alpha``, ...).
        inplace: Share ``model`` itself instead of a copy.
        **train_options: Fine-tuning options of :func:`distiq.train` (``epochs``, ``lr``, ...).

    Returns:
        The shared model: each layer has ``weight_codebook`` and ``weight_index`` instead of ``weight``
        (:func:`fold_sharing_` makes them plain weights); ``dq.sparse.save`` stores it compactly.
    """
    model, teacher = working_copies(model, teacher, inplace)
    share_weights_(model, bits, conv_bits=conv_bits, init=init, exclude=exclude, biases=biases)
    if train_data is not None:
        if teacher is None:
            train(model, train_data, val_data, **train_options)
        else:
            options = dict(distill_options or {})
            distill(teacher, model, train_data, val_data, **options, **train_options)  # type: ignore[arg-type]
    return refresh_(model)


def sharing_table(model: nn.Module) -> dict[str, dict[str, int]]:
    """Per shared layer: ``{"weights", "nonzero", "centroids"}``."""
    return {
        name: {
            "weights": m.weight_index.numel(),
            "nonzero": int((m.weight_index != 0).sum()),
            "centroids": len(m.weight_codebook),
        }
        for name, m in shared_layers(model).items()
    }
