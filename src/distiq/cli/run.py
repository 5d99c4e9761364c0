"""``distiq run RECIPE``: execute a recipe (teacher -> distill -> prune -> quantize -> report)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from distiq.pipeline import load_recipe
from distiq.pipeline.recipe import MlflowSpec, TrackingSpec
from distiq.workflow import run

from .common import console


def run_command(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML file (see recipes/).")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run folder (default runs/NAME).")] = None,
    mlflow: Annotated[
        str | None,
        typer.Option("--mlflow", help="Log the run to this MLflow tracking URI ('local': mlruns/)."),
    ] = None,
) -> None:
    """Run a recipe; finished stages whose inputs did not change are reused.

    A stage's inputs are its recipe section, the data (a file's or folder's contents too), the
    contents of the files it names (teacher.weights) and the stages before it: replacing a file at the
    same path reruns what depends on it. While a run writes a folder, a second run into it is refused.
    """
    loaded = load_recipe(recipe)
    if mlflow is not None:
        uri = None if mlflow == "local" else mlflow
        loaded.tracking = TrackingSpec(mlflow=MlflowSpec(uri=uri))
    result = run(loaded, out)
    report = result.run_dir / "report" / "report.html"
    console.print(f"run directory: [bold]{result.run_dir}[/bold]")
    if report.exists():
        console.print(f"report: [bold]{report}[/bold]")
