"""CIFAR-style ResNets (He et al., 2016, "Deep Residual Learning", section 4.2).

A 3x3 stem, then three stages of ``n`` basic blocks at 16, 32 and 64 channels (times ``width``), the
second and third halving the image; global average pooling and one Linear. Depth ``6n + 2``:
resnet8, resnet14, resnet20 — the teacher/student pairs of the CIFAR KD literature (CRD, DKD).

Where a block changes shape the shortcut is a 1x1 conv + BN projection (option B of the paper) rather
than zero padding, because a projection is an ordinary conv that pruning and quantization handle like
any other. Stride-2 3x3 convs with padding 1 map a 1-pixel image to 1 pixel, so every size from 1 up
builds. Each ReLU is its own module and the residual sum is ``out + identity`` (never in place) so
Conv+BN+ReLU fuse by module and Torch-Pruning can trace the graph.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from distiq.errors import DistiqError
from distiq.models.zoo import MODELS, scaled

STAGE_CHANNELS = (16, 32, 64)


class BasicBlock(nn.Module):
    """``relu2(bn2(conv2(relu1(bn1(conv1(x))))) + shortcut(x))``; ``shortcut`` is a projection or identity.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        stride: Stride of ``conv1`` and of the projection.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = nn.Sequential(
                OrderedDict(
                    conv=nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                    bn=nn.BatchNorm2d(out_channels),
                )
            )
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class ResNet(nn.Module):
    """``features``: stem conv/bn/relu and ``layer1``-``layer3``; ``classifier``: pool, flatten, fc.

    Args:
        depth: ``6n + 2`` (8, 14, 20, 32, ...); ``n`` blocks per stage.
        num_classes: Output logits.
        in_channels: Input channels.
        image_size: Input side (recorded; the network itself works for any size).
        width: Multiplier on the 16/32/64 stage widths.
    """

    def __init__(
        self,
        depth: int = 20,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: int = 28,
        width: float = 1.0,
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise DistiqError(f"resnet: depth must be 6n + 2 with n >= 1, got {depth}")
        blocks = (depth - 2) // 6
        self.config = dict(
            name=f"resnet{depth}",
            num_classes=num_classes,
            in_channels=in_channels,
            image_size=image_size,
            width=width,
        )
        widths = [scaled(c, width) for c in STAGE_CHANNELS]
        layers: OrderedDict[str, nn.Module] = OrderedDict(
            conv1=nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
            bn1=nn.BatchNorm2d(widths[0]),
            relu1=nn.ReLU(),
        )
        channels = widths[0]
        for stage, out in enumerate(widths, start=1):
            stride = 1 if stage == 1 else 2
            stage_blocks = []
            for i in range(blocks):
                stage_blocks.append(BasicBlock(channels, out, stride if i == 0 else 1))
                channels = out
            layers[f"layer{stage}"] = nn.Sequential(*stage_blocks)
        self.features = nn.Sequential(layers)
        self.classifier = nn.Sequential(
            OrderedDict(
                pool=nn.AdaptiveAvgPool2d(1),
                flatten=nn.Flatten(),
                fc=nn.Linear(channels, num_classes),
            )
        )
        for module in self.modules():
            if isinstance(module, nn.Conv2d):  # He initialisation, as in the paper
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@MODELS.register("resnet8")
def resnet8(num_classes: int = 10, in_channels: int = 1, image_size: int = 28, width: float = 1.0) -> ResNet:
    """ResNet-8: one block per stage (about 78k parameters), the usual CIFAR KD student."""
    return ResNet(8, num_classes, in_channels, image_size, width)


@MODELS.register("resnet14")
def resnet14(num_classes: int = 10, in_channels: int = 1, image_size: int = 28, width: float = 1.0) -> ResNet:
    """ResNet-14: two blocks per stage."""
    return ResNet(14, num_classes, in_channels, image_size, width)


@MODELS.register("resnet20")
def resnet20(num_classes: int = 10, in_channels: int = 1, image_size: int = 28, width: float = 1.0) -> ResNet:
    """ResNet-20: three blocks per stage (about 0.27M parameters), the usual CIFAR KD teacher."""
    return ResNet(20, num_classes, in_channels, image_size, width)
