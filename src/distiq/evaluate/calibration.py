"""Calibration: does a model's confidence match how often it is right?

Compression tends to change confidence even where it keeps top-1 accuracy (a quantized or distilled
student is often over- or under-confident), and downstream thresholds rely on it. The measure is the
expected calibration error of Guo et al. (2017), "On Calibration of Modern Neural Networks", with
``M`` equal-width confidence bins over ``[0, 1]``::

    B_m = {i : (m-1)/M < conf_i <= m/M}                    conf_i = max_k p_ik
    ECE = Σ_m |B_m| / n · |acc(B_m) - conf(B_m)|

where ``acc(B_m)`` is the fraction of samples in the bin predicted correctly and ``conf(B_m)`` their
mean confidence. The per-bin table (a reliability diagram) is returned too, for the report.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

DEFAULT_BINS = 15


@dataclass
class CalibrationBins:
    """A reliability diagram: per-bin counts, accuracy and mean confidence.

    Attributes:
        edges: ``M + 1`` bin edges from 0 to 1.
        counts: Samples per bin.
        accuracy: Fraction correct per bin (0 for an empty bin).
        confidence: Mean confidence per bin (0 for an empty bin).
        ece: The expected calibration error these bins give.
    """

    edges: list[float]
    counts: list[int]
    accuracy: list[float]
    confidence: list[float]
    ece: float

    def to_dict(self) -> dict:
        return asdict(self)


def _as_probs(probs: torch.Tensor | np.ndarray) -> np.ndarray:
    p = probs.detach().cpu().double().numpy() if torch.is_tensor(probs) else np.asarray(probs, float)
    if p.ndim != 2:
        raise ValueError(f"expected probabilities [N, K], got shape {p.shape}")
    return p


def calibration_bins(
    probs: torch.Tensor | np.ndarray,
    target: torch.Tensor | np.ndarray,
    n_bins: int = DEFAULT_BINS,
) -> CalibrationBins:
    """Bin samples by confidence into ``n_bins`` equal-width bins ``((m-1)/M, m/M]``.

    Args:
        probs: ``[N, K]`` class probabilities (apply softmax to logits first).
        target: ``[N]`` true class indices.
        n_bins: ``M``; 15 as in Guo et al. (2017).
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    p = _as_probs(probs)
    y = np.asarray(target.cpu() if torch.is_tensor(target) else target).astype(np.int64)
    if len(y) != len(p):
        raise ValueError(f"{len(p)} rows of probabilities but {len(y)} targets")
    conf = p.max(axis=1) if len(p) else np.zeros(0)
    correct = (p.argmax(axis=1) == y) if len(p) else np.zeros(0, bool)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # searchsorted on the interior edges: conf <= edges[1] -> bin 0, i.e. bins closed on the right.
    which = np.searchsorted(edges[1:-1], conf, side="left")
    counts = np.bincount(which, minlength=n_bins)
    hits = np.bincount(which, weights=correct.astype(float), minlength=n_bins)
    conf_sum = np.bincount(which, weights=conf, minlength=n_bins)
    safe = np.maximum(counts, 1)
    acc, mean_conf = hits / safe, conf_sum / safe
    n = max(len(y), 1)
    ece = float(np.sum(counts / n * np.abs(acc - mean_conf)))
    return CalibrationBins(
        edges=edges.tolist(),
        counts=counts.astype(int).tolist(),
        accuracy=acc.tolist(),
        confidence=mean_conf.tolist(),
        ece=ece,
    )


def expected_calibration_error(
    probs: torch.Tensor | np.ndarray,
    target: torch.Tensor | np.ndarray,
    n_bins: int = DEFAULT_BINS,
) -> float:
    """ECE of Guo et al. (2017) in ``[0, 1]``; see the module docstring for the formula."""
    return calibration_bins(probs, target, n_bins).ece
