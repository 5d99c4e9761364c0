"""Read a run directory and reduce it to the numbers every report format shows.

Why a module of its own: the HTML page, the Markdown file and ``report.json`` must agree to the
digit, so the stage table, the teacher baseline and the number formats are computed here once.
``run.json`` is read through :mod:`distiq.record`'s schema; within it a half-finished run (no search,
no quantization, a stage without metrics yet) renders what is there and skips the rest.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distiq.record import read_run


@dataclass
class Run:
    """A parsed run directory.

    Attributes:
        dir: The run directory.
        info: The whole of ``run.json``.
        stages: Stage records (dicts), each with a ``history`` list filled in from the stage's
            ``history.jsonl`` when ``run.json`` does not carry it inline.
        search: The budget search record, or None when the run had none.
    """

    dir: Path
    info: dict[str, Any]
    stages: list[dict[str, Any]] = field(default_factory=list)
    search: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        """The run's name, falling back to the folder name."""
        return str(self.info.get("name") or self.dir.name)


def num(mapping: Any, key: str) -> float | None:
    """``mapping[key]`` as a finite float, or None when absent, not a number or NaN/inf.

    Why: a report must render whatever a partial or older run wrote; a missing or NaN metric is
    shown as a dash, never a crash.
    """
    if not isinstance(mapping, dict):
        return None
    value = mapping.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def metrics(stage: dict[str, Any]) -> dict[str, Any]:
    """A stage's metrics dict (empty when absent or malformed)."""
    m = stage.get("metrics")
    return m if isinstance(m, dict) else {}


def _read_history(path: Path) -> list[dict[str, Any]]:
    """Epoch records of a ``history.jsonl``; unreadable lines are skipped (a killed run's last line)."""
    rows = []
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return rows
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def load_run(run_dir: str | Path) -> Run:
    """Parse ``RUN_DIR/run.json`` (:func:`distiq.record.read_run`: the schema the pipeline writes).

    A stage record without its epochs inline gets them from its ``history.jsonl`` (a run killed
    mid-stage has them there only).

    Raises:
        DataError: ``run.json`` is missing, not JSON or not a run record; the message names the file
            and the field.
    """
    run_dir = Path(run_dir)
    record = read_run(run_dir)
    stages = []
    for stage in record.stages:
        if not stage.history:
            stage.history = _read_history(run_dir / stage.dir / "history.jsonl")
        stages.append(stage.to_dict())
    return Run(dir=run_dir, info=record.to_dict(), stages=stages, search=record.search)


# ---- the baseline and the stage table -------------------------------------------------------


def accuracy_scale(run: Run) -> float:
    """100 when accuracies are fractions (the evaluator's convention), 1 when already percents."""
    values = [num(metrics(s), "accuracy") for s in run.stages]
    values += [num(t, "val_accuracy") for t in (run.search or {}).get("trials") or []]
    return 1.0 if any(v is not None and v > 1.0 for v in values) else 100.0


def evaluated(run: Run) -> list[dict[str, Any]]:
    """Stages that report an accuracy, in run order."""
    return [s for s in run.stages if num(metrics(s), "accuracy") is not None]


def teacher(run: Run) -> dict[str, Any] | None:
    """The baseline every delta is taken against: the first evaluated teacher stage."""
    return next((s for s in evaluated(run) if s["kind"] == "teacher"), None)


def final(run: Run) -> dict[str, Any] | None:
    """The model the run delivers: the last evaluated stage that is not the teacher."""
    rest = [s for s in evaluated(run) if s is not teacher(run)]
    return rest[-1] if rest else None


def _ratio(base: float | None, value: float | None) -> float | None:
    return base / value if base and value else None


def stage_rows(run: Run) -> list[dict[str, Any]]:
    """One row per stage with the numbers of the stage table (None where unknown).

    ``delta_vs_teacher`` is in accuracy points; ``size_ratio`` and ``speedup`` are teacher / stage,
    so 12.0 means twelve times smaller or faster.
    """
    scale = accuracy_scale(run)
    base = teacher(run)
    base_m = metrics(base) if base else {}
    rows = []
    for s in run.stages:
        m = metrics(s)
        acc = num(m, "accuracy")
        base_acc = num(base_m, "accuracy")
        delta = None
        if acc is not None and base_acc is not None and s is not base:
            delta = (acc - base_acc) * scale
        rows.append(
            {
                "name": s["name"],
                "kind": s["kind"],
                "accuracy": acc,
                "f1_macro": num(m, "f1_macro"),
                "size_bytes": num(m, "size_bytes"),
                "latency_ms_p50": num(m, "latency_ms_p50"),
                "params": num(m, "params"),
                "delta_vs_teacher": delta,
                "size_ratio": None if s is base else _ratio(num(base_m, "size_bytes"), num(m, "size_bytes")),
                "speedup": None
                if s is base
                else _ratio(num(base_m, "latency_ms_p50"), num(m, "latency_ms_p50")),
                "seconds": num(s, "seconds"),
                "skipped": bool(s.get("skipped")),
            }
        )
    return rows


EXTRA_METRICS = {
    "agreement_with_teacher": "Agreement with teacher",
    "ece": "ECE",
    "ci95": "95% CI of accuracy",
    "latency_ms_p95": "Latency p95",
    "throughput": "Throughput",
    "macs": "MACs",
}
"""Second-table metrics: shown only when at least one stage has them."""


def extra_columns(run: Run) -> list[str]:
    """The keys of :data:`EXTRA_METRICS` that some stage reports."""
    return [k for k in EXTRA_METRICS if any(k in metrics(s) for s in run.stages)]


# ---- number formats (one place, so HTML, Markdown and tests agree) ----------------------------

DASH = "—"


def fmt_accuracy(value: float | None, scale: float = 100.0) -> str:
    """``0.9123`` -> ``91.23%``."""
    return DASH if value is None else f"{value * scale:.2f}%"


def fmt_f1(value: float | None) -> str:
    """Macro F1 as a fraction with three decimals."""
    return DASH if value is None else f"{value:.3f}"


def fmt_bytes(value: float | None) -> str:
    """Decimal units, as file managers and ``ls -h --si`` show sizes: ``1.23 MB``, ``45.6 kB``."""
    if value is None:
        return DASH
    if value >= 1e6:
        return f"{value / 1e6:.2f} MB"
    if value >= 1e3:
        return f"{value / 1e3:.1f} kB"
    return f"{int(value)} B"


def fmt_ms(value: float | None) -> str:
    """Milliseconds with two decimals."""
    return DASH if value is None else f"{value:.2f} ms"


def fmt_int(value: float | None) -> str:
    """Thousands separated: ``1,234,567``."""
    return DASH if value is None else f"{int(value):,}"


def fmt_delta(points: float | None) -> str:
    """Signed accuracy points: ``+0.12 pt``, ``-1.50 pt``."""
    return DASH if points is None else f"{points:+.2f} pt"


def fmt_ratio(value: float | None) -> str:
    """``12.3×``."""
    return DASH if value is None else f"{value:.1f}×"


def fmt_extra(key: str, value: Any, scale: float = 100.0) -> str:
    """Format one of :data:`EXTRA_METRICS`."""
    if key == "ci95":
        ok = isinstance(value, list | tuple) and len(value) == 2
        if ok and all(isinstance(v, int | float) for v in value):
            return f"{value[0] * scale:.2f}–{value[1] * scale:.2f}%"
        return DASH
    v = num({key: value}, key)
    if v is None:
        return DASH
    if key == "agreement_with_teacher":
        return fmt_accuracy(v, scale)
    if key == "ece":
        return f"{v:.4f}"
    if key == "latency_ms_p95":
        return fmt_ms(v)
    if key == "throughput":
        return f"{v:,.0f} /s"
    return fmt_int(v)


def fmt_row(row: dict[str, Any], scale: float) -> dict[str, str]:
    """A :func:`stage_rows` row as display strings."""
    return {
        "Stage": row["name"] + (" (reused)" if row["skipped"] else ""),
        "Kind": row["kind"] or DASH,
        "Accuracy": fmt_accuracy(row["accuracy"], scale),
        "F1 macro": fmt_f1(row["f1_macro"]),
        "Size": fmt_bytes(row["size_bytes"]),
        "Latency p50": fmt_ms(row["latency_ms_p50"]),
        "Params": fmt_int(row["params"]),
        "Δ vs teacher": fmt_delta(row["delta_vs_teacher"]),
        "Smaller": fmt_ratio(row["size_ratio"]),
        "Faster": fmt_ratio(row["speedup"]),
        "Time": DASH if row["seconds"] is None else f"{row['seconds']:.1f} s",
    }


# ---- the budget search -----------------------------------------------------------------------


def budget_threshold(search: dict[str, Any] | None, scale: float = 100.0) -> float | None:
    """The lowest validation accuracy the budget accepts, in the trials' units, if it can be known.

    Read, in order: ``search.threshold``, ``budget.min_accuracy``, or ``reference_accuracy`` (on the
    search or its budget) minus ``budget.max_accuracy_drop`` (points, or percent of the reference
    when ``budget.relative`` is true or ``budget.unit == "relative"``). None when none is recorded:
    the plot then shows the trials without a line rather than a guessed one.
    """
    if not search:
        return None
    budget = search.get("budget") if isinstance(search.get("budget"), dict) else {}
    for value in (num(search, "threshold"), num(budget, "min_accuracy")):
        if value is not None:
            return value
    ref = num(search, "reference_accuracy")
    ref = ref if ref is not None else num(budget, "reference_accuracy")
    drop = num(budget, "max_accuracy_drop")
    if ref is None or drop is None:
        return None
    if budget.get("relative") is True or budget.get("unit") == "relative":
        return ref * (1 - drop / 100)
    return ref - drop / scale


def trials(run: Run) -> list[dict[str, Any]]:
    """The search's trial records (dicts only)."""
    return [t for t in (run.search or {}).get("trials") or [] if isinstance(t, dict)]


def summary(run: Run, figures: list[str] | None = None) -> dict[str, Any]:
    """What ``report.json`` holds: the run's identity, the stage table and the search outcome."""
    base, last = teacher(run), final(run)
    rows = stage_rows(run)
    chosen = next((t for t in trials(run) if t.get("chosen")), None)
    out: dict[str, Any] = {
        "name": run.name,
        "dataset": run.info.get("dataset"),
        "started": run.info.get("started"),
        "finished": run.info.get("finished"),
        "versions": run.info.get("versions") or {},
        "accuracy_unit": "fraction" if accuracy_scale(run) == 100.0 else "percent",
        "teacher": base["name"] if base else None,
        "final": last["name"] if last else None,
        "stages": rows,
        "figures": figures or [],
    }
    if last is not None:
        row = next(r for s, r in zip(run.stages, rows, strict=True) if s is last)
        out["final_vs_teacher"] = {k: row[k] for k in ("delta_vs_teacher", "size_ratio", "speedup")}
    if run.search is not None:
        out["search"] = {
            "objective": run.search.get("objective"),
            "budget": run.search.get("budget"),
            "trials": len(trials(run)),
            "met_budget": sum(bool(t.get("meets_budget")) for t in trials(run)),
            "chosen": chosen,
            "missed_by": run.search.get("missed_by"),
        }
    return out
