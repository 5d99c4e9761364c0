"""Shared pieces of the ONNX-only quantization tests, as fixtures: small separable images, a short
training loop and an export with a dynamic batch axis, all in plain torch (the models stand for files
from elsewhere)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distiq.data.arrays import ArrayDataset


def _stripes(n: int, seed: int, classes: int = 4, channels: int = 3, size: int = 12) -> ArrayDataset:
    """Images of stripes whose orientation is the class (0, 45, 90, 135 degrees), at a random phase
    and frequency, tinted per channel, under unit Gaussian noise: separable by a small CNN with a
    global pool, but not by a single pixel."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    angle = y.double() * math.pi / classes
    freq = 0.9 + 0.4 * torch.rand(n, generator=g, dtype=torch.float64)
    phase = 2 * math.pi * torch.rand(n, generator=g, dtype=torch.float64)
    r = torch.arange(size, dtype=torch.float64)
    rows, cols = torch.meshgrid(r, r, indexing="ij")
    along = rows * torch.sin(angle)[:, None, None] + cols * torch.cos(angle)[:, None, None]
    wave = torch.sin(freq[:, None, None] * along + phase[:, None, None])
    tint = torch.linspace(0.6, 1.4, channels, dtype=torch.float64)
    x = 0.4 * wave[:, None] * tint[None, :, None, None]
    x = x + torch.randn(n, channels, size, size, generator=g, dtype=torch.float64)
    return ArrayDataset(x.float(), y)


def _train_briefly(model: nn.Module, data: ArrayDataset, epochs: int = 6, lr: float = 3e-3) -> nn.Module:
    """Adam on cross-entropy, batches of 64, seeded: a plain torch loop, nothing of distiq's."""
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(data)).split(64):
            loss = F.cross_entropy(model(data.x[idx]), data.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def _export(model: nn.Module, path: Path, example: torch.Tensor, opset: int = 17) -> Path:
    """``torch.onnx.export`` (TorchScript exporter), batch axis dynamic."""
    torch.onnx.export(
        model,
        example,
        str(path),
        dynamo=False,
        opset_version=opset,
        input_names=["x"],
        output_names=["logits"],
        dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}},
    )
    return path


@pytest.fixture(scope="session")
def stripes():
    return _stripes


@pytest.fixture(scope="session")
def train_briefly():
    return _train_briefly


@pytest.fixture(scope="session")
def export():
    return _export
