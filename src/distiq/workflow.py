"""``distiq.run``: a recipe's stages (:mod:`distiq.pipeline`), then its report (:mod:`distiq.report`).

The report sits above the pipeline (it only reads run directories), so the two are joined here rather
than inside either.
"""

from __future__ import annotations

import os

from distiq.pipeline import RunResult, load_recipe
from distiq.pipeline import run as run_stages
from distiq.pipeline.recipe import Recipe
from distiq.tracking import log_run


def run(
    recipe: str | os.PathLike[str] | dict | Recipe, run_dir: str | os.PathLike[str] | None = None
) -> RunResult:
    """Run ``recipe`` into ``run_dir``, build its report (unless ``report: false``) and log it to MLflow
    when the recipe has ``tracking.mlflow``.

    Returns:
        The run directory and one record per stage (test-split metrics).
    """
    recipe = load_recipe(recipe)
    result = run_stages(recipe, run_dir)
    if recipe.report:
        from distiq.report import build_report  # matplotlib: imported when a report is built

        build_report(result.run_dir)
    mlflow = recipe.tracking.mlflow if recipe.tracking is not None else None
    if mlflow is not None:
        log_run(result.run_dir, mlflow.uri, mlflow.experiment)
    return result
