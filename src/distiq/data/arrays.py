"""In-memory datasets held as two tensors, and user data from ``.npz`` files.

Why tensors and not a generic ``Dataset``: the images distiq works with fit in memory, and indexing a
tensor with a batch of indices is an order of magnitude faster on CPU than a ``DataLoader`` collating
single samples. Every loader in ``distiq.data`` returns an :class:`ArrayDataset`.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from distiq.errors import DataError


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


def load_npz(
    path: str | os.PathLike[str],
    x_key: str = "x",
    y_key: str = "y",
    classes: Sequence[str] | None = None,
) -> ArrayDataset:
    """Load images and labels saved with ``np.savez`` as an :class:`ArrayDataset`.

    ``.npz`` is the simplest format a user can write from any pipeline, so it is the way to bring
    one's own arrays. Pickled objects are refused (``allow_pickle=False``) because loading a pickle
    runs arbitrary code.

    Args:
        path: The ``.npz`` file.
        x_key: Key of the images: ``[N, H, W]`` (a channel is added), ``[N, C, H, W]``, or
            ``[N, H, W, C]`` with ``C`` 1 or 3 (moved first). ``uint8`` is scaled by 1/255; other
            numeric types are cast to float32 unchanged.
        y_key: Key of the integer labels ``[N]`` (``[N, 1]`` is flattened).
        classes: Class names; default: the file's ``classes`` array if it has one, else ``"0"``...

    Raises:
        DataError: The file is missing or not an ``.npz``, a key is missing, or the arrays do not
            fit together; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{path}: not a readable .npz file ({e})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: holds a single array (.npy); expected an .npz with keys x and y")
    with archive:
        present = sorted(archive.files)

        def get(key: str) -> np.ndarray:
            if key not in present:
                raise DataError(f"{path}: no array {key!r}; keys present: {', '.join(present)}")
            try:
                return archive[key]
            except (ValueError, OSError, zipfile.BadZipFile) as e:
                raise DataError(f"{path}: cannot read array {key!r} ({e})") from None

        x, y = get(x_key), get(y_key)
        if classes is None and "classes" in present and "classes" not in (x_key, y_key):
            classes = [str(c) for c in get("classes").tolist()]
    x = _images_to_nchw(x, path, x_key)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise DataError(f"{path}: labels {y_key!r} must be integers [N], got {y.dtype} {y.shape}")
    if len(y) != len(x):
        raise DataError(f"{path}: {len(x)} images in {x_key!r} but {len(y)} labels in {y_key!r}")
    if len(y) and y.min() < 0:
        raise DataError(f"{path}: labels {y_key!r} must be >= 0, found {int(y.min())}")
    if classes is not None and len(y) and int(y.max()) >= len(classes):
        raise DataError(f"{path}: label {int(y.max())} but only {len(classes)} class names")
    return ArrayDataset(torch.from_numpy(x), torch.from_numpy(y.astype(np.int64)), classes, path.stem)


def _images_to_nchw(x: np.ndarray, path: Path, key: str) -> np.ndarray:
    """``x`` as float32 ``[N, C, H, W]``; layout rules in :func:`load_npz`."""
    if x.dtype.kind not in "uifb":
        raise DataError(f"{path}: images {key!r} must be numeric, got dtype {x.dtype}")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        # Channels-last only when the last axis looks like channels and the second does not.
        if x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
            x = x.transpose(0, 3, 1, 2)
    else:
        raise DataError(f"{path}: images {key!r} must be [N,H,W] or [N,C,H,W], got {x.shape}")
    out = np.ascontiguousarray(x, dtype=np.float32)
    if x.dtype == np.uint8:
        out /= np.float32(255)
    return out
