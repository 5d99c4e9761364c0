"""Datasets for distiq: built-in ones by name, the user's own, and seeded ways to cut them.

Every loader returns an :class:`ArrayDataset` (float32 images ``[N, C, H, W]``, int64 labels), so the
rest of distiq handles built-in and user data the same way. The built-in loaders are registered
here, explicitly, so ``names()`` never depends on which module happened to be imported.
"""

from __future__ import annotations

import os

from distiq.data.arrays import ArrayDataset, as_arrays, load_npz
from distiq.data.concepts import ConceptMapping, builtin_mappings, load_mapping, to_concepts
from distiq.data.digits import load_digits
from distiq.data.fashion_mnist import load_fashion_mnist
from distiq.data.folder import load_folder
from distiq.data.normalize import Normalizer
from distiq.data.sampling import kfold, split, subsample
from distiq.registry import Registry

DATASETS: Registry = Registry("dataset")
DATASETS.register("fashion-mnist")(load_fashion_mnist)
DATASETS.register("digits")(load_digits)


def names() -> list[str]:
    """Names accepted by :func:`load`, sorted."""
    return DATASETS.names()


def load(name: str, split: str = "train", root: str | os.PathLike[str] | None = None) -> ArrayDataset:
    """A built-in dataset by name.

    Args:
        name: One of :func:`names` (``"fashion-mnist"``, ``"digits"``).
        split: ``"train"`` or ``"test"``.
        root: Folder holding the dataset's files, for datasets read from disk; ``None`` uses the
            dataset's default (see its loader).

    Raises:
        ValueError: Unknown name (the message lists the known ones) or split.
        DataError: A file is missing or corrupt; the message contains its path.
    """
    return DATASETS.get(name)(split=split, root=root)


__all__ = [
    "ArrayDataset",
    "ConceptMapping",
    "builtin_mappings",
    "load_mapping",
    "to_concepts",
    "DATASETS",
    "Normalizer",
    "as_arrays",
    "kfold",
    "load",
    "load_folder",
    "load_npz",
    "names",
    "split",
    "subsample",
]
