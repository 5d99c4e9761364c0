"""split / subsample / kfold on a dataset whose pixel 0 is the row index, so rows can be traced."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from distiq.data import ArrayDataset, kfold, split, subsample

COUNTS = [50, 30, 15, 4, 1]  # N = 100, including a class of 4 and a singleton


def make(counts=COUNTS) -> ArrayDataset:
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(123))]  # interleave classes
    x = torch.zeros(len(y), 1, 2, 2)
    x[:, 0, 0, 0] = torch.arange(len(y), dtype=torch.float32)
    return ArrayDataset(x, y, [f"c{i}" for i in range(len(counts))], "toy")


def rows(ds: ArrayDataset) -> list[int]:
    return ds.x[:, 0, 0, 0].long().tolist()


def per_class(ds: ArrayDataset, k: int = len(COUNTS)) -> list[int]:
    return torch.bincount(ds.y, minlength=k).tolist()


def test_split_stratified_counts_are_hand_computed():
    ds = make()
    train, val = split(ds, 0.2)
    # round-half-up(n * 0.2): 50->10, 30->6, 15->3, 4->0.8->1, singleton stays in train
    assert per_class(val) == [10, 6, 3, 1, 0]
    assert per_class(train) == [40, 24, 12, 3, 1]
    _, val = split(ds, 0.1)
    # 50->5, 30->3, 15->1.5->2 (half up), 4->0.4->0 clamped up to 1
    assert per_class(val) == [5, 3, 2, 1, 0]


def test_split_is_disjoint_covering_and_keeps_labels():
    ds = make()
    train, val = split(ds, 0.25, seed=3)
    assert set(rows(train)).isdisjoint(rows(val))
    assert sorted(rows(train) + rows(val)) == list(range(100))
    for part in (train, val):
        assert torch.equal(part.y, ds.y[torch.tensor(rows(part))])
        assert part.classes == ds.classes
    assert rows(val) == sorted(rows(val))  # original order kept


def test_split_deterministic_by_seed():
    ds = make()
    assert rows(split(ds, 0.2, seed=1)[1]) == rows(split(ds, 0.2, seed=1)[1])
    assert rows(split(ds, 0.2, seed=1)[1]) != rows(split(ds, 0.2, seed=2)[1])


def test_split_unstratified_size_and_generic_dataset():
    ds = make()
    plain = TensorDataset(ds.x, ds.y)  # not an ArrayDataset: converted with as_arrays
    train, val = split(plain, 0.2, stratify=False)
    assert len(val) == 20 and len(train) == 80
    assert set(rows(train)).isdisjoint(rows(val))


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_split_rejects_bad_fraction(fraction):
    with pytest.raises(ValueError, match="val_fraction"):
        split(make(), fraction)


def test_subsample_largest_remainder_counts():
    ds = make()
    # 20 * [50,30,15,4,1] / 100 = [10, 6, 3, 0.8, 0.2] -> floors 19, the 0.8 remainder gets one
    assert per_class(subsample(ds, 20)) == [10, 6, 3, 1, 0]
    # 33 * counts / 100 = [16.5, 9.9, 4.95, 1.32, 0.33] -> floors [16,9,4,1,0] = 30,
    # three more to the largest remainders .95, .9, .5
    sub = subsample(ds, 0.33)
    assert per_class(sub) == [17, 10, 5, 1, 0] and len(sub) == 33


def test_subsample_subset_determinism_and_edges():
    ds = make()
    a, b, c = subsample(ds, 30, seed=0), subsample(ds, 30, seed=0), subsample(ds, 30, seed=1)
    assert rows(a) == rows(b) and rows(a) != rows(c)
    assert len(set(rows(a))) == 30 and set(rows(a)) <= set(range(100))
    assert rows(subsample(ds, 1.0)) == list(range(100))
    assert len(subsample(ds, 0)) == 0
    assert len(subsample(ds, 37, stratify=False)) == 37
    for bad in (101, -1):
        with pytest.raises(ValueError):
            subsample(ds, bad)
    for bad in (0.0, 1.2):
        with pytest.raises(ValueError, match="fraction"):
            subsample(ds, bad)
    with pytest.raises(TypeError):
        subsample(ds, True)


@pytest.mark.parametrize("stratify", [True, False])
def test_kfold_val_parts_partition_the_data(stratify):
    ds = make()
    folds = kfold(ds, 5, seed=4, stratify=stratify)
    assert len(folds) == 5
    vals = [rows(v) for _, v in folds]
    assert sorted(sum(vals, [])) == list(range(100))  # each row in exactly one val part
    for (train, val), v in zip(folds, vals, strict=True):
        assert sorted(rows(train) + v) == list(range(100)) and set(rows(train)).isdisjoint(v)
        assert len(val) == 20
    if stratify:
        per_fold = torch.tensor([per_class(v) for _, v in folds])  # [fold, class]
        assert (per_fold.max(0).values - per_fold.min(0).values).le(1).all()
        assert per_fold[:, 0].tolist() == [10] * 5 and per_fold[:, 3].sum() == 4


def test_kfold_deterministic_and_validated():
    ds = make()
    assert [rows(v) for _, v in kfold(ds, 3, seed=0)] == [rows(v) for _, v in kfold(ds, 3, seed=0)]
    assert [rows(v) for _, v in kfold(ds, 3, seed=0)] != [rows(v) for _, v in kfold(ds, 3, seed=9)]
    for k in (1, 101):
        with pytest.raises(ValueError, match="k must be"):
            kfold(ds, k)
