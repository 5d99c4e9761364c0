"""Fully connected nets: the teachers and students of the original distillation experiments.

Hinton, Vinyals & Dean (2015), "Distilling the Knowledge in a Neural Network", distil a
1200-1200 MLP (with dropout) into an 800-800 one on MNIST; LeCun et al. (1998) give the 300-100
"LeNet-300-100" used throughout the pruning literature (Han et al., 2015). All are one class, the
presets differing only in defaults.

Layout: ``classifier`` only, an ``nn.Sequential`` that flattens first and ends with the final
``nn.Linear``; layers are named ``fc1, relu1, drop1, fc2, ...`` so feature paths such as
``"classifier.relu1"`` read well in recipes. A dropout layer is always present (``p=0`` is a no-op)
so module paths do not depend on the dropout option.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from distiq.errors import DistiqError
from distiq.models.zoo import MODELS


class MLP(nn.Module):
    """Flatten, then ``Linear -> ReLU -> Dropout`` per hidden width, then the output ``Linear``.

    Args:
        num_classes: Output logits.
        in_channels: Input channels.
        image_size: Input side; the first layer takes ``in_channels * image_size**2`` features.
        hidden: Hidden widths, first to last; empty gives a linear classifier.
        dropout: Dropout probability after each hidden ReLU.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: int = 28,
        hidden: Sequence[int] = (256, 128),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        hidden = [int(h) for h in hidden]
        if any(h < 1 for h in hidden):
            raise DistiqError(f"mlp: hidden widths must be positive, got {hidden}")
        if not 0.0 <= dropout < 1.0:
            raise DistiqError(f"mlp: dropout must be in [0, 1), got {dropout}")
        self.config = dict(
            name="mlp",
            num_classes=num_classes,
            in_channels=in_channels,
            image_size=image_size,
            hidden=hidden,
            dropout=dropout,
        )
        layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
        width = in_channels * image_size * image_size
        for i, h in enumerate(hidden, start=1):
            layers[f"fc{i}"] = nn.Linear(width, h)
            layers[f"relu{i}"] = nn.ReLU()
            layers[f"drop{i}"] = nn.Dropout(dropout)
            width = h
        layers[f"fc{len(hidden) + 1}"] = nn.Linear(width, num_classes)
        self.classifier = nn.Sequential(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x)


def _preset(name: str, model: MLP) -> MLP:
    model.config["name"] = name
    return model


@MODELS.register("mlp")
def mlp(
    num_classes: int = 10,
    in_channels: int = 1,
    image_size: int = 28,
    hidden: Sequence[int] = (256, 128),
    dropout: float = 0.0,
) -> MLP:
    """A general MLP; choose the widths with ``hidden``."""
    return MLP(num_classes, in_channels, image_size, hidden, dropout)


@MODELS.register("mlp-1200-1200")
def mlp_1200_1200(
    num_classes: int = 10,
    in_channels: int = 1,
    image_size: int = 28,
    hidden: Sequence[int] = (1200, 1200),
    dropout: float = 0.2,
) -> MLP:
    """Hinton et al.'s (2015) big MNIST teacher: two 1200-unit layers, dropout-regularised."""
    return _preset("mlp-1200-1200", MLP(num_classes, in_channels, image_size, hidden, dropout))


@MODELS.register("mlp-800-800")
def mlp_800_800(
    num_classes: int = 10,
    in_channels: int = 1,
    image_size: int = 28,
    hidden: Sequence[int] = (800, 800),
    dropout: float = 0.0,
) -> MLP:
    """Hinton et al.'s (2015) small MNIST net, the student of the 1200-1200 teacher."""
    return _preset("mlp-800-800", MLP(num_classes, in_channels, image_size, hidden, dropout))


@MODELS.register("lenet300-100")
def lenet300_100(
    num_classes: int = 10,
    in_channels: int = 1,
    image_size: int = 28,
    hidden: Sequence[int] = (300, 100),
    dropout: float = 0.0,
) -> MLP:
    """LeNet-300-100 (LeCun et al., 1998): 266,610 parameters on 28x28 MNIST, a pruning staple."""
    return _preset("lenet300-100", MLP(num_classes, in_channels, image_size, hidden, dropout))
