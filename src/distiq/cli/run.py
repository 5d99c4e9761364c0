"""``distiq run RECIPE``: execute a recipe (teacher -> distill -> prune -> quantize -> report)."""

from __future__ import annotations

from pathlib import Path

import typer

from distiq.pipeline import run

from .common import console


def run_command(
    recipe: Path = typer.Argument(..., help="Recipe YAML file (see recipes/)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Run directory [default: runs/<name>]."),
) -> None:
    """Run a recipe; finished stages whose inputs did not change are reused."""
    result = run(recipe, out)
    report = result.run_dir / "report" / "report.html"
    console.print(f"run directory: [bold]{result.run_dir}[/bold]")
    if report.exists():
        console.print(f"report: [bold]{report}[/bold]")
