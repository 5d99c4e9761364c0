"""Datasets for distiq: built-in ones by name, the user's own, and seeded ways to cut them.

Every loader returns an :class:`ArrayDataset` (float32 images ``[N, C, H, W]``, int64 labels), so the
rest of distiq handles built-in and user data the same way. The built-in loaders are registered
here, explicitly, so ``names()`` never depends on which module happened to be imported.
"""

from __future__ import annotations

import os
from pathlib import Path

from distiq.data.arrays import ArrayDataset, as_arrays, load_npz
from distiq.data.concepts import ConceptMapping, builtin_mappings, load_mapping, to_concepts
from distiq.data.digits import load_digits
from distiq.data.fashion_mnist import load_fashion_mnist
from distiq.data.folder import load_folder
from distiq.data.normalize import Normalizer
from distiq.data.sampling import kfold, split, subsample
from distiq.errors import DataError, DistiqError
from distiq.registry import Registry, unknown_name

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
        DistiqError: Unknown name (the message names the closest and lists the known ones).
        ValueError: Unknown split.
        DataError: A file is missing or corrupt; the message contains its path.
    """
    return DATASETS.get(name)(split=split, root=root)


def resolve(
    spec: str, split: str = "train", root: str | os.PathLike[str] | None = None
) -> ArrayDataset | None:
    """Data as users name them: a registered dataset, an ``.npz`` file or an image folder.

    The one place that reads a user's ``data`` string, so the command line and recipes accept the
    same things. A registered name wins over a file or folder of the same name.

    Args:
        spec: A name from :func:`names`, a path to an ``.npz`` file (:func:`load_npz`), or a folder of
            class sub-folders (:func:`load_folder`).
        split: ``"train"`` or ``"test"``.
        root: Folder of a named dataset's files; unused for a file or folder.

    Returns:
        The dataset, or ``None`` for any split but ``"train"`` of a file or folder: those hold one
        set of samples, so the caller holds a test part out of it (a recipe's ``data.test_fraction``)
        or goes without.

    Raises:
        DataError: ``spec`` looks like a path (a suffix or a folder in it) that does not exist, the
            file or folder is unreadable, or a named dataset's files are missing; the message
            contains the path.
        DistiqError: ``spec`` is neither a registered name nor an existing path; the message names
            it, the closest dataset name and the known ones.
    """
    if spec in DATASETS:
        return load(spec, split, root)
    path = Path(spec)
    if not path.exists():
        if path.suffix or len(path.parts) > 1:  # meant as a path: say which one is missing
            raise DataError(f"data: {spec}: no such file or folder")
        unknown = unknown_name("dataset", spec, DATASETS.names())
        raise DistiqError(f"data: {unknown}; nor is it a file or folder")
    if split != "train":
        return None
    return load_npz(path) if path.is_file() else load_folder(path)


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
    "resolve",
    "split",
    "subsample",
]
