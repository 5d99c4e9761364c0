"""LeNet-5 (LeCun et al., 1998), adapted so it builds for any image size.

Classic layout: conv 6@5x5, pool, conv 16@5x5, pool, then 120-84-classes fully connected. Two
changes make it usable on anything from 8x8 digits to 32x32 colour images and friendly to
quantization and pruning:

* ReLU and max pooling instead of scaled tanh and trainable subsampling, as every modern
  re-implementation does; each ReLU is its own module so Conv+ReLU can be fused by module.
* The first conv pads by 2 (the usual stand-in for LeCun's 32x32 padded MNIST: 28x28 gives the
  classic 16x5x5 = 400 flatten size); the second pads by 2 only when its input is smaller than 5,
  and a pool that would shrink an image below 1 pixel becomes ``nn.Identity`` so module paths stay
  the same for every size. The flatten size is computed, never guessed.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from distiq.models.zoo import MODELS, pool_or_skip


class LeNet5(nn.Module):
    """LeNet-5 with ``features`` (conv/relu/pool) and ``classifier`` (flatten, fc1-fc3).

    Args:
        num_classes: Output logits.
        in_channels: Input channels.
        image_size: Input side (any size from 1 up builds; 8 and more is what it is meant for).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28) -> None:
        super().__init__()
        self.config = dict(
            name="lenet5", num_classes=num_classes, in_channels=in_channels, image_size=image_size
        )
        size = image_size  # conv1: 5x5, padding 2 keeps the size
        pool1, size = pool_or_skip(size)
        pad2 = 0 if size >= 5 else 2
        size = size + 2 * pad2 - 4
        pool2, size = pool_or_skip(size)
        self.features = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(in_channels, 6, kernel_size=5, padding=2),
                relu1=nn.ReLU(),
                pool1=pool1,
                conv2=nn.Conv2d(6, 16, kernel_size=5, padding=pad2),
                relu2=nn.ReLU(),
                pool2=pool2,
            )
        )
        self.classifier = nn.Sequential(
            OrderedDict(
                flatten=nn.Flatten(),
                fc1=nn.Linear(16 * size * size, 120),
                relu1=nn.ReLU(),
                fc2=nn.Linear(120, 84),
                relu2=nn.ReLU(),
                fc3=nn.Linear(84, num_classes),
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@MODELS.register("lenet5")
def lenet5(num_classes: int = 10, in_channels: int = 1, image_size: int = 28) -> LeNet5:
    """LeNet-5: about 61k parameters on 28x28 grey images, a small conv teacher or student."""
    return LeNet5(num_classes, in_channels, image_size)
