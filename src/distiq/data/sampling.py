"""Seeded, class-aware ways to cut a dataset: a validation split, a smaller sample, k folds.

Why stratify by default: compression decisions (a pruning ratio, a quantization scheme) are judged
on small validation sets, and a split that under-represents a class makes those judgements noisy.
Every function is deterministic given ``seed``, so a recipe reproduces its exact split. Indices are
kept in their original order within each part, so a part does not depend on how it was drawn.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch.utils.data import Dataset

from distiq.data.arrays import ArrayDataset, as_arrays


def _class_indices(y: torch.Tensor, generator: torch.Generator) -> list[torch.Tensor]:
    """For each label present (ascending), its row indices in a seeded random order."""
    return [
        idx[torch.randperm(len(idx), generator=generator)]
        for idx in (torch.nonzero(y == c).flatten() for c in torch.unique(y).tolist())
    ]


def _groups(ds: ArrayDataset, seed: int, stratify: bool) -> list[torch.Tensor]:
    """Shuffled index groups: one per class when stratifying, else one holding everything."""
    g = torch.Generator().manual_seed(seed)
    if stratify:
        return _class_indices(ds.y, g)
    return [torch.randperm(len(ds), generator=g)]


def _round_half_up(v: float) -> int:
    """Round ``v`` to the nearest integer, halves up (``round`` rounds halves to even)."""
    return math.floor(v + 0.5)


def _parts(ds: ArrayDataset, parts: list[list[torch.Tensor]], names: list[str]) -> list:
    """Subsets for each list of index chunks, indices sorted back into dataset order."""
    out = []
    for chunks, name in zip(parts, names, strict=True):
        idx = torch.cat(chunks) if chunks else torch.empty(0, dtype=torch.long)
        out.append(ds.subset(torch.sort(idx).values, name=f"{ds.name}/{name}"))
    return out


def split(
    dataset: Dataset, val_fraction: float, seed: int = 0, stratify: bool = True
) -> tuple[ArrayDataset, ArrayDataset]:
    """Split into disjoint ``(train, val)`` parts.

    With ``stratify`` each class is split on its own: ``round(n_c * val_fraction)`` of its ``n_c``
    samples go to ``val``, clamped so a class with at least 2 samples has at least 1 in each part
    (a class with a single sample stays in ``train``). So the total may differ from
    ``round(N * val_fraction)`` by a little, but every class can be both learnt and measured.

    Args:
        dataset: Any dataset of ``(x, y)``; converted with :func:`as_arrays`.
        val_fraction: Share of samples for ``val``, in ``(0, 1)``.
        seed: Seed of the random permutation; same seed, same split.
        stratify: Keep class proportions in both parts.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    ds = as_arrays(dataset)
    train, val = [], []
    for idx in _groups(ds, seed, stratify):
        n = len(idx)
        k = _round_half_up(n * val_fraction)
        if n >= 2:
            k = min(max(k, 1), n - 1)
        else:
            k = 0
        val.append(idx[:k])
        train.append(idx[k:])
    tr, va = _parts(ds, [train, val], ["train", "val"])
    return tr, va


def _largest_remainder(counts: list[int], n: int) -> list[int]:
    """Integers proportional to ``counts`` summing to exactly ``n`` (Hamilton's method).

    Each group gets ``floor(n * c / total)``; the samples left over go one each to the groups with
    the largest remainders, ties to the earlier group. Integer arithmetic keeps it exact.
    """
    total = sum(counts)
    quotas = [n * c // total for c in counts]
    remainders = [n * c % total for c in counts]
    order = sorted(range(len(counts)), key=lambda i: (-remainders[i], i))
    for i in order[: n - sum(quotas)]:
        quotas[i] += 1
    return quotas


def subsample(
    dataset: Dataset, n_or_fraction: int | float, seed: int = 0, stratify: bool = True
) -> ArrayDataset:
    """A random subset of exactly the requested size, keeping class proportions.

    Why: quick experiments and calibration sets want "1,000 samples like the full set". The per-class
    counts come from largest-remainder allocation, so they add up to the requested total exactly.

    Args:
        dataset: Any dataset of ``(x, y)``; converted with :func:`as_arrays`.
        n_or_fraction: An ``int`` count in ``[0, N]``, or a ``float`` fraction in ``(0, 1]``
            (``round(N * fraction)`` samples, halves up).
        seed: Seed of the draw; same seed, same subset.
        stratify: Allocate per class; otherwise draw uniformly from all samples.
    """
    ds = as_arrays(dataset)
    if isinstance(n_or_fraction, bool):
        raise TypeError("n_or_fraction must be an int count or a float fraction, not a bool")
    if isinstance(n_or_fraction, int):
        n = n_or_fraction
        if not 0 <= n <= len(ds):
            raise ValueError(f"cannot draw {n} samples from a dataset of {len(ds)}")
    else:
        if not 0 < n_or_fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {n_or_fraction}")
        n = _round_half_up(len(ds) * n_or_fraction)
    groups = _groups(ds, seed, stratify)
    sizes = _largest_remainder([len(g) for g in groups], n) if len(ds) else []
    (sub,) = _parts(ds, [[g[:k] for g, k in zip(groups, sizes, strict=True)]], [f"n{n}"])
    return sub


def kfold(
    dataset: Dataset, k: int, seed: int = 0, stratify: bool = True
) -> list[tuple[ArrayDataset, ArrayDataset]]:
    """``k`` ``(train, val)`` pairs whose ``val`` parts partition the dataset: scikit-learn's
    ``StratifiedKFold`` (or ``KFold``), shuffled with ``seed``, so each class's count per fold differs
    by at most one when stratifying.

    Args:
        dataset: Any dataset of ``(x, y)``; converted with :func:`as_arrays`.
        k: Number of folds, ``2 <= k <= N``.
        seed: Seed of the shuffle; same seed, same folds.
        stratify: Spread every class evenly over the folds.
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    ds = as_arrays(dataset)
    if not 2 <= k <= len(ds):
        raise ValueError(f"k must be in [2, {len(ds)}] for a dataset of {len(ds)}, got {k}")
    splitter = (StratifiedKFold if stratify else KFold)(n_splits=k, shuffle=True, random_state=seed)
    fold_of = torch.empty(len(ds), dtype=torch.long)
    with warnings.catch_warnings():  # a class rarer than k folds is spread as far as it goes
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        for i, (_, val_idx) in enumerate(splitter.split(np.zeros(len(ds)), ds.y.numpy())):
            fold_of[torch.from_numpy(val_idx)] = i
    folds = []
    for i in range(k):
        val_idx = torch.nonzero(fold_of == i).flatten()
        train_idx = torch.nonzero(fold_of != i).flatten()
        folds.append(
            (
                ds.subset(train_idx, name=f"{ds.name}/fold{i}-train"),
                ds.subset(val_idx, name=f"{ds.name}/fold{i}-val"),
            )
        )
    return folds
