"""``dq.prune`` as API.md documents it: keywords, copy semantics, exact sparsity, smaller models, recovery."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

import distiq as dq
from distiq.data.arrays import ArrayDataset
from distiq.errors import DistiqError
from distiq.prune import prune, sparse, sparsity_table


def blobs(n: int = 240, seed: int = 0) -> ArrayDataset:
    centers = torch.randn(3, 64, generator=torch.Generator().manual_seed(0)) * 1.5
    y = torch.arange(n) % 3
    x = centers[y] + 2 * torch.randn(n, 64, generator=torch.Generator().manual_seed(seed + 1))
    return ArrayDataset(x.reshape(n, 1, 8, 8), y)


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return dq.models.create("mlp", num_classes=3, image_size=8, hidden=[32, 16])


def test_documented_signature():
    p = inspect.signature(prune).parameters
    assert list(p)[:2] == ["model", "amount"]
    documented = {"structured": False, "scope": "global", "importance": "l1", "example_input": None}
    for name, default in documented.items():
        assert p[name].default == default and p[name].kind is inspect.Parameter.KEYWORD_ONLY, name
    assert callable(sparse.save) and callable(sparse.load)


def test_unstructured_returns_a_pruned_copy_with_exact_sparsity():
    model = mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned = prune(model, 0.75)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())  # original untouched
    assert list(pruned.state_dict()) == list(before)
    n = 64 * 32 + 32 * 16 + 16 * 3
    assert sparsity_table(pruned)["total"]["nonzero"] == n - round(0.75 * n)


def test_structured_is_physically_smaller():
    torch.manual_seed(0)
    model = dq.models.create("vgg-small", image_size=8, width=0.25)
    pruned = prune(model, 0.5, structured=True, scope="layer", importance="l2")
    n = dq.models.count_parameters
    assert n(pruned) < 0.4 * n(model)
    assert pruned(torch.randn(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize("kwargs", [{}, {"pruning_schedule": "cubic"}, {"teacher": "original"}])
def test_fine_tuning_keeps_the_sparsity_and_recovers(kwargs):
    data, val = blobs(), blobs(120, seed=1)
    model = mlp()
    dq.train(model, data, epochs=3, lr=1e-2, progress=False)
    pruned = prune(model, 0.9, train_data=data, val_data=val, epochs=3, lr=1e-2, progress=False, **kwargs)
    n = 64 * 32 + 32 * 16 + 16 * 3
    assert sparsity_table(pruned)["total"]["nonzero"] == n - round(0.9 * n)
    assert dq.evaluate(pruned, val)["accuracy"] > 0.9


def test_bad_combinations_are_clear_errors():
    with pytest.raises(DistiqError, match="cubic"):
        prune(mlp(), 0.5, pruning_schedule="cubic")
    with pytest.raises(DistiqError, match="pruning_schedule"):
        prune(mlp(), 0.5, pruning_schedule="linear")
    with pytest.raises(DistiqError, match="teacher"):
        prune(mlp(), 0.5, teacher="unpruned")
