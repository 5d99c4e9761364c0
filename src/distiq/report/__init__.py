"""Run reports: one self-contained HTML page, a Markdown copy and a JSON summary per run directory.

``build_report(run_dir)`` reads ``RUN_DIR/run.json`` (written by the pipeline) and writes
``RUN_DIR/report/``. Every section is optional: what the run recorded is shown, the rest skipped.
"""

from .build import build_report
from .html import render_html
from .markdown import render_markdown
from .plots import Plot, figures, pareto_front
from .summary import Run, budget_threshold, load_run, stage_rows, summary

__all__ = [
    "Plot",
    "Run",
    "budget_threshold",
    "build_report",
    "figures",
    "load_run",
    "pareto_front",
    "render_html",
    "render_markdown",
    "stage_rows",
    "summary",
]
