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

MAX_CLASSES = 100_000
"""The most classes labels may imply when the data names none: a label beyond it is a corrupt file,
not a classifier distiq could train (a label of 2**40 would otherwise build 2**40 class names)."""

UNUSED_FACTOR = 10
"""Undeclared classes ``0..max`` may outnumber the distinct labels present at most this many times."""


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
        if classes is None and n_classes > MAX_CLASSES:  # every loader checks first; this bounds the rest
            raise DataError(f"{name}: label {n_classes - 1} implies more than {MAX_CLASSES:,} classes")
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

    Labels are checked against the class count the data declares, because a stray label otherwise
    silently changes the model built for the data (a label of 1000 among ten classes made a
    1001-class model): with class names (``classes``, given or stored in the file) every label must
    index one; without, the classes are ``0..max`` and the labels must look like class ids: at most
    ``MAX_CLASSES`` (100,000) of them, and no more than ``UNUSED_FACTOR`` (10) times as many as the
    distinct labels present (labels 0-9 and one 1000: 1001 classes for 11 labels, refused). Store a
    ``classes`` array to declare classes that the file has no samples of.

    Raises:
        DataError: The file is missing or not an ``.npz``, a key is missing, the arrays do not fit
            together, a pixel is NaN or infinite (after the cast to float32), or a label is negative,
            not an integer or not a class id by the rules above; the message names the file.
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
            except MemoryError:  # a header may declare any shape; the file is data, not a demand
                raise DataError(f"{path}: array {key!r} declares more data than fits in memory") from None

        x, y = get(x_key), get(y_key)
        if classes is None and "classes" in present and "classes" not in (x_key, y_key):
            classes = [str(c) for c in get("classes").tolist()]
    x = _images_to_nchw(x, path, x_key)
    check_finite(x, f"{path}: images {x_key!r}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise DataError(f"{path}: labels {y_key!r} must be integers [N], got {y.dtype} {y.shape}")
    if len(y) != len(x):
        raise DataError(f"{path}: {len(x)} images in {x_key!r} but {len(y)} labels in {y_key!r}")
    check_labels(y, classes, f"{path}: labels {y_key!r}")
    return ArrayDataset(torch.from_numpy(x), torch.from_numpy(y.astype(np.int64)), classes, path.stem)


def check_finite(x: np.ndarray, source: str) -> None:
    """Refuse NaN or infinite pixels, counted, before they reach a model: one NaN pixel makes every
    weight NaN after one training step, and the run still ended with exit 0."""
    finite = np.isfinite(x)
    if not finite.all():
        bad = int(finite.size - np.count_nonzero(finite))
        first = int(np.argmin(finite.reshape(len(x), -1).all(axis=1)))
        raise DataError(
            f"{source} hold {bad:,} NaN or infinite values (first in sample {first}); expected finite"
        )


def check_labels(y: np.ndarray, classes: Sequence[str] | None, source: str) -> None:
    """Refuse labels that are not class ids: negative, beyond the class names, or (without names)
    implying more than ``MAX_CLASSES`` classes or ``UNUSED_FACTOR`` times the distinct labels present.

    Why bound undeclared classes at all: the class count is ``max + 1``, so one corrupt label decides
    the size of the model (and of the list of class names) built for the data.
    """
    if not len(y):
        return
    low, high = int(y.min()), int(y.max())
    if low < 0:
        raise DataError(f"{source} must be >= 0, found {low}")
    if classes is not None:
        if high >= len(classes):
            raise DataError(f"{source}: label {high} but only {len(classes)} class names")
        return
    if high >= MAX_CLASSES:
        raise DataError(
            f"{source}: label {high} implies {high + 1:,} classes, more than {MAX_CLASSES:,}; "
            "labels must be class ids 0..n-1"
        )
    distinct = len(np.unique(y))
    if high + 1 > UNUSED_FACTOR * distinct:
        raise DataError(
            f"{source}: label {high} implies {high + 1:,} classes but only {distinct} distinct labels "
            f"appear (more than {UNUSED_FACTOR}x unused); labels must be class ids 0..n-1, or store a "
            "'classes' array naming every class"
        )


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
    with np.errstate(over="ignore", invalid="ignore"):  # overflow to inf is refused by check_finite
        out = np.ascontiguousarray(x, dtype=np.float32)
    if x.dtype == np.uint8:
        out /= np.float32(255)
    return out
