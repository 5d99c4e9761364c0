"""The run report as Markdown (``report.md`` with its charts as PNG files beside it).

Why a Markdown copy of the HTML page: it diffs in a pull request, renders on a code host, and pastes
into a README (the project's own README shows the demo's table and one chart from it).
"""

from __future__ import annotations

import json
from typing import Any

from .plots import SECTIONS, Plot
from .quanttables import (
    KERNEL_HEADER,
    LAYER_HEADER,
    RANGE_HEADER,
    cpu_sentence,
    kernel_rows,
    kernel_sentence,
    layer_rows,
    quant_stages,
    range_rows,
    runtime_lines,
    search_stage_sentence,
    unrecorded_int8_stages,
)
from .splitplots import ATTRIBUTION, SPLITS, Table, attribution_chapter, splits_chapter
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


def _quantization(run: Run) -> list[str]:
    """The Quantization chapter's tables (the same rows as the HTML page's)."""
    lines: list[str] = []
    for s, q in quant_stages(run):
        lines += [f"### {s['name']}", ""]
        for line in runtime_lines(q):
            lines += [f"**{line}**" if line.startswith("WARNING") else line, ""]
        sentence = kernel_sentence(q)
        if sentence:
            lines += [sentence, ""] + _table(KERNEL_HEADER, kernel_rows(q))
        layers = layer_rows(run, q)
        if layers:
            lines += ["Per-layer quantization error:", ""] + _table(LAYER_HEADER, layers)
        ranges = range_rows(q)
        if ranges:
            lines += ["Calibration ranges:", ""] + _table(RANGE_HEADER, ranges)
    for s in unrecorded_int8_stages(run):
        lines += [f"### {s['name']}", "", search_stage_sentence(run), ""]
    return lines


def _search(run: Run, scale: float) -> list[str]:
    """The Budget search chapter's text and trials table."""
    s = run.search or {}
    lines = [f"Objective: **{s.get('objective', '—')}**, budget `{json.dumps(s.get('budget'))}`.", ""]
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
    return lines


CHAPTERS = {SPLITS: splits_chapter, ATTRIBUTION: attribution_chapter}
"""Chapters of text and tables beside their charts (:mod:`distiq.report.splitplots`)."""


def _chapter(blocks: list[str | Table]) -> list[str]:
    lines: list[str] = []
    for b in blocks:
        lines += [b, ""] if isinstance(b, str) else [f"{b.heading}:", ""] + _table(b.header, b.rows)
    return lines


def render_markdown(run: Run, plots: list[Plot]) -> str:
    """``report.md``: images are referenced as ``<key>.png`` in the same folder."""
    scale = accuracy_scale(run)
    info = run.info
    lines = [f"# {run.name}", ""]
    meta = [f"{k}: {info[k]}" for k in ("dataset", "started", "finished") if info.get(k)]
    if cpu_sentence(run):
        meta.append(cpu_sentence(run))
    if meta:
        lines += [" · ".join(meta), ""]
    if run.stages:
        lines += ["## Stages", ""] + stage_table(run)
    extra = extra_columns(run)
    if extra:
        body = [[s["name"]] + [fmt_extra(k, metrics(s).get(k), scale) for k in extra] for s in run.stages]
        lines += _table(["Stage"] + [EXTRA_METRICS[k] for k in extra], body)
    by_section: dict[str, list[Plot]] = {}
    for p in plots:
        by_section.setdefault(p.section, []).append(p)
    for name in SECTIONS:  # the HTML page's chapters, in its order
        chapter: list[str] = []
        for p in by_section.get(name, []):
            chapter += [f"![{p.title}]({p.key}.png)", "", f"*{p.title}.* {p.caption}", ""]
        if name == "Quantization":
            chapter += _quantization(run)
        if name in CHAPTERS:
            chapter += _chapter(CHAPTERS[name](run))
        if name == "Budget search" and run.search is not None:
            chapter += _search(run, scale)
        if chapter:
            lines += [f"## {name}", ""] + chapter
    versions = info.get("versions")
    if isinstance(versions, dict) and versions:
        lines += ["## Environment", ""] + _table(
            ["Package", "Version"], [[k, str(v)] for k, v in versions.items()]
        )
    if info.get("recipe"):
        lines += ["## Recipe", "", "```json", json.dumps(info["recipe"], indent=2, default=str), "```", ""]
    return "\n".join(lines)
