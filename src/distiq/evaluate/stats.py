"""Statistics that keep an evaluation honest about noise: intervals, bootstrap, McNemar.

A compressed model that scores 0.3 points below its teacher on one split may be worse or may be
noise. These functions say which:

- :func:`spread` summarises repeated measurements (splits, seeds, calibration subsets) as mean, std,
  min, max and a Student-t confidence interval for the mean.
- :func:`bootstrap_ci` puts a percentile-bootstrap interval on a metric of one test set.
- :func:`mcnemar` tests whether two models evaluated on the *same* samples differ in accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .metrics import METRICS


def _scipy_stats():
    """scipy.stats, imported on first use: it takes about a second, and most commands never need it."""
    from scipy import stats

    return stats


def int_array(values: torch.Tensor | np.ndarray | Sequence[int]) -> np.ndarray:
    """Predictions or labels in any form as a flat int64 numpy array."""
    if torch.is_tensor(values):
        values = values.detach().cpu().numpy()
    return np.asarray(values).astype(np.int64).ravel()


@dataclass
class Spread:
    """Summary of repeated measurements of one quantity.

    Attributes:
        n: Number of values.
        mean: Their mean.
        std: Sample standard deviation (``n - 1`` in the denominator); ``None`` when ``n < 2``.
        min: Smallest value.
        max: Largest value.
        ci_low: Lower end of the confidence interval for the mean; ``None`` when ``n < 2``.
        ci_high: Upper end; ``None`` when ``n < 2``.
        confidence: Level of the interval (0.95 by default).
        values: The values themselves, so a report can plot them.
    """

    n: int
    mean: float
    std: float | None
    min: float
    max: float
    ci_low: float | None
    ci_high: float | None
    confidence: float
    values: list[float]

    @property
    def half_width(self) -> float | None:
        """``t · s / √n``: the ± of the interval."""
        return None if self.ci_high is None else (self.ci_high - self.ci_low) / 2

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        if self.std is None:
            return f"{self.mean:.4g} (n=1)"
        return (
            f"{self.mean:.4g} ± {self.std:.2g} "
            f"({100 * self.confidence:g}% CI {self.ci_low:.4g}..{self.ci_high:.4g}, n={self.n})"
        )


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Student-t confidence interval for the mean: ``mean ± t_{(1+c)/2, n-1} · s / √n``.

    Why t and not 1.96: split estimates come from 3-10 runs, where the normal quantile would make
    the interval far too narrow (``t_{0.975, 4} = 2.78``).

    Raises:
        ValueError: Fewer than 2 values or a confidence outside ``(0, 1)``.
    """
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        raise ValueError(f"a confidence interval needs at least 2 values, got {len(x)}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    sem = x.std(ddof=1) / math.sqrt(len(x))
    if sem == 0:  # identical values: scipy's interval is undefined (NaN) at scale 0, the width is 0
        return float(x.mean()), float(x.mean())
    lo, hi = _scipy_stats().t.interval(confidence, len(x) - 1, loc=x.mean(), scale=sem)
    return float(lo), float(hi)


def spread(values: Sequence[float], confidence: float = 0.95) -> Spread:
    """Mean, std, min, max and the t interval of ``values`` (see :class:`Spread`).

    The generic summary for anything measured several times: metrics across splits or seeds, or a
    quantized model's accuracy across calibration subsets.
    """
    x = [float(v) for v in values]
    if not x:
        raise ValueError("spread of no values")
    lo = hi = std = None
    if len(x) >= 2:
        lo, hi = t_interval(x, confidence)
        std = float(np.std(x, ddof=1))
    return Spread(len(x), float(np.mean(x)), std, min(x), max(x), lo, hi, confidence, x)


@dataclass
class BootstrapInterval:
    """A percentile-bootstrap interval of one metric on one test set.

    Attributes:
        metric: Metric name (a key of ``METRICS``).
        estimate: The metric on the full test set.
        low: Lower percentile of the resampled metric.
        high: Upper percentile.
        confidence: Level of the interval.
        n_resamples: Bootstrap resamples drawn.
        seed: Seed of the resampling.
    """

    metric: str
    estimate: float
    low: float
    high: float
    confidence: float
    n_resamples: int
    seed: int

    def to_dict(self) -> dict:
        return asdict(self)


def bootstrap_ci(
    pred: torch.Tensor | np.ndarray,
    target: torch.Tensor | np.ndarray,
    metric: str = "accuracy",
    *,
    num_classes: int | None = None,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> BootstrapInterval:
    """Percentile bootstrap (Efron & Tibshirani, 1993) of ``metric`` over test samples.

    Each resample draws ``n`` samples with replacement; the metric is computed from the resample's
    confusion matrix, so any ``METRICS`` entry (accuracy, macro F1, ...) works. Resampling and the
    percentile interval are ``scipy.stats.bootstrap``'s (``method="percentile"``); distiq supplies the
    statistic, vectorised as one ``bincount`` per batch of resamples.

    Why bootstrap here and t intervals across splits: a test set is one sample of the data
    distribution; the bootstrap shows how much the metric would move on another test set of the
    same size, with no normality assumption, which matters for macro F1 on rare classes.

    Args:
        pred: ``[N]`` predicted classes.
        target: ``[N]`` true classes.
        metric: Name in :data:`distiq.evaluate.metrics.METRICS`.
        num_classes: Size of the confusion matrix (default: inferred from the labels).
        n_resamples: Number of resamples.
        confidence: Level of the interval.
        seed: Seed of the resampling; same seed, same interval.
    """
    fn = METRICS.get(metric)
    p, y = int_array(pred), int_array(target)
    if len(p) != len(y) or len(p) == 0:
        raise ValueError(f"need equally many predictions and targets (> 0), got {len(p)} and {len(y)}")
    k = num_classes or int(max(p.max(), y.max())) + 1
    flat = y * k + p  # one code per (true, predicted) pair: a resample's bincount is its confusion matrix

    def statistic(codes: np.ndarray, axis: int = -1) -> np.ndarray:
        rows = np.moveaxis(codes, axis, -1).reshape(-1, codes.shape[axis])
        offsets = (np.arange(len(rows)) * k * k)[:, None]
        cms = np.bincount((rows + offsets).ravel(), minlength=len(rows) * k * k).reshape(-1, k, k)
        return np.array([fn(torch.from_numpy(cm)) for cm in cms]).reshape(codes.shape[:axis] or ())

    result = _scipy_stats().bootstrap(
        (flat,),
        statistic,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",
        vectorized=True,
        batch=max(1, 2_000_000 // len(p)),  # resamples per vectorised bincount, bounding memory
        rng=np.random.default_rng(seed),
    )
    lo, hi = result.confidence_interval
    full = np.bincount(flat, minlength=k * k).reshape(k, k)
    return BootstrapInterval(
        metric, fn(torch.from_numpy(full)), float(lo), float(hi), confidence, n_resamples, seed
    )


@dataclass
class McNemarResult:
    """McNemar's paired test of two classifiers on the same samples.

    Attributes:
        only_a_correct: ``b``: samples model A gets right and model B wrong.
        only_b_correct: ``c``: samples model B gets right and model A wrong.
        statistic: ``min(b, c)`` for the exact test, the chi-square value otherwise.
        p_value: Two-sided p-value of "both models have the same accuracy".
        method: ``"exact"`` (binomial) or ``"chi2"`` (with continuity correction).
    """

    only_a_correct: int
    only_b_correct: int
    statistic: float
    p_value: float
    method: str

    def to_dict(self) -> dict:
        return asdict(self)


def mcnemar(
    pred_a: torch.Tensor | np.ndarray,
    pred_b: torch.Tensor | np.ndarray,
    target: torch.Tensor | np.ndarray,
    *,
    exact: bool | None = None,
    exact_below: int = 25,
) -> McNemarResult:
    """McNemar's test (McNemar, 1947) on the discordant pairs of two models' predictions.

    Only samples where exactly one model is right carry information: ``b`` (A right, B wrong) and
    ``c`` (B right, A wrong). Under "equal accuracy" each discordant sample is a fair coin flip, so

    - exact: ``p = min(1, 2 · P(X <= min(b, c)))`` with ``X ~ Binomial(b + c, 1/2)``;
    - chi-square (Edwards' continuity correction): ``χ² = (|b - c| - 1)² / (b + c)``, 1 dof.

    Why paired: the float and the compressed model see the same test samples, so comparing their
    two accuracies as if independent wastes most of the evidence (they agree on almost every sample).

    Args:
        pred_a: ``[N]`` predictions of model A.
        pred_b: ``[N]`` predictions of model B.
        target: ``[N]`` true classes.
        exact: Force the exact (True) or chi-square (False) form; ``None`` picks exact when
            ``b + c < exact_below``, where the chi-square approximation is poor.
        exact_below: The threshold for ``exact=None``.
    """
    a, b_, y = int_array(pred_a), int_array(pred_b), int_array(target)
    if not len(a) == len(b_) == len(y):
        raise ValueError(f"need equally many predictions and targets, got {len(a)}, {len(b_)}, {len(y)}")
    ok_a, ok_b = a == y, b_ == y
    b, c = int(np.sum(ok_a & ~ok_b)), int(np.sum(~ok_a & ok_b))
    n = b + c
    use_exact = n < exact_below if exact is None else exact
    if n == 0:
        return McNemarResult(b, c, 0.0, 1.0, "exact" if use_exact else "chi2")
    if use_exact:
        p = min(1.0, 2.0 * float(_scipy_stats().binom.cdf(min(b, c), n, 0.5)))
        return McNemarResult(b, c, float(min(b, c)), p, "exact")
    chi2 = (abs(b - c) - 1) ** 2 / n
    return McNemarResult(b, c, float(chi2), float(_scipy_stats().chi2.sf(chi2, 1)), "chi2")
