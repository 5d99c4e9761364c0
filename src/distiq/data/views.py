"""A finite set of label-preserving views of each training image: mirrored, shifted by whole pixels.

Why finite: offline distillation caches the teacher's outputs per training sample, and a random
augmentation would make every epoch's input new to the teacher. With a fixed set of views the cache
holds the teacher's outputs for every (sample, view) pair, computed once, so a student trained on
augmented images still learns from the teacher's answer for exactly the image it sees ("a consistent
teacher", Beyer et al., CVPR 2022; soft labels stored per crop, Shen et al., ECCV 2022).

Views are numbered ``0 .. count - 1``; row ``view * N + i`` of the augmented training set is view
``view`` of sample ``i``. Each epoch the engine draws one view per sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from distiq.errors import DataError


@dataclass(frozen=True)
class ImageViews:
    """Mirror left-right (``flip``) and shift by up to ``shift`` pixels along each axis.

    A shifted image repeats its border row or column into the space it leaves (Fashion-MNIST's and
    the digits' borders are background), so no view invents a value the data does not hold.
    """

    flip: bool = False
    shift: int = 0

    @property
    def count(self) -> int:
        """How many views each image has (1: the image itself only)."""
        return (2 * self.shift + 1) ** 2 * (2 if self.flip else 1)

    def offsets(self, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per view id: ``(mirrored, dy, dx)``: the image mirrored left-right or not, then moved ``dy``
        pixels down and ``dx`` right (view 0 of ``shift = s`` moves by ``(-s, -s)``)."""
        flips = 2 if self.flip else 1
        side = 2 * self.shift + 1
        place = views // flips
        return views % flips == 1, place // side - self.shift, place % side - self.shift

    def apply(self, x: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        """View ``views[i]`` of image ``x[i]`` for every image of a batch ``[N, C, H, W]``."""
        if x.ndim != 4:
            raise DataError(f"augment: expected image batches [N, C, H, W], got shape {list(x.shape)}")
        n, _, h, w = x.shape
        mirrored, dy, dx = self.offsets(views)
        rows = (torch.arange(h)[None, :] - dy[:, None]).clamp(0, h - 1)  # [N, H]
        cols = (torch.arange(w)[None, :] - dx[:, None]).clamp(0, w - 1)  # [N, W]
        cols = torch.where(mirrored[:, None], w - 1 - cols, cols)
        picked = x[torch.arange(n)[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # [N, H, W, C]
        return picked.permute(0, 3, 1, 2).contiguous()

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """One view id per sample, uniformly."""
        return torch.randint(self.count, (n,), generator=generator)
