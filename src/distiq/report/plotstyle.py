"""The look shared by every chart of the report, and the PNG encoder.

Why a module of its own: a stage keeps its colour and every chart its fonts across the run-level
charts (plots.py) and the per-stage quantization charts (quantplots.py).
"""

from __future__ import annotations

import io
from functools import wraps
from typing import Any

import matplotlib
from matplotlib.figure import Figure

from .summary import Run

STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.frameon": False,
    "legend.fontsize": 8,
}
DPI = 110
PALETTE = [matplotlib.colormaps["tab10"](i) for i in range(10)]
GOOD, BAD, ACCENT = "#2e7d32", "#9e9e9e", "#c62828"


def styled(fn):
    """Run a plotting function under the report's rc style, so every chart looks alike."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(STYLE):
            return fn(*args, **kwargs)

    return wrapper


def png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", facecolor="white")
    return buf.getvalue()


def stage_color(run: Run, stage: dict[str, Any]) -> Any:
    """A stage keeps its colour in every chart."""
    return PALETTE[next(i for i, s in enumerate(run.stages) if s is stage) % len(PALETTE)]


def log_if_wide(ax, values: list[float], axis: str = "x") -> None:
    """Log scale when values span more than 20x: a teacher 30x larger than its student would
    otherwise squash every compressed stage into one corner."""
    pos = [v for v in values if v > 0]
    if pos and max(pos) / min(pos) > 20:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
