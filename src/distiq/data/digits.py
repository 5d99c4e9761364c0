"""scikit-learn's 8x8 handwritten digits: a dataset that ships with a dependency, for fast tests.

Why it is here: 1,797 images train a small model in seconds on one CPU core, so examples, tests and
the demo can run a whole distill-prune-quantize pipeline without any downloaded file.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import torch

from distiq.data.arrays import ArrayDataset
from distiq.data.sampling import split as split_dataset

VAL_FRACTION = 0.2
SEED = 0
SPLITS = ("train", "test")


@functools.cache
def _all() -> ArrayDataset:
    """All 1,797 samples, read once per process (the file is bundled with scikit-learn)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy((bunch.images / 16.0).astype(np.float32)).unsqueeze(1)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    return ArrayDataset(x, y, [str(c) for c in bunch.target_names], "digits")


def load_digits(split: str = "train", root: str | os.PathLike[str] | None = None) -> ArrayDataset:
    """The digits as float32 ``[N, 1, 8, 8]`` in ``[0, 1]`` (pixel / 16), labels ``0..9``.

    There is no official split, so ``train``/``test`` is a fixed stratified 80/20 split with seed 0
    (1,438 / 359 samples): disjoint, covering all samples, the same in every run. Each call returns
    new tensors, so callers may modify them.

    Args:
        split: ``"train"`` or ``"test"``.
        root: Unused (the data ships with scikit-learn); accepted so every loader has one signature.
    """
    del root
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    train, test = split_dataset(_all(), VAL_FRACTION, seed=SEED, stratify=True)
    part = train if split == "train" else test
    return ArrayDataset(part.x, part.y, part.classes, f"digits:{split}")
