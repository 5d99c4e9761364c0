"""Small VGG nets (Simonyan & Zisserman, 2015): stacks of 3x3 conv-bn-relu with max pools.

The plain, residual-free conv net is the easiest case for structured pruning and per-channel
quantization, and its ``width`` multiplier makes students of any size from the same code (the
FitNets / "thin and deep" recipe, Romero et al., 2015). The layer list is a ``cfg`` in the style of
torchvision's VGG: an int is a conv of that many output channels, ``"M"`` a 2x2 max pool.

The head is global average pooling then one Linear (as in the CIFAR VGGs of the network-slimming
and KD literature), which keeps the classifier's size independent of the image size; a pool that
would empty the image is kept as ``nn.Identity`` so the module paths never depend on the size.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from distiq.errors import DistiqError
from distiq.models.zoo import MODELS, pool_or_skip, scaled

# Layer lists by number of convs; 5 (the default) is 32-32-M-64-64-M-128-M.
VGG_CFGS: dict[int, tuple[int | str, ...]] = {
    3: (32, "M", 64, "M", 128, "M"),
    5: (32, 32, "M", 64, 64, "M", 128, "M"),
    8: (32, 32, "M", 64, 64, "M", 128, 128, "M", 256, 256, "M"),
}


class VGGSmall(nn.Module):
    """``features``: conv-bn-relu blocks and pools from ``cfg``; ``classifier``: pool, flatten, fc.

    Args:
        num_classes: Output logits.
        in_channels: Input channels.
        image_size: Input side.
        width: Multiplier on every conv width (students: 0.25-0.5).
        depth: Number of convs, picking a layer list from ``VGG_CFGS``; ignored if ``cfg`` is given.
        cfg: Own layer list: ints are conv widths (before ``width``), ``"M"`` a max pool.
        stem_stride: Stride of the first conv. 2 halves the image at the first layer, which every
            later conv then runs on: a quarter of their work. A learned downsampling costs less
            accuracy than a pool before the first conv, and it is how a student gets 10x faster
            than its teacher (MobileNet's and ResNet's stems do the same).
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: int = 28,
        width: float = 1.0,
        depth: int = 5,
        cfg: Sequence[int | str] | None = None,
        stem_stride: int = 1,
    ) -> None:
        super().__init__()
        layers_cfg = _resolve_cfg(depth, cfg)
        if stem_stride not in (1, 2):
            raise DistiqError(f"vgg-small: stem_stride must be 1 or 2, got {stem_stride!r}")
        self.config = dict(
            name="vgg-small",
            num_classes=num_classes,
            in_channels=in_channels,
            image_size=image_size,
            width=width,
            depth=depth,
            cfg=None if cfg is None else list(layers_cfg),
            stem_stride=stem_stride,
        )
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        channels, size, convs, pools = in_channels, image_size, 0, 0
        for item in layers_cfg:
            if item == "M":
                pools += 1
                layers[f"pool{pools}"], size = pool_or_skip(size)
                continue
            convs += 1
            out = scaled(int(item), width)
            stride = stem_stride if convs == 1 else 1
            layers[f"conv{convs}"] = nn.Conv2d(channels, out, 3, stride=stride, padding=1, bias=False)
            size = (size + stride - 1) // stride
            layers[f"bn{convs}"] = nn.BatchNorm2d(out)
            layers[f"relu{convs}"] = nn.ReLU()
            channels = out
        self.features = nn.Sequential(layers)
        self.classifier = nn.Sequential(
            OrderedDict(
                pool=nn.AdaptiveAvgPool2d(1),  # exports as GlobalAveragePool for any size
                flatten=nn.Flatten(),
                fc=nn.Linear(channels, num_classes),
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _resolve_cfg(depth: int, cfg: Sequence[int | str] | None) -> tuple[int | str, ...]:
    """The layer list to build, checked here so a typo in a recipe fails before any training."""
    if cfg is None:
        if depth not in VGG_CFGS:
            known = ", ".join(str(d) for d in VGG_CFGS)
            raise DistiqError(f"vgg-small: depth must be one of {known} (or give cfg), got {depth}")
        return VGG_CFGS[depth]
    items = tuple(cfg)
    for item in items:
        is_width = isinstance(item, int) and not isinstance(item, bool) and item > 0
        if item != "M" and not is_width:
            raise DistiqError(f"vgg-small: cfg items are positive ints or 'M', got {item!r}")
    if not any(item != "M" for item in items):
        raise DistiqError(f"vgg-small: cfg needs at least one conv, got {list(items)}")
    return items


@MODELS.register("vgg-small")
def vgg_small(
    num_classes: int = 10,
    in_channels: int = 1,
    image_size: int = 28,
    width: float = 1.0,
    depth: int = 5,
    cfg: Sequence[int | str] | None = None,
    stem_stride: int = 1,
) -> VGGSmall:
    """A small VGG; ``width``, ``depth``/``cfg`` and ``stem_stride`` make teachers and students alike."""
    return VGGSmall(num_classes, in_channels, image_size, width, depth, cfg, stem_stride)
