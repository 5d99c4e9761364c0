"""Per-stage quantization charts: layer sensitivity, quantization error, calibration histograms.

Why apart from plots.py: these read one stage's ``quant`` record (layers and histograms) rather
than the run as a whole, and they are the charts a user tunes a quantization recipe with.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .plotstyle import ACCENT, png, styled
from .summary import Run, accuracy_scale, num

MAX_HISTOGRAMS = 12
"""More layers than this would make the grid unreadable; the caption says only the first are shown."""


def _layers(stage: dict[str, Any], *keys: str) -> list[dict[str, Any]]:
    quant = stage.get("quant") if isinstance(stage.get("quant"), dict) else {}
    rows = [r for r in quant.get("layers") or [] if isinstance(r, dict) and isinstance(r.get("layer"), str)]
    return [r for r in rows if any(num(r, k) is not None for k in keys)]


def _layer_axes(n: int, width: float = 7.0) -> tuple[Figure, Any]:
    fig = Figure(figsize=(width, max(2.2, 0.32 * n + 1.2)))
    return fig, fig.add_subplot()


@styled
def sensitivity(run: Run, stage: dict[str, Any]) -> bytes | None:
    """Per-layer accuracy drop when only that layer is quantized; layers kept in float highlighted.

    ``sensitivity_drop`` is read in the run's accuracy units (fractions become points).
    """
    rows = _layers(stage, "sensitivity_drop")
    if not rows:
        return None
    scale = accuracy_scale(run)
    fig, ax = _layer_axes(len(rows))
    y = np.arange(len(rows))
    drops = [num(r, "sensitivity_drop") or 0.0 for r in rows]
    colors = [ACCENT if r.get("kept_float") else "#1565c0" for r in rows]
    ax.barh(y, np.array(drops) * scale, color=colors)
    ax.set_yticks(y, [r["layer"] for r in rows])
    ax.invert_yaxis()
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("accuracy drop (points) when only this layer is quantized")
    if any(r.get("kept_float") for r in rows):
        handles = [Patch(color=ACCENT, label="kept in float"), Patch(color="#1565c0", label="quantized")]
        ax.legend(handles=handles, loc="lower right")
    return png(fig)


@styled
def sqnr(run: Run, stage: dict[str, Any]) -> bytes | None:
    """Signal-to-quantization-noise ratio of weights and activations per layer (higher is better)."""
    rows = _layers(stage, "weight_sqnr_db", "act_sqnr_db")
    if not rows:
        return None
    fig, ax = _layer_axes(len(rows))
    y = np.arange(len(rows))
    for off, key, color, label in (
        (-0.2, "weight_sqnr_db", "#1565c0", "weights"),
        (0.2, "act_sqnr_db", "#ef6c00", "activations"),
    ):
        vals = [num(r, key) for r in rows]
        if any(v is not None for v in vals):
            ax.barh(
                y + off, [v if v is not None else 0.0 for v in vals], height=0.4, color=color, label=label
            )
    names = [r["layer"] + (" (float)" if r.get("kept_float") else "") for r in rows]
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel("SQNR (dB)")
    ax.legend(loc="lower right")
    return png(fig)


@styled
def histograms(stage: dict[str, Any]) -> bytes | None:
    """Calibration histograms with the chosen clipping range (values outside it are clipped)."""
    quant = stage.get("quant") if isinstance(stage.get("quant"), dict) else {}
    hists = []
    for h in quant.get("histograms") or []:
        if not isinstance(h, dict):
            continue
        try:
            edges, counts = (np.asarray(h.get(k) or [], dtype=float).ravel() for k in ("edges", "counts"))
        except (TypeError, ValueError):
            continue
        if len(counts) and len(edges) == len(counts) + 1:
            hists.append((h, edges, counts))
    if not hists:
        return None
    hists = hists[:MAX_HISTOGRAMS]
    cols = min(3, len(hists))
    rows = math.ceil(len(hists) / cols)
    fig = Figure(figsize=(3.4 * cols, 2.4 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, (h, edges, counts) in zip(axes, hists, strict=False):
        ax.stairs(counts, edges, fill=True, color="#90caf9", edgecolor="#1565c0", lw=0.6)
        positive = counts[counts > 0]
        if len(positive) and positive.max() / positive.min() > 1e3:
            ax.set_yscale("log")
        lo, hi = num(h, "lo"), num(h, "hi")
        for v in (lo, hi):
            if v is not None:
                ax.axvline(v, color=ACCENT, ls="--", lw=1.2)
        if lo is not None:
            ax.axvspan(min(edges[0], lo), lo, color=ACCENT, alpha=0.08)
        if hi is not None:
            ax.axvspan(hi, max(edges[-1], hi), color=ACCENT, alpha=0.08)
        method = h.get("method")
        ax.set_title(str(h.get("layer", "?"))[:40] + (f" · {method}" if method else ""), fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[len(hists) :]:
        ax.set_visible(False)
    return png(fig)
