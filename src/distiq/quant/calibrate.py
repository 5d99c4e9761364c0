"""``calibrate``: one call from calibration samples to a quantization grid.

Why a function over the registry: recipes and the command line name a calibrator (``method="kl"``)
and its options as plain keys; this looks the class up in :data:`~distiq.quant.observers.OBSERVERS`,
checks the options against its constructor (so a typo fails here, naming the valid options) and
streams the samples through it, one batch at a time, never concatenating them.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from distiq.errors import DistiqError
from distiq.quant.observers import OBSERVERS, QParams

Tensor = torch.Tensor
_COMMON = ("bits", "symmetric", "axis")


def calibrate(
    samples: Tensor | Iterable[Tensor],
    method: str = "minmax",
    bits: int = 8,
    symmetric: bool = True,
    axis: int | None = None,
    **options: Any,
) -> QParams:
    """Calibrate a quantization grid on ``samples``.

    Args:
        samples: One tensor, or an iterable of tensors (e.g. a generator of activation batches),
            observed one at a time.
        method: A registered calibrator: ``"minmax"``, ``"ema"``, ``"percentile"``, ``"kl"``,
            ``"mse"``, or one a user registered.
        bits: Integer width, 2 to 8.
        symmetric: Signed grid with zero point 0 (weights), or unsigned with a zero point.
        axis: ``None`` per-tensor, or the channel axis for per-channel ranges.
        **options: Method options, e.g. ``momentum`` (ema), ``bins`` and ``percentile``
            (percentile), ``bins``, ``start_bin`` and ``stride`` (kl), ``bins`` (mse).

    Returns:
        :class:`~distiq.quant.observers.QParams` with ``scale``, ``zero_point``, ``lo``, ``hi``.

    Raises:
        ValueError: (:class:`~distiq.errors.DistiqError`) an unknown method or option, bad bits,
            no samples, a sample that is not a tensor, NaN/inf values.
    """
    factory = OBSERVERS.get(method)
    params = inspect.signature(factory).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        accepted = [name for name in params if name not in _COMMON]
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise DistiqError(
                f"calibrator {method!r} has no option {', '.join(unknown)}; "
                f"its options: {', '.join(accepted) or 'none'}"
            )
    observer = factory(bits=bits, symmetric=symmetric, axis=axis, **options)
    batches = [samples] if isinstance(samples, Tensor | np.ndarray) else samples
    seen = 0
    for batch in batches:
        if not isinstance(batch, Tensor | np.ndarray):
            raise DistiqError(f"calibration samples must be tensors, got {type(batch).__name__}")
        observer.observe(torch.as_tensor(batch))
        seen += 1
    if seen == 0:
        raise DistiqError("no calibration samples: the iterable was empty")
    return observer.qparams()
