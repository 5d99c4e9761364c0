"""The run report as Markdown (``report.md`` with its charts as PNG files beside it).

Why a Markdown copy of the HTML page: it diffs in a pull request, renders on a code host, and pastes
into a README (the project's own README shows the demo's table and one chart from it).
"""

from __future__ import annotations

import json
from typing import Any

from .plots import Plot
from .summary import (
    EXTRA_METRICS,
    Run,
    accuracy_scale,
    extra_columns,
    fmt_accuracy,
    fmt_bytes,
    fmt_extra,
    fmt_ms,
    fmt_row,
    metrics,
    num,
    stage_rows,
    trials,
)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines + [""]


def stage_table(run: Run) -> list[str]:
    """The stage table as Markdown lines (what the README pastes)."""
    scale = accuracy_scale(run)
    shown = [fmt_row(r, scale) for r in stage_rows(run)]
    return _table(list(shown[0]), [list(r.values()) for r in shown]) if shown else []


def render_markdown(run: Run, plots: list[Plot]) -> str:
    """``report.md``: images are referenced as ``<key>.png`` in the same folder."""
    scale = accuracy_scale(run)
    info = run.info
    lines = [f"# {run.name}", ""]
    meta = [f"{k}: {info[k]}" for k in ("dataset", "started", "finished") if info.get(k)]
    if meta:
        lines += [" · ".join(meta), ""]
    if run.stages:
        lines += ["## Stages", ""] + stage_table(run)
    extra = extra_columns(run)
    if extra:
        body = [[s["name"]] + [fmt_extra(k, metrics(s).get(k), scale) for k in extra] for s in run.stages]
        lines += _table(["Stage"] + [EXTRA_METRICS[k] for k in extra], body)
    section = None
    for p in plots:
        if p.section != section:
            section = p.section
            lines += [f"## {section}", ""]
        lines += [f"![{p.title}]({p.key}.png)", "", f"*{p.title}.* {p.caption}", ""]
    if run.search is not None:
        s = run.search
        if section != "Budget search":
            lines += ["## Budget search", ""]
        lines += [f"Objective: **{s.get('objective', '—')}**, budget `{json.dumps(s.get('budget'))}`.", ""]
        missed = num(s, "missed_by")
        if missed is not None and missed > 0:
            lines += [
                f"**No candidate met the budget**; the closest misses it by {missed * scale:.2f} points.",
                "",
            ]
        body = [
            [
                str(t.get("id", "—")),
                json.dumps(t.get("params"), sort_keys=True),
                fmt_accuracy(num(t, "val_accuracy"), scale),
                fmt_bytes(num(t, "size_bytes")),
                fmt_ms(num(t, "latency_ms")),
                "yes" if t.get("meets_budget") else "no",
                "★" if t.get("chosen") else "",
            ]
            for t in trials(run)
        ]
        if body:
            lines += _table(
                ["Trial", "Parameters", "Val accuracy", "Size", "Latency", "Meets budget", "Chosen"], body
            )
    versions = info.get("versions")
    if isinstance(versions, dict) and versions:
        lines += ["## Environment", ""] + _table(
            ["Package", "Version"], [[k, str(v)] for k, v in versions.items()]
        )
    if info.get("recipe"):
        lines += ["## Recipe", "", "```json", json.dumps(info["recipe"], indent=2, default=str), "```", ""]
    return "\n".join(lines)
