"""Estimates across several data splits: repeated random subsampling, k-fold, data ratios.

One train/test split gives one number; a different split gives another. These runners refit on
several splits and report each metric as mean ± std with a 95% Student-t interval
(:func:`distiq.evaluate.stats.spread`), so "the student is 0.4 points worse" can be read against
how much the number moves by chance.

Every runner takes ``fit(train_subset) -> model``: any training, distillation or compression
pipeline plugs in. When ``fit`` accepts a ``seed`` keyword it also receives the split's index, so
runs on identical data (the 100% ratio) still differ in initialisation. Models are scored by
``score(model, test) -> {metric: value}``, by default :func:`distiq.evaluate.evaluate` with
``metrics``.

:func:`subsample_scores` and :func:`kfold_scores` are the no-refit forms for a finished model: its
predictions on a test set scored on repeated stratified subsamples or on k stratified folds of that
set (index draws by scikit-learn's ``StratifiedShuffleSplit`` and ``StratifiedKFold``), so the
interval says how much the test number moves with the draw of the test set.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from distiq.data.arrays import ArrayDataset, as_arrays
from distiq.data.sampling import kfold, split, subsample

from .metrics import METRICS, confusion_matrix
from .stats import Spread, int_array, spread

Fit = Callable[..., Any]
Score = Callable[[Any, ArrayDataset], Mapping[str, float]]


@dataclass
class SplitEstimate:
    """Metrics of one method across several splits.

    Attributes:
        method: ``"subsampling"``, ``"kfold"`` or ``"ratio"``.
        runs: One record per split: its metrics plus ``split``, ``n_train`` and ``n_test``.
        summary: Per metric, the :class:`~distiq.evaluate.stats.Spread` over the splits.
        settings: How the splits were drawn (fraction, k, seed, ratio...).
    """

    method: str
    runs: list[dict[str, float]] = field(default_factory=list)
    summary: dict[str, Spread] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        """One Markdown row per metric: mean ± std and the interval."""
        rows = ["| metric | mean ± std | 95% CI | n |", "|---|---|---|---|"]
        for name, s in self.summary.items():
            std = "n/a" if s.std is None else f"{s.std:.4f}"
            ci = "n/a" if s.ci_low is None else f"{s.ci_low:.4f} .. {s.ci_high:.4f}"
            rows.append(f"| {name} | {s.mean:.4f} ± {std} | {ci} | {s.n} |")
        return "\n".join(rows)


def default_score(metrics: Sequence[str], batch_size: int = 256) -> Score:
    """A ``score`` that runs :func:`distiq.evaluate.evaluate` with ``metrics``."""
    from .api import evaluate

    return lambda model, test: evaluate(model, test, metrics, batch_size=batch_size)


def _call_fit(fit: Fit, train: ArrayDataset, index: int) -> Any:
    try:
        params = inspect.signature(fit).parameters
    except (TypeError, ValueError):  # builtins and some callables have no signature
        params = {}
    takes_seed = "seed" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
    return fit(train, seed=index) if takes_seed else fit(train)


def _run(
    method: str,
    pairs: Sequence[tuple[ArrayDataset, ArrayDataset]],
    fit: Fit,
    score: Score,
    settings: dict[str, Any],
    confidence: float,
) -> SplitEstimate:
    est = SplitEstimate(method=method, settings=settings)
    for i, (train, test) in enumerate(pairs):
        model = _call_fit(fit, train, settings.get("seed", 0) + i)
        metrics = {k: float(v) for k, v in score(model, test).items()}
        est.runs.append({**metrics, "split": i, "n_train": len(train), "n_test": len(test)})
    names = [k for k in est.runs[0] if k not in ("split", "n_train", "n_test")] if est.runs else []
    est.summary = {k: spread([r[k] for r in est.runs], confidence) for k in names}
    return est


def repeated_subsampling(
    fit: Fit,
    data: Dataset,
    *,
    repeats: int = 5,
    test_fraction: float = 0.2,
    seed: int = 0,
    stratify: bool = True,
    metrics: Sequence[str] = ("accuracy", "f1_macro"),
    score: Score | None = None,
    confidence: float = 0.95,
) -> SplitEstimate:
    """Monte-Carlo cross-validation: ``repeats`` random train/test splits, a fit on each.

    Split ``i`` is :func:`distiq.data.split` with seed ``seed + i``. Unlike k-fold the test parts
    overlap, so the runs are not independent and the interval is somewhat optimistic; it is the
    usual choice when k-fold's fixed test size does not fit.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    ds = as_arrays(data)
    pairs = [split(ds, test_fraction, seed=seed + i, stratify=stratify) for i in range(repeats)]
    settings = {"repeats": repeats, "test_fraction": test_fraction, "seed": seed, "stratify": stratify}
    return _run("subsampling", pairs, fit, score or default_score(metrics), settings, confidence)


def cross_validate(
    fit: Fit,
    data: Dataset,
    *,
    k: int = 5,
    seed: int = 0,
    stratify: bool = True,
    metrics: Sequence[str] = ("accuracy", "f1_macro"),
    score: Score | None = None,
    confidence: float = 0.95,
) -> SplitEstimate:
    """k-fold cross-validation (:func:`distiq.data.kfold`): every sample is tested exactly once."""
    pairs = kfold(as_arrays(data), k, seed=seed, stratify=stratify)
    settings = {"k": k, "seed": seed, "stratify": stratify}
    return _run("kfold", pairs, fit, score or default_score(metrics), settings, confidence)


def data_ratios(
    fit: Fit,
    train_data: Dataset,
    test_data: Dataset,
    *,
    ratios: Sequence[float] = (0.1, 0.25, 0.5, 1.0),
    repeats: int = 3,
    seed: int = 0,
    stratify: bool = True,
    metrics: Sequence[str] = ("accuracy", "f1_macro"),
    score: Score | None = None,
    confidence: float = 0.95,
) -> dict[float, SplitEstimate]:
    """How the metrics grow with training data: fit on ``ratio`` of ``train_data``, test on all of
    ``test_data``, ``repeats`` times per ratio.

    Repeat ``i`` of a ratio draws its subset with :func:`distiq.data.subsample` and seed
    ``seed + i`` (so at ratio 1.0 only ``fit``'s own seed varies). Typical use: a student distilled
    on 10/25/50/100% of the transfer data.

    Returns:
        ``{ratio: SplitEstimate}`` in the order of ``ratios``.
    """
    train, test = as_arrays(train_data), as_arrays(test_data)
    out: dict[float, SplitEstimate] = {}
    for ratio in ratios:
        if not 0 < ratio <= 1:
            raise ValueError(f"ratios must be in (0, 1], got {ratio}")
        subsets = [
            train if ratio == 1 else subsample(train, float(ratio), seed=seed + i, stratify=stratify)
            for i in range(repeats)
        ]
        settings = {"ratio": ratio, "repeats": repeats, "seed": seed, "stratify": stratify}
        pairs = [(s, test) for s in subsets]
        out[ratio] = _run("ratio", pairs, fit, score or default_score(metrics), settings, confidence)
    return out


def ratios_table(estimates: Mapping[float, SplitEstimate], metric: str = "accuracy") -> str:
    """Markdown table of one metric across data ratios: mean ± std and interval per ratio."""
    rows = [f"| data ratio | n train | {metric} mean ± std | 95% CI |", "|---|---|---|---|"]
    for ratio, est in estimates.items():
        s = est.summary[metric]
        std = "n/a" if s.std is None else f"{s.std:.4f}"
        ci = "n/a" if s.ci_low is None else f"{s.ci_low:.4f} .. {s.ci_high:.4f}"
        rows.append(f"| {ratio:g} | {est.runs[0]['n_train']} | {s.mean:.4f} ± {std} | {ci} |")
    return "\n".join(rows)


def _scored(
    method: str,
    parts: Sequence[np.ndarray],
    pred: np.ndarray,
    target: np.ndarray,
    metrics: Sequence[str],
    settings: dict[str, Any],
    confidence: float,
) -> SplitEstimate:
    """One run per index set: ``metrics`` of the fixed predictions on those samples."""
    k = int(max(pred.max(), target.max())) + 1
    est = SplitEstimate(method=method, settings=settings)
    for i, idx in enumerate(parts):
        cm = confusion_matrix(torch.from_numpy(pred[idx]), torch.from_numpy(target[idx]), k)
        est.runs.append({**{m: float(METRICS.get(m)(cm)) for m in metrics}, "split": i, "n_test": len(idx)})
    est.summary = {m: spread([r[m] for r in est.runs], confidence) for m in metrics}
    return est


def subsample_scores(
    pred: torch.Tensor | np.ndarray,
    target: torch.Tensor | np.ndarray,
    *,
    repeats: int = 10,
    fraction: float = 0.5,
    seed: int = 0,
    metrics: Sequence[str] = ("accuracy",),
    confidence: float = 0.95,
) -> SplitEstimate:
    """A finished model's predictions scored on ``repeats`` stratified subsamples of the test set.

    Each subsample keeps ``fraction`` of the samples with the class proportions of the whole
    (``StratifiedShuffleSplit(repeats, train_size=fraction, random_state=seed)``). The subsamples
    overlap, so the interval is about the draw of a test set of that size, not an independent
    replication.

    Raises:
        ValueError: Fewer than 2 repeats, or a fraction leaving fewer samples than classes.
    """
    p, y = int_array(pred), int_array(target)
    if repeats < 2:
        raise ValueError(f"repeats must be >= 2 for an interval, got {repeats}")
    from sklearn.model_selection import StratifiedShuffleSplit  # on use: sklearn takes ~1.5 s to import

    draws = StratifiedShuffleSplit(n_splits=repeats, train_size=fraction, random_state=seed)
    parts = [idx for idx, _ in draws.split(np.zeros(len(y)), y)]
    settings = {"repeats": repeats, "fraction": fraction, "seed": seed, "n": len(y)}
    return _scored("subsampling", parts, p, y, metrics, settings, confidence)


def kfold_scores(
    pred: torch.Tensor | np.ndarray,
    target: torch.Tensor | np.ndarray,
    *,
    k: int = 5,
    seed: int = 0,
    metrics: Sequence[str] = ("accuracy",),
    confidence: float = 0.95,
) -> SplitEstimate:
    """A finished model's predictions scored on each of ``k`` stratified folds of the test set
    (``StratifiedKFold(k, shuffle=True, random_state=seed)``): disjoint parts, every sample once.

    Raises:
        ValueError: ``k`` below 2 or above the number of samples.
    """
    p, y = int_array(pred), int_array(target)
    from sklearn.model_selection import StratifiedKFold

    folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    parts = [idx for _, idx in folds.split(np.zeros(len(y)), y)]
    settings = {"k": k, "seed": seed, "n": len(y)}
    return _scored("kfold", parts, p, y, metrics, settings, confidence)
