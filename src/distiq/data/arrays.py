"""In-memory datasets held as two tensors, and user data from ``.npz`` files.

Why tensors and not a generic ``Dataset``: the images distiq works with fit in memory, and indexing a
tensor with a batch of indices is an order of magnitude faster on CPU than a ``DataLoader`` collating
single samples. Every loader in ``distiq.data`` returns an :class:`ArrayDataset`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset


class ArrayDataset(Dataset):
    """Images ``x`` (float32 ``[N, C, H, W]``) and labels ``y`` (int64 ``[N]``).

    Items are ``(x[i], y[i])``. ``classes`` names each label; ``name`` says where the data came from.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        classes: Sequence[str] | None = None,
        name: str = "arrays",
    ) -> None:
        if x.ndim != 4:
            raise ValueError(f"{name}: images must be [N, C, H, W], got shape {tuple(x.shape)}")
        if y.ndim != 1 or len(y) != len(x):
            raise ValueError(f"{name}: labels must be [N={len(x)}], got shape {tuple(y.shape)}")
        self.x = x.to(torch.float32).contiguous()
        self.y = y.to(torch.int64).contiguous()
        n_classes = int(self.y.max()) + 1 if len(self.y) else 0
        self.classes = list(classes) if classes is not None else [str(i) for i in range(n_classes)]
        self.name = name

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x.shape[1:])  # type: ignore[return-value]

    def subset(self, indices: torch.Tensor | Sequence[int], name: str | None = None) -> ArrayDataset:
        """A new dataset holding the rows ``indices`` (copied), with the same class names."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return ArrayDataset(self.x[idx], self.y[idx], self.classes, name or self.name)


def as_arrays(dataset: Dataset) -> ArrayDataset:
    """Return ``dataset`` as an :class:`ArrayDataset`, stacking its items once if it is not one."""
    if isinstance(dataset, ArrayDataset):
        return dataset
    xs, ys = zip(*(dataset[i] for i in range(len(dataset))), strict=True)  # type: ignore[arg-type]
    x = torch.stack([torch.as_tensor(v, dtype=torch.float32) for v in xs])
    if x.ndim == 3:
        x = x.unsqueeze(1)
    y = torch.as_tensor([int(v) for v in ys], dtype=torch.int64)
    return ArrayDataset(x, y, getattr(dataset, "classes", None), type(dataset).__name__)
