"""The report's charts, each a function from a parsed run to PNG bytes (or None when it has no data).

Why PNG bytes and not files: the HTML page embeds them as data URIs (one self-contained file to mail
or attach to a ticket) and the Markdown report saves the same bytes beside ``report.md``; drawing
once serves both. Figures are built with ``matplotlib.figure.Figure`` directly, never pyplot, so no
global figure state leaks between calls and no display is needed (the Agg renderer draws them).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .plotstyle import ACCENT, BAD, GOOD, log_if_wide, png, stage_color, styled
from .quantplots import MAX_HISTOGRAMS, histograms, sensitivity, sqnr
from .splitplots import ATTRIBUTION, SPLITS, split_figures
from .summary import (
    Run,
    accuracy_scale,
    budget_threshold,
    evaluated,
    metrics,
    num,
    teacher,
    trials,
)

SECTIONS = ("Trade-offs", "Training", "Quantization", "Evaluation", SPLITS, ATTRIBUTION, "Budget search")
"""The report's chapters in page order; every :class:`Plot` names one of them."""


@dataclass
class Plot:
    """One chart of the report.

    Attributes:
        key: File stem (``pareto-size`` -> ``pareto-size.png``), unique within a report.
        section: Heading the chart is shown under.
        title: The chart's caption title.
        caption: How to read it, in a sentence or two.
        png: The PNG bytes.
        wide: False for a chart small enough to share a row with the next one.
    """

    key: str
    section: str
    title: str
    caption: str
    png: bytes
    wide: bool = True


def slug(text: str) -> str:
    """A file-name-safe form of a stage or layer name."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats, ordered by x.

    A point is beaten when another is no larger in x (size, latency) and no lower in y (accuracy),
    and strictly better in one. Ties in x keep the more accurate point only.
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front: list[int] = []
    best = -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


@styled
def pareto(run: Run, key: str, label: str, unit: float = 1.0) -> bytes | None:
    """Accuracy against ``metrics[key]`` (size or latency), one labelled point per stage."""
    scale = accuracy_scale(run)
    stages = [s for s in evaluated(run) if num(metrics(s), key) is not None]
    if not stages:
        return None
    pts = [(num(metrics(s), key) / unit, num(metrics(s), "accuracy") * scale) for s in stages]
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot()
    front = pareto_front(pts)
    if len(front) > 1:
        fx, fy = zip(*(pts[i] for i in front), strict=True)
        ax.step(fx, fy, where="post", color=GOOD, lw=1.5, alpha=0.7, label="Pareto front", zorder=1)
    for i, (s, (x, y)) in enumerate(zip(stages, pts, strict=True)):
        on = i in front
        ax.scatter(
            x, y, s=70 if on else 40, color=stage_color(run, s), edgecolor="black" if on else "none", zorder=3
        )
        ax.annotate(s["name"], (x, y), xytext=(6, 5), textcoords="offset points", fontsize=8)
    base = teacher(run)
    if base is not None:
        ax.axhline(num(metrics(base), "accuracy") * scale, color=BAD, ls=":", lw=1, label="teacher")
    log_if_wide(ax, [p[0] for p in pts])
    ax.set_xlabel(label)
    ax.set_ylabel("test accuracy (%)")
    ax.margins(x=0.15, y=0.15)
    ax.legend(loc="lower right")
    return png(fig)


@styled
def training_curves(run: Run) -> bytes | None:
    """Loss and accuracy per epoch for every stage that trained (solid: train, dashed: validation)."""
    stages = [s for s in run.stages if s["history"]]
    if not stages:
        return None
    hist_acc = [num(h, k) for s in stages for h in s["history"] for k in ("train_accuracy", "val_accuracy")]
    scale = 1.0 if any(v is not None and v > 1 for v in hist_acc) else 100.0
    fig = Figure(figsize=(10, 3.6))
    ax_loss, ax_acc = fig.subplots(1, 2)
    for s in stages:
        color = stage_color(run, s)
        for ax, prefix, mult in ((ax_loss, "loss", 1.0), (ax_acc, "accuracy", scale)):
            for split, ls in (("train", "-"), ("val", "--")):
                pts = [(num(h, "epoch"), num(h, f"{split}_{prefix}")) for h in s["history"]]
                pts = [(e if e is not None else i + 1, v) for i, (e, v) in enumerate(pts) if v is not None]
                if pts:
                    x, y = zip(*pts, strict=True)
                    ax.plot(
                        x,
                        np.array(y) * mult,
                        ls=ls,
                        color=color,
                        marker="o",
                        ms=3,
                        label=f"{s['name']} ({split})",
                    )
    ax_loss.set(title="Loss", xlabel="epoch", ylabel="loss")
    ax_acc.set(title="Accuracy", xlabel="epoch", ylabel="accuracy (%)")
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.lines:
            ax.legend()
    return png(fig)


def confusion_stages(run: Run) -> list[dict[str, Any]]:
    """The first and the last stages with a confusion matrix (one when they are the same)."""
    with_cm = [
        s for s in run.stages if isinstance(metrics(s).get("confusion"), list) and metrics(s)["confusion"]
    ]
    return with_cm[:1] + with_cm[-1:] if len(with_cm) > 1 else with_cm


@styled
def confusion(run: Run) -> bytes | None:
    """Row-normalised confusion matrices (colour: fraction of the true class; numbers: counts)."""
    stages = confusion_stages(run)
    cms = []
    for s in stages:
        try:
            cm = np.asarray(metrics(s)["confusion"], dtype=float)
        except (TypeError, ValueError):
            continue
        if cm.ndim == 2 and cm.shape[0] == cm.shape[1]:
            cms.append((s, cm))
    if not cms:
        return None
    n = cms[0][1].shape[0]
    side = min(6.5, 2.2 + 0.42 * n)
    fig = Figure(figsize=(side * len(cms), side), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(cms)))
    scale = accuracy_scale(run)
    for ax, (s, cm) in zip(axes, cms, strict=True):
        norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        ax.grid(False)
        names = metrics(s).get("class_names")
        labels = (
            [str(c) for c in names]
            if isinstance(names, list) and len(names) == len(cm)
            else list(range(len(cm)))
        )
        ax.set_xticks(range(len(cm)), labels, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(cm)), labels, fontsize=7)
        if len(cm) <= 12:
            for (i, j), v in np.ndenumerate(cm):
                if v:
                    ax.text(
                        j,
                        i,
                        f"{int(v)}",
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="white" if norm[i, j] > 0.5 else "black",
                    )
        acc = num(metrics(s), "accuracy")
        ax.set_title(s["name"] + (f" — {acc * scale:.2f}%" if acc is not None else ""))
        ax.set(xlabel="predicted", ylabel="true")
    return png(fig)


@styled
def search(run: Run) -> bytes | None:
    """Budget-search trials: validation accuracy against size and latency, the chosen one starred."""
    rows = [t for t in trials(run) if num(t, "val_accuracy") is not None]
    if not rows:
        return None
    scale = accuracy_scale(run)
    axes_spec = [("size_bytes", "size (kB)", 1e3), ("latency_ms", "latency (ms)", 1.0)]
    if (run.search or {}).get("objective") == "latency":
        axes_spec.reverse()
    axes_spec = [a for a in axes_spec if any(num(t, a[0]) is not None for t in rows)]
    if not axes_spec:
        return None
    threshold = budget_threshold(run.search, scale)
    fig = Figure(figsize=(5.2 * len(axes_spec), 3.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(axes_spec)))
    for ax, (key, label, unit) in zip(axes, axes_spec, strict=True):
        pts = [
            (t, num(t, key) / unit, num(t, "val_accuracy") * scale) for t in rows if num(t, key) is not None
        ]
        for meets, color, name in ((True, GOOD, "meets budget"), (False, BAD, "misses budget")):
            sel = [(x, y) for t, x, y in pts if bool(t.get("meets_budget")) == meets]
            if sel:
                ax.scatter(*zip(*sel, strict=True), color=color, s=28, alpha=0.85, label=name, zorder=2)
        for t, x, y in pts:
            if t.get("chosen"):
                ax.scatter(
                    x, y, marker="*", s=260, color="#fbc02d", edgecolor="black", zorder=4, label="chosen"
                )
                ax.annotate(
                    f"#{t.get('id', '?')}", (x, y), xytext=(8, -12), textcoords="offset points", fontsize=8
                )
        if threshold is not None:
            ax.axhline(threshold * scale, color=ACCENT, ls="--", lw=1.2, label="budget")
        log_if_wide(ax, [x for _, x, _ in pts])
        ax.set(xlabel=label, ylabel="validation accuracy (%)")
        ax.legend(loc="lower right")
    return png(fig)


def _severity(key: Any) -> float | None:
    try:
        return float(key)
    except (TypeError, ValueError):
        return None


def _robustness_sample(run: Run) -> str:
    """Says when robustness was measured on a draw of the test split rather than all of it."""
    counts = {n for s in run.stages if isinstance(n := metrics(s).get("robustness_samples"), int)}
    return f", on {', '.join(f'{n:,}' for n in sorted(counts))} test images" if counts else ""


@styled
def robustness(run: Run) -> bytes | None:
    """Accuracy under each corruption as its severity grows, one line per stage."""
    scale = accuracy_scale(run)
    data: dict[str, list[tuple[dict, list[tuple[float, float]]]]] = {}
    for s in run.stages:
        rob = metrics(s).get("robustness")
        for name, curve in (rob or {}).items() if isinstance(rob, dict) else ():
            pts = sorted(
                (_severity(k), v * scale)
                for k, v in (curve.items() if isinstance(curve, dict) else ())
                if _severity(k) is not None and num(curve, k) is not None
            )
            if pts:
                data.setdefault(str(name), []).append((s, pts))
    if not data:
        return None
    fig = Figure(figsize=(3.6 * len(data), 3.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(data), sharey=True))
    for ax, (name, curves) in zip(axes, data.items(), strict=True):
        for s, pts in curves:
            x, y = zip(*pts, strict=True)
            ax.plot(x, y, marker="o", ms=3, color=stage_color(run, s), label=s["name"])
        ax.set(title=name.replace("_", " "), xlabel="severity")
    axes[0].set_ylabel("test accuracy (%)")
    axes[0].legend()
    return png(fig)


def figures(run: Run) -> list[Plot]:
    """Every chart the run has data for, in the order the report shows them."""
    plots: list[Plot] = []

    def add(key: str, section: str, title: str, caption: str, png: bytes | None, wide: bool = True) -> None:
        if png is not None:
            plots.append(Plot(key, section, title, caption, png, wide))

    add(
        "pareto-size",
        "Trade-offs",
        "Accuracy against size on disk",
        "One point per stage; outlined points lie on the Pareto front (nothing else is both "
        "smaller and more accurate). The dotted line is the teacher.",
        pareto(run, "size_bytes", "size on disk (kB)", 1e3),
        wide=False,
    )
    add(
        "pareto-latency",
        "Trade-offs",
        "Accuracy against latency",
        "Median latency per batch in ONNX Runtime; up and to the left is better.",
        pareto(run, "latency_ms_p50", "latency p50 (ms)"),
        wide=False,
    )
    add(
        "training",
        "Training",
        "Training curves",
        "Solid lines: training split; dashed: validation split. One colour per stage.",
        training_curves(run),
    )
    for i, s in enumerate(run.stages):
        tag = f"{i + 1:02d}-{slug(s['name'])}"
        add(
            f"sensitivity-{tag}",
            "Quantization",
            f"Per-layer sensitivity — {s['name']}",
            "Accuracy lost when only that layer is quantized; red layers were kept in float.",
            sensitivity(run, s),
            wide=False,
        )
        add(
            f"sqnr-{tag}",
            "Quantization",
            f"Quantization error — {s['name']}",
            "Signal-to-quantization-noise ratio; every 6 dB is about one bit of precision.",
            sqnr(run, s),
            wide=False,
        )
        add(
            f"histograms-{tag}",
            "Quantization",
            f"Calibration histograms — {s['name']}",
            "Values seen during calibration; dashed red lines are the chosen range, shaded values "
            f"are clipped (first {MAX_HISTOGRAMS} layers).",
            histograms(s),
        )
    add(
        "confusion",
        "Evaluation",
        "Confusion matrices",
        "First and last evaluated stages; rows are the true class, colour is the row's fraction.",
        confusion(run),
    )
    add(
        "robustness",
        "Evaluation",
        "Robustness to corruptions",
        "Test accuracy as the corruption gets stronger" + _robustness_sample(run) + ".",
        robustness(run),
    )
    add(
        "search",
        "Budget search",
        "Search trials",
        "Every trial of the accuracy-budget search; the star is the chosen model, the dashed "
        "line the lowest validation accuracy the budget accepts.",
        search(run),
    )
    for chart in split_figures(run):
        add(*chart)
    return plots
