"""Image views for augmentation: each is the image shifted (border repeated) and maybe mirrored,
checked against numpy's edge padding and flipping; every (mirror, dy, dx) appears exactly once."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from distiq.data.views import ImageViews
from distiq.errors import DataError


def numpy_view(image: np.ndarray, mirrored: bool, dy: int, dx: int, pad: int) -> np.ndarray:
    """``image`` [C, H, W] mirrored left-right (when ``mirrored``), then moved down ``dy`` and right
    ``dx`` with its edges repeated."""
    _, h, w = image.shape
    image = image[:, :, ::-1] if mirrored else image
    padded = np.pad(image, ((0, 0), (pad, pad), (pad, pad)), mode="edge")
    return padded[:, pad - dy : pad - dy + h, pad - dx : pad - dx + w]


@pytest.mark.parametrize(
    ("flip", "shift", "count"), [(False, 0, 1), (True, 0, 2), (False, 1, 9), (True, 2, 50)]
)
def test_count_is_mirrors_times_shifts(flip, shift, count):
    assert ImageViews(flip=flip, shift=shift).count == count


@pytest.mark.parametrize(("flip", "shift"), [(True, 1), (False, 2), (True, 0)])
def test_every_view_is_numpys_shift_and_mirror_and_each_appears_once(flip, shift):
    views = ImageViews(flip=flip, shift=shift)
    image = torch.randn(2, 6, 7, generator=torch.Generator().manual_seed(0))
    ids = torch.arange(views.count)
    out = views.apply(image.expand(views.count, -1, -1, -1), ids).numpy()
    mirrored, dy, dx = views.offsets(ids)
    seen = set(zip(mirrored.tolist(), dy.tolist(), dx.tolist(), strict=True))
    expected = set(itertools.product([False, True] if flip else [False], *[range(-shift, shift + 1)] * 2))
    assert seen == expected and len(seen) == views.count
    for v in range(views.count):
        want = numpy_view(image.numpy(), bool(mirrored[v]), int(dy[v]), int(dx[v]), max(shift, 1))
        np.testing.assert_array_equal(out[v], want)


def test_a_batch_takes_each_samples_own_view():
    views = ImageViews(flip=True, shift=1)
    x = torch.randn(5, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    ids = torch.tensor([3, 0, 17, 9, 9])
    batch = views.apply(x, ids)
    for i, v in enumerate(ids):
        assert torch.equal(batch[i], views.apply(x[i : i + 1], v[None])[0])


def test_draws_are_in_range_and_cover_every_view():
    views = ImageViews(flip=True, shift=1)
    drawn = views.draw(18_000, torch.Generator().manual_seed(0))
    counts = torch.bincount(drawn, minlength=views.count)
    assert len(counts) == views.count
    assert int(counts.min()) > 800 and int(counts.max()) < 1200  # about 1000 each


def test_a_batch_that_is_not_images_is_named():
    with pytest.raises(
        DataError, match=r"augment: expected image batches \[N, C, H, W\], got shape \[4, 16\]"
    ):
        ImageViews(flip=True).apply(torch.zeros(4, 16), torch.zeros(4, dtype=torch.long))
