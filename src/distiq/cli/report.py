"""``distiq report RUN_DIR``: rebuild a run's HTML, Markdown and JSON report from its ``run.json``.

Why a command of its own: a report is cheap to rebuild and its look improves between versions, so a
user re-renders an old run (or one that was interrupted before its report stage) without rerunning
anything. The run directory is a positional argument, as the public API spells it
(``distiq report RUN_DIR``), which is why this command takes typer parameters rather than going
through ``options.command`` (that helper makes ``--options`` only); the pydantic model still
validates what was given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import BaseModel, ConfigDict, Field

from distiq.report import build_report


class ReportOptions(BaseModel):
    """Options of ``distiq report``."""

    model_config = ConfigDict(extra="forbid")
    run_dir: Path = Field(description="Run directory written by 'distiq run' (holds run.json).")
    out: Path | None = Field(None, description="Folder to write the report to (default RUN_DIR/report).")


def run_report(opts: ReportOptions) -> dict[str, Path]:
    """Build the report and print the path of ``report.html`` on stdout (for scripts to pick up)."""
    paths = build_report(opts.run_dir, opts.out)
    print(paths["html"])
    return paths


def report_command(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="Run directory (holds run.json).")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Default: RUN_DIR/report.")] = None,
) -> None:
    """Rebuild the HTML, Markdown and JSON report of a run directory."""
    run_report(ReportOptions(run_dir=run_dir, out=out))
