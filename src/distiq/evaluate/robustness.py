"""Accuracy under corrupted inputs: Gaussian noise, blur and contrast change at five severities.

Why: compression can keep clean accuracy and still lose robustness (quantization and pruning remove
the slack that absorbed input noise), which a clean test set never shows. The corruptions follow
the spirit of ImageNet-C / CIFAR-10-C (Hendrycks & Dietterich, 2019) with severities scaled to the
data's own value range, so normalised and ``[0, 1]`` images are corrupted alike:

- ``gaussian_noise``: ``x + N(0, (σ·range)²)``, clipped to the data's ``[min, max]``.
- ``blur``: Gaussian blur with standard deviation ``σ`` pixels (``scipy.ndimage.gaussian_filter``,
  edge pixels repeated, kernel radius ``int(4σ + 0.5)``).
- ``contrast``: ``(x - mean) · c + mean`` with each image's own mean, ``c < 1``.

Everything is deterministic: the noise of a severity comes from a generator seeded by
``(seed, severity)``, so two models are always judged on the very same corrupted images.
A user adds a corruption with ``@CORRUPTIONS.register("name")`` on a function
``(x, severity, generator, lo, hi) -> x``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.utils.data import Dataset

from distiq.data.arrays import ArrayDataset, as_arrays
from distiq.registry import Registry

CORRUPTIONS: Registry = Registry("corruption")
SEVERITIES = (1, 2, 3, 4, 5)

NOISE_SIGMA = (0.04, 0.08, 0.12, 0.18, 0.26)  # fraction of the value range
BLUR_SIGMA = (0.5, 0.75, 1.0, 1.5, 2.0)  # pixels
CONTRAST = (0.75, 0.5, 0.4, 0.3, 0.2)  # factor on the deviation from the image mean


def _level(table: Sequence[float], severity: int) -> float:
    if not 1 <= severity <= len(table):
        raise ValueError(f"severity must be in 1..{len(table)}, got {severity}")
    return table[severity - 1]


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur ``[N, C, H, W]`` with a Gaussian of ``sigma`` pixels over H and W (scipy.ndimage's filter,
    radius ``int(4σ + 0.5)``); borders repeat the edge pixel."""
    from scipy import ndimage  # on use: scipy's import is slow and most commands never blur

    blurred = ndimage.gaussian_filter(x.numpy(), sigma=(0, 0, sigma, sigma), mode="nearest", truncate=4.0)
    return torch.from_numpy(blurred)


@CORRUPTIONS.register("gaussian_noise")
def gaussian_noise(x: torch.Tensor, severity: int, generator: torch.Generator, lo: float, hi: float):
    """Additive Gaussian noise of std ``NOISE_SIGMA[severity-1] · (hi - lo)``, clipped to ``[lo, hi]``."""
    sigma = _level(NOISE_SIGMA, severity) * (hi - lo)
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    return (x + sigma * noise).clamp(lo, hi)


@CORRUPTIONS.register("blur")
def blur(x: torch.Tensor, severity: int, generator: torch.Generator, lo: float, hi: float):
    """Gaussian blur of ``BLUR_SIGMA[severity-1]`` pixels."""
    return gaussian_blur(x, _level(BLUR_SIGMA, severity))


@CORRUPTIONS.register("contrast")
def contrast(x: torch.Tensor, severity: int, generator: torch.Generator, lo: float, hi: float):
    """Shrink each image's deviation from its own mean by ``CONTRAST[severity-1]``."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * _level(CONTRAST, severity) + mean


def corrupt(data: Dataset, kind: str, severity: int, seed: int = 0) -> ArrayDataset:
    """A corrupted copy of ``data`` (labels unchanged); same arguments, same images.

    The value range ``[lo, hi]`` used for scaling and clipping is the clean data's min and max.
    """
    fn = CORRUPTIONS.get(kind)
    ds = as_arrays(data)
    gen = torch.Generator().manual_seed(seed * 1009 + severity)
    lo, hi = (float(ds.x.min()), float(ds.x.max())) if len(ds) else (0.0, 1.0)
    x = fn(ds.x, severity, gen, lo, hi)
    return ArrayDataset(x, ds.y, ds.classes, f"{ds.name}+{kind}{severity}")


@dataclass
class RobustnessResult:
    """Accuracy on clean and corrupted copies of a dataset.

    Attributes:
        clean_accuracy: Accuracy on the unmodified data.
        accuracy: ``{corruption: {severity: accuracy}}`` (severity keys as strings, for JSON).
        mean_corrupted_accuracy: Mean over every corruption and severity (``None`` if none).
        seed: Seed of the corruptions.
    """

    clean_accuracy: float
    accuracy: dict[str, dict[str, float]] = field(default_factory=dict)
    mean_corrupted_accuracy: float | None = None
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def robustness(
    model: nn.Module | str | os.PathLike[str] | Callable[[ArrayDataset], torch.Tensor],
    data: Dataset,
    corruptions: Sequence[str] = ("gaussian_noise", "blur", "contrast"),
    severities: Sequence[int] = SEVERITIES,
    *,
    seed: int = 0,
    batch_size: int = 256,
) -> RobustnessResult:
    """Accuracy of ``model`` (module, ``.onnx`` path, or a ``dataset -> logits`` callable) under
    each corruption at each severity.
    """
    from .api import logits_fn  # api imports this module for evaluate_full

    if isinstance(model, (nn.Module, str, os.PathLike)):
        predict = logits_fn(model, batch_size)
    else:
        predict = model
    ds = as_arrays(data)

    def acc(d: ArrayDataset) -> float:
        return float((predict(d).argmax(1) == d.y).double().mean()) if len(d) else 0.0

    result = RobustnessResult(clean_accuracy=acc(ds), seed=seed)
    for kind in corruptions:
        result.accuracy[kind] = {str(s): acc(corrupt(ds, kind, s, seed)) for s in severities}
    values = [v for per in result.accuracy.values() for v in per.values()]
    result.mean_corrupted_accuracy = sum(values) / len(values) if values else None
    return result
