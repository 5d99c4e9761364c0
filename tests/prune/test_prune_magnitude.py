"""Unstructured magnitude pruning: masks match hand-worked thresholds and torch.nn.utils.prune, and stay
applied through training and distillation until folded."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as tprune

from distiq.data.arrays import ArrayDataset
from distiq.distill.api import distill
from distiq.engine import train
from distiq.errors import DistiqError
from distiq.prune import (
    fold_masks_,
    magnitude_masks,
    prunable_layers,
    prune_magnitude_,
    sparsity_rich_table,
    sparsity_table,
)
from distiq.prune.magnitude import EmptiedLayerWarning


def net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 3)
    )


def blobs(n: int = 240, seed: int = 0) -> ArrayDataset:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.randn(3, 16, generator=g)[y] * 1.5 + torch.randn(n, 16, generator=g)
    return ArrayDataset(x.reshape(n, 1, 4, 4), y)


def test_hand_worked_global_and_layer_thresholds():
    a = torch.tensor([[1.0, -5.0], [3.0, 0.5]])
    b = torch.tensor([[2.0, -0.1, 4.0]])
    # global: round(0.5 * 7) = 4 smallest of |w| = {0.1, 0.5, 1, 2} go
    g = magnitude_masks({"a": a, "b": b}, 0.5, "global")
    assert g["a"].tolist() == [[0.0, 1.0], [1.0, 0.0]]
    assert g["b"].tolist() == [[0.0, 0.0, 1.0]]
    # layer: a loses round(0.5 * 4) = 2 ({0.5, 1}), b loses round(0.5 * 3) = 2 ({0.1, 2})
    lw = magnitude_masks({"a": a, "b": b}, 0.5, "layer")
    assert lw["a"].tolist() == [[0.0, 1.0], [1.0, 0.0]]
    assert lw["b"].tolist() == [[0.0, 0.0, 1.0]]
    # per-layer amounts: b alone loses one third
    per = magnitude_masks({"a": a, "b": b}, {"b": 1 / 3})
    assert per["a"].tolist() == [[1.0, 1.0], [1.0, 1.0]] and per["b"].tolist() == [[1.0, 0.0, 1.0]]


def test_global_threshold_that_empties_a_layer_is_named():
    weights = {"big": torch.tensor([[5.0, 6.0, 7.0, 8.0]]), "small": torch.tensor([[0.1, 0.2]])}
    with pytest.warns(EmptiedLayerWarning, match="removes every weight of small"):
        masks = magnitude_masks(weights, 1 / 3, scope="global")  # 2 of 6 zeros: both of "small"
    assert masks["small"].sum() == 0 and masks["big"].sum() == 4


@pytest.mark.parametrize("amount", [0.3, 0.5, 0.9])
def test_layer_scope_matches_torch_l1_unstructured(amount):
    ours, peer = net(), net()
    prune_magnitude_(ours, amount, scope="layer")
    for name, module in prunable_layers(peer).items():
        tprune.l1_unstructured(module, "weight", amount)
        assert torch.equal(dict(ours.named_modules())[name].weight_mask, module.weight_mask), name


@pytest.mark.parametrize("amount", [0.25, 0.8])
def test_global_scope_matches_torch_global_unstructured(amount):
    ours, peer = net(1), net(1)
    prune_magnitude_(ours, amount, scope="global")
    layers = prunable_layers(peer)
    tprune.global_unstructured([(m, "weight") for m in layers.values()], tprune.L1Unstructured, amount=amount)
    mine = dict(ours.named_modules())
    for name, module in layers.items():
        assert torch.equal(mine[name].weight_mask, module.weight_mask), name
    # the global threshold lets layers differ, while the total is exact
    total = sum(m.weight.numel() for m in layers.values())
    assert sparsity_table(ours)["total"]["nonzero"] == total - round(amount * total)


def test_masks_survive_training_and_fold():
    model = net()
    masks = prune_magnitude_(model, 0.7)
    before = {n: m.weight_orig.detach().clone() for n, m in prunable_layers(model).items()}
    train(model, blobs(), epochs=2, lr=1e-2, progress=False)
    layers = prunable_layers(model)
    for name, module in layers.items():
        w = module.weight.detach()
        assert torch.all(w[masks[name] == 0] == 0), name
        kept = masks[name] == 1
        assert not torch.equal(w[kept], before[name][kept]), f"{name} did not train"
    fold_masks_(model)
    assert not any(tprune.is_pruned(m) for m in model.modules())
    assert all(not k.endswith(("_orig", "_mask")) for k in model.state_dict())
    for name, module in prunable_layers(model).items():
        assert torch.all(module.weight[masks[name] == 0] == 0)
    assert sparsity_table(model)["total"]["sparsity"] == pytest.approx(0.7, abs=1e-3)


def test_masks_survive_distillation_from_the_unpruned_model():
    teacher = net()
    train(teacher, blobs(), epochs=1, lr=1e-2, progress=False)
    student = copy.deepcopy(teacher)
    masks = prune_magnitude_(student, 0.8, scope="layer")
    distill(teacher, student, blobs(), epochs=2, lr=1e-2, progress=False)
    for name, module in prunable_layers(student).items():
        assert torch.all(module.weight.detach()[masks[name] == 0] == 0), name


def test_sparsity_table_counts_hand_made_zeros():
    model = nn.Sequential(nn.Linear(4, 2, bias=False), nn.Linear(2, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.0, 1.0, 0.0, 2.0], [3.0, 0.0, 0.0, 0.0]]))
        model[1].weight.fill_(1.0)
    rows = sparsity_table(model)
    assert rows["0"] == {"params": 8, "nonzero": 3, "sparsity": pytest.approx(5 / 8)}
    assert rows["1"] == {"params": 4, "nonzero": 4, "sparsity": pytest.approx(0.0)}
    assert rows["total"] == {"params": 12, "nonzero": 7, "sparsity": pytest.approx(5 / 12)}
    assert sparsity_rich_table(rows).row_count == 3


@pytest.mark.parametrize("amount", [1.0, -0.1, 1.5, "half"])
def test_bad_amount_is_a_clear_error(amount):
    with pytest.raises(DistiqError, match="amount"):
        prune_magnitude_(net(), amount)


def test_unknown_layer_and_scope_are_clear_errors():
    with pytest.raises(DistiqError, match="nope"):
        prune_magnitude_(net(), 0.5, exclude=["nope"])
    with pytest.raises(DistiqError, match="scope"):
        prune_magnitude_(net(), 0.5, scope="per-layer")
