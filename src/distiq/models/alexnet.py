"""A small AlexNet (Krizhevsky et al., 2012) for 8-32 pixel images.

Same shape as the original — five convs (two wide-kernel, three 3x3) with three max pools, then
three fully connected layers with dropout — at widths a CPU trains in minutes (32-64-96-96-64 convs,
256-128 hidden units, all times ``width``). Batch norm after each conv (on by default, absent in
2012) makes a short training run converge; ``batch_norm=False`` gives a Conv+ReLU net, the other
fusion pattern quantization meets.

Unlike VGG-small it flattens the last feature map instead of average pooling it, so pruning a conv
channel also shrinks the first Linear's input: the flatten size is computed from the image size,
with pools that would empty the image kept as ``nn.Identity``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from distiq.errors import DistiqError
from distiq.models.zoo import MODELS, pool_or_skip, scaled

# (out channels, kernel size, then pool?) per conv; padding keeps the size ("same" convs).
_CONVS = ((32, 5, True), (64, 5, True), (96, 3, False), (96, 3, False), (64, 3, True))
_HIDDEN = (256, 128)


class AlexNetSmall(nn.Module):
    """Five conv(-bn)-relu layers with three pools, then flatten and three Linear layers.

    Args:
        num_classes: Output logits.
        in_channels: Input channels.
        image_size: Input side.
        width: Multiplier on every conv and hidden width (0.5 gives a student about 1/4 the size).
        dropout: Dropout probability before each hidden Linear.
        batch_norm: Put ``BatchNorm2d`` between each conv and its ReLU.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: int = 28,
        width: float = 1.0,
        dropout: float = 0.5,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise DistiqError(f"alexnet-small: dropout must be in [0, 1), got {dropout}")
        self.config = dict(
            name="alexnet-small",
            num_classes=num_classes,
            in_channels=in_channels,
            image_size=image_size,
            width=width,
            dropout=dropout,
            batch_norm=batch_norm,
        )
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        channels, size, pools = in_channels, image_size, 0
        for i, (out, kernel, pool) in enumerate(_CONVS, start=1):
            out = scaled(out, width)
            layers[f"conv{i}"] = nn.Conv2d(channels, out, kernel, padding=kernel // 2, bias=not batch_norm)
            if batch_norm:
                layers[f"bn{i}"] = nn.BatchNorm2d(out)
            layers[f"relu{i}"] = nn.ReLU()
            if pool:
                pools += 1
                layers[f"pool{pools}"], size = pool_or_skip(size)
            channels = out
        self.features = nn.Sequential(layers)

        head: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
        features = channels * size * size
        for i, hidden in enumerate(_HIDDEN, start=1):
            hidden = scaled(hidden, width)
            head[f"drop{i}"] = nn.Dropout(dropout)
            head[f"fc{i}"] = nn.Linear(features, hidden)
            head[f"relu{i}"] = nn.ReLU()
            features = hidden
        head[f"fc{len(_HIDDEN) + 1}"] = nn.Linear(features, num_classes)
        self.classifier = nn.Sequential(head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@MODELS.register("alexnet-small")
def alexnet_small(
    num_classes: int = 10,
    in_channels: int = 1,
    image_size: int = 28,
    width: float = 1.0,
    dropout: float = 0.5,
    batch_norm: bool = True,
) -> AlexNetSmall:
    """AlexNet shape at CPU size; a mid-sized teacher with a wide flatten into its first Linear."""
    return AlexNetSmall(num_classes, in_channels, image_size, width, dropout, batch_norm)
