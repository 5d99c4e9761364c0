"""Per-channel standardisation, fitted on training data and recorded with the run.

Why fit on the training set only: the mean and std are part of the model, learnt like its weights.
Computing them on validation or test data leaks information about those samples into training and
makes the reported accuracy optimistic. Fit once on ``train``, then apply the same
:class:`Normalizer` to every split, and store :meth:`Normalizer.to_dict` with the run so an exported
model is fed exactly the inputs it was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from distiq.data.arrays import ArrayDataset, as_arrays

_CHUNK = 4096  # rows per step of the two-pass statistics, to bound extra memory
MIN_STD = 1e-6  # a constant channel would otherwise divide by zero


class Normalizer:
    """Maps ``x`` to ``(x - mean[c]) / std[c]`` channel by channel.

    Args:
        mean: Per-channel means, length ``C``.
        std: Per-channel standard deviations, length ``C``, each > 0.
    """

    def __init__(self, mean: Sequence[float] | torch.Tensor, std: Sequence[float] | torch.Tensor) -> None:
        self.mean = torch.as_tensor(mean, dtype=torch.float32).flatten().clone()
        self.std = torch.as_tensor(std, dtype=torch.float32).flatten().clone()
        if len(self.mean) != len(self.std) or len(self.mean) == 0:
            raise ValueError(
                f"mean and std need one value per channel, got {len(self.mean)} and {len(self.std)}"
            )
        if not bool((self.std > 0).all()):
            raise ValueError(f"std must be > 0, got {self.std.tolist()}")

    @classmethod
    def fit(cls, dataset: Dataset) -> Normalizer:
        """Mean and population std of each channel over all pixels of ``dataset``.

        Pass the training set only (see the module docstring). Sums are accumulated in float64, in
        chunks, so 60,000 images give exact-to-float32 statistics without a float64 copy of the data.
        A channel whose std is below ``MIN_STD`` gets ``MIN_STD``.
        """
        ds = as_arrays(dataset)
        if len(ds) == 0:
            raise ValueError(f"cannot fit a Normalizer on an empty dataset ({ds.name})")
        per_channel = len(ds) * ds.x.shape[2] * ds.x.shape[3]
        total = torch.zeros(ds.x.shape[1], dtype=torch.float64)
        for chunk in ds.x.split(_CHUNK):
            total += chunk.sum(dim=(0, 2, 3), dtype=torch.float64)
        mean = total / per_channel
        squares = torch.zeros_like(mean)
        for chunk in ds.x.split(_CHUNK):
            centred = chunk.double() - mean[None, :, None, None]
            squares += (centred * centred).sum(dim=(0, 2, 3))
        std = (squares / per_channel).sqrt().clamp_min(MIN_STD)
        return cls(mean, std)

    @property
    def channels(self) -> int:
        return len(self.mean)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise a batch ``[N, C, H, W]`` or one image ``[C, H, W]`` (returns a new tensor)."""
        c = x.shape[-3] if x.ndim >= 3 else -1
        if c != self.channels:
            raise ValueError(f"Normalizer has {self.channels} channels, input has shape {tuple(x.shape)}")
        view = (-1, 1, 1)
        return (x - self.mean.view(view)) / self.std.view(view)

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        """Undo :meth:`apply`, e.g. to show normalised images."""
        view = (-1, 1, 1)
        return x * self.std.view(view) + self.mean.view(view)

    def __call__(self, dataset: Dataset) -> ArrayDataset:
        """A new dataset with normalised images; labels and class names are kept."""
        ds = as_arrays(dataset)
        return ArrayDataset(self.apply(ds.x), ds.y.clone(), ds.classes, ds.name)

    def to_dict(self) -> dict[str, list[float]]:
        """``{"mean": [...], "std": [...]}`` as plain floats, ready for JSON or YAML."""
        return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Normalizer:
        """Rebuild from :meth:`to_dict`'s output."""
        missing = [k for k in ("mean", "std") if k not in data]
        if missing:
            raise ValueError(f"Normalizer dict lacks {', '.join(missing)}; got keys {list(data)}")
        return cls(data["mean"], data["std"])

    def __repr__(self) -> str:
        return f"Normalizer(mean={self.mean.tolist()}, std={self.std.tolist()})"
