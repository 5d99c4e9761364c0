"""Dataflow recording and Conv+BN folding / ReLU fusion: the folded model computes what the pair did."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import distiq as dq
from distiq.quant.fuse import find_fusions, fold_bn, fold_bn_
from distiq.quant.trace import INPUT, trace


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny tensors: one thread is faster, and on a shared machine far steadier."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _random_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g))
            m.running_var.copy_(torch.rand(n, generator=g) + 0.3)
            m.weight.data.copy_(torch.rand(n, generator=g) * 2 + 0.2)
            m.bias.data.copy_(torch.randn(n, generator=g))
    return model.eval()


def test_fold_bn_by_hand():
    conv = nn.Conv2d(2, 3, 3, bias=True)
    bn = _random_bn(nn.Sequential(nn.BatchNorm2d(3)))[0]
    folded = fold_bn(conv, bn)
    gamma_over_std = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    assert torch.allclose(folded.weight, conv.weight * gamma_over_std[:, None, None, None], atol=1e-6)
    assert torch.allclose(folded.bias, (conv.bias - bn.running_mean) * gamma_over_std + bn.bias, atol=1e-6)


@pytest.mark.parametrize("name", ["vgg-small", "resnet8", "alexnet-small", "lenet5"])
def test_folded_models_compute_the_same(name):
    torch.manual_seed(0)
    model = _random_bn(dq.models.create(name, image_size=8))
    x = torch.randn(5, 1, 8, 8)
    folded = copy.deepcopy(model)
    groups = fold_bn_(folded, x)
    assert groups and all(isinstance(folded.get_submodule(g.bn), nn.Identity) for g in groups if g.bn)
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), rtol=1e-4, atol=1e-5)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())


def test_linear_bn1d_folds():
    torch.manual_seed(1)
    model = _random_bn(nn.Sequential(nn.Linear(6, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)))
    x = torch.randn(8, 6)
    folded = copy.deepcopy(model)
    groups = fold_bn_(folded, x)
    assert [(g.layer, g.bn, g.relu) for g in groups] == [("0", "1", "2")]
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), atol=1e-5)


class SkipOverBN(nn.Module):
    """The conv's output is read by the BN *and* by a residual add: folding would change the add."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        self.bn = nn.BatchNorm2d(2)
        self.relu = nn.ReLU()

    def forward(self, x):
        y = self.conv(x)
        return self.relu(self.bn(y)) + y


def test_no_fold_when_the_conv_output_has_another_reader():
    model = _random_bn(SkipOverBN())
    x = torch.randn(2, 2, 5, 5)
    graph = trace(model, x)
    assert find_fusions(model, graph) == []
    folded = copy.deepcopy(model)
    fold_bn_(folded, x)
    assert isinstance(folded.bn, nn.BatchNorm2d)


def test_trace_records_residual_dataflow():
    model = dq.models.create("resnet8", image_size=8).eval()
    graph = trace(model, torch.randn(2, 1, 8, 8))
    first = graph.module_node("features.conv1")
    assert first is not None and graph.producer[first.inputs[0]] == INPUT
    adds = [n for n in graph.nodes if n.kind == "function" and n.target == "add"]
    assert [a.owner for a in adds] == ["features.layer1.0", "features.layer2.0", "features.layer3.0"]
    # layer1's add reads bn2's output and the identity shortcut's (a new value, though the same tensor)
    sources = [graph.source(v).target for v in adds[0].inputs]
    assert sources == ["features.layer1.0.bn2", "features.layer1.0.shortcut"]
    assert graph.source(graph.outputs[0]).target == "classifier.fc"
