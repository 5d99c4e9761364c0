"""The report's chapters for ``evaluate.splits`` and ``evaluate.attribution``: charts, tables, captions.

Why a module of its own: both read run.json's ``"splits"`` and ``"attribution"`` entries (written by
``distiq.pipeline.splits``), not the stage records, and both say how much a number can be trusted:
how far a stage's accuracy moves with the draw of the test set or the share of the training data,
and whether a compressed stage still looks at the teacher's evidence. The HTML and Markdown pages
render the same :class:`Table` rows and captions, so they agree to the digit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from .plotstyle import ACCENT, PALETTE, png, styled
from .summary import DASH, Run, fmt_accuracy, num

SPLITS, ATTRIBUTION = "Split evaluation", "Attribution"
"""The chapters' headings (in the report's chapter list after "Evaluation")."""

ESTIMATES = (("subsample", "subsamples"), ("kfold", "k-fold"))
"""The interval estimates of a row, by run.json key and the name a reader sees."""


@dataclass
class Table:
    """One table of a chapter: a heading, the column names and rows of display strings."""

    heading: str
    header: list[str]
    rows: list[list[str]]


def _entry(run: Run, key: str) -> dict[str, Any]:
    value = run.info.get(key)
    return value if isinstance(value, dict) else {}


def _rows(entry: dict[str, Any], key: str) -> list[dict[str, Any]]:
    return [r for r in entry.get(key) or [] if isinstance(r, dict)]


def _summary(row: dict[str, Any], estimate: str) -> dict[str, Any]:
    """The accuracy spread of one estimate of a row (empty when not measured)."""
    found = ((row.get(estimate) or {}).get("summary") or {}).get("accuracy")
    return found if isinstance(found, dict) else {}


def _estimates(entry: dict[str, Any]) -> list[tuple[str, str]]:
    rows = _rows(entry, "stages") + _rows(entry, "ratios")
    return [(k, name) for k, name in ESTIMATES if any(_summary(r, k) for r in rows)]


def _cells(row: dict[str, Any], estimates: list[tuple[str, str]]) -> list[str]:
    cells = [fmt_accuracy(num(row, "accuracy"))]
    for key, _ in estimates:
        s = _summary(row, key)
        mean, std, lo, hi = (num(s, k) for k in ("mean", "std", "ci_low", "ci_high"))
        cells.append(
            DASH if mean is None else fmt_accuracy(mean) + (f" ± {100 * std:.2f}" if std is not None else "")
        )
        cells.append(DASH if lo is None or hi is None else f"{100 * lo:.2f}–{100 * hi:.2f}%")
    return cells


def _how(entry: dict[str, Any]) -> str:
    """What the intervals were computed over, in one sentence."""
    rows = _rows(entry, "stages") + _rows(entry, "ratios")
    parts = []
    for key, _ in _estimates(entry):
        settings = next((r[key].get("settings") or {} for r in rows if _summary(r, key)), {})
        if key == "subsample":
            parts.append(
                f"{settings.get('repeats', '?')} stratified subsamples of "
                f"{100 * settings.get('fraction', 0):g}% of the test split"
            )
        else:
            parts.append(f"{settings.get('k', '?')} stratified folds of the test split")
    n = entry.get("test_samples")
    where = f" ({n:,} test images, seed {entry.get('seed', 0)})" if isinstance(n, int) else ""
    return (
        "Accuracy of each model over " + " and over ".join(parts) + where + ": mean ± std and the "
        "Student-t 95% interval of the mean. The models are fixed; only the draw of the test images varies."
        if parts
        else "Accuracy on the whole test split" + where + "."
    )


def splits_chapter(run: Run) -> list[str | Table]:
    """The Split evaluation chapter's text and tables (empty when the run has no splits)."""
    entry = _entry(run, "splits")
    stages, ratios = _rows(entry, "stages"), _rows(entry, "ratios")
    if not stages and not ratios:
        return []
    estimates = _estimates(entry)
    cols = ["Test accuracy"] + [f"{name} {c}" for _, name in estimates for c in ("mean ± std", "95% CI")]
    out: list[str | Table] = [_how(entry)]
    if stages:
        out.append(
            Table(
                "Per stage", ["Stage", *cols], [[str(r.get("stage")), *_cells(r, estimates)] for r in stages]
            )
        )
    if ratios:
        out.append(
            "The distill stage re-run on a stratified share of the training split (same recipe and seed; "
            "validation for tuning as before), each student scored on the whole test split."
        )
        body = [
            [
                f"{100 * r['ratio']:g}%" if num(r, "ratio") else DASH,
                str(r.get("n_train", DASH)),
                *_cells(r, estimates),
            ]
            for r in ratios
        ]
        out.append(Table("Per share of the training data", ["Data ratio", "Training samples", *cols], body))
    return out


def attribution_chapter(run: Run) -> list[str | Table]:
    """The Attribution chapter's text and agreement table (empty when the run has none)."""
    entry = _entry(run, "attribution")
    stages = _rows(entry, "stages")
    if not stages:
        return []
    classes = list(dict.fromkeys(c for s in stages for c in (s.get("per_class") or {})))
    body = [
        [str(s.get("stage")), str(s.get("explained", DASH)), _rho(s.get("mean"))]
        + [_rho((s.get("per_class") or {}).get(c)) for c in classes]
        for s in stages
    ]
    return [
        _attribution_sentence(entry),
        Table("Agreement with the teacher (Spearman ρ)", ["Stage", "Maps of", "Mean ρ", *classes], body),
    ]


def _rho(value: Any) -> str:
    v = num({"v": value}, "v")
    return DASH if v is None else f"{v:.3f}"


def _attribution_sentence(entry: dict[str, Any]) -> str:
    method = str(entry.get("method", "?")).replace("-", " ")
    return (
        f"Attribution maps ({method}, Captum) for the true class of {entry.get('samples', '?')} test images "
        f"(a stratified draw, seed {entry.get('seed', 0)}); per image, Spearman's rank correlation of a "
        "stage's map with the teacher's; 1 means the same pixels in the same order of importance."
    )


@styled
def splits_chart(run: Run) -> bytes | None:
    """Accuracy with its 95% intervals: per stage (left) and per share of the training data (right)."""
    entry = _entry(run, "splits")
    stages, ratios = _rows(entry, "stages"), _rows(entry, "ratios")
    estimates = _estimates(entry)
    if not estimates or not (stages or ratios):
        return None
    panels = [p for p in (("stage", stages), ("ratio", ratios)) if p[1]]
    fig = Figure(figsize=(5.4 * len(panels), 3.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels), sharey=True))
    for ax, (kind, rows) in zip(axes, panels, strict=True):
        x = np.arange(len(rows)) if kind == "stage" else np.array([float(r["ratio"]) * 100 for r in rows])
        width = 0.12 if kind == "stage" else 1.2
        for j, (key, name) in enumerate(estimates):
            pts = [
                (xi, _summary(r, key)) for xi, r in zip(x, rows, strict=True) if num(_summary(r, key), "mean")
            ]
            if not pts:
                continue
            xs = np.array([p[0] for p in pts]) + (j - (len(estimates) - 1) / 2) * 2 * width
            means = np.array([100 * p[1]["mean"] for p in pts])
            lo = [means[i] - 100 * (num(p[1], "ci_low") or p[1]["mean"]) for i, p in enumerate(pts)]
            hi = [100 * (num(p[1], "ci_high") or p[1]["mean"]) - means[i] for i, p in enumerate(pts)]
            ax.errorbar(
                xs, means, yerr=[lo, hi], fmt="o", capsize=4, color=PALETTE[j], label=f"{name} (95% CI)"
            )
        full = [(xi, 100 * num(r, "accuracy")) for xi, r in zip(x, rows, strict=True) if num(r, "accuracy")]
        if full:
            ax.plot(
                *zip(*full, strict=True),
                "D",
                color=ACCENT,
                ms=5,
                label="whole test split",
                ls="-" if kind == "ratio" else "",
            )
        if kind == "stage":
            ax.set_xticks(x, [str(r.get("stage")) for r in rows])
            ax.set(title="Per stage", xlabel="stage")
        else:
            ax.set_xticks(x, [f"{v:g}%" for v in x])
            ax.set(title="Per share of the training data (distill stage)", xlabel="training data used")
        ax.margins(x=0.15)
    axes[0].set_ylabel("test accuracy (%)")
    axes[0].legend(loc="lower left")
    return png(fig)


@styled
def attribution_chart(run: Run) -> bytes | None:
    """A few test images and their attribution maps, the teacher's first, one column per stage."""
    entry = _entry(run, "attribution")
    examples = [
        e for e in entry.get("examples") or [] if isinstance(e, dict) and isinstance(e.get("maps"), dict)
    ]
    names = [str(entry.get("reference"))] + [str(s.get("stage")) for s in _rows(entry, "stages")]
    names = [n for n in names if examples and n in examples[0]["maps"]]
    if not examples or not names:
        return None
    rho = {str(s.get("stage")): s.get("mean") for s in _rows(entry, "stages")}
    fig = Figure(figsize=(1.6 * (len(names) + 1), 1.7 * len(examples)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(examples), len(names) + 1, squeeze=False))
    for row, example in zip(axes, examples, strict=True):
        row[0].imshow(np.asarray(example.get("image"), dtype=float), cmap="gray")
        row[0].set_ylabel(f"class {example.get('label')}")
        for ax, name in zip(row[1:], names, strict=True):
            ax.imshow(np.asarray(example["maps"][name], dtype=float), cmap="inferno")
    axes[0][0].set_title("input")
    for ax, name in zip(axes[0][1:], names, strict=True):
        ax.set_title(name if name not in rho else f"{name}\nρ = {_rho(rho[name])}")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
    return png(fig)


def split_figures(run: Run) -> list[tuple[str, str, str, str, bytes | None, bool]]:
    """The chapters' charts as ``(key, section, title, caption, png, wide)`` for the report's list."""
    splits, attribution = _entry(run, "splits"), _entry(run, "attribution")
    n_examples = len(attribution.get("examples") or [])
    return [
        (
            "splits",
            SPLITS,
            "Accuracy with 95% intervals",
            _how(splits) + " Diamonds: accuracy on the whole test split.",
            splits_chart(run),
            True,
        ),
        (
            "attribution",
            ATTRIBUTION,
            "Attribution maps, teacher against each stage",
            f"{n_examples} of the {attribution.get('samples', '?')} test images the agreement was measured "
            "on; brighter pixels weigh more in the prediction of the true class; ρ is the stage's mean "
            "Spearman correlation with the teacher over all of them.",
            attribution_chart(run),
            True,
        ),
    ]
