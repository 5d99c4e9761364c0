"""``distiq.run``: a recipe's stages (:mod:`distiq.pipeline`), then its report (:mod:`distiq.report`).

The report sits above the pipeline (it only reads run directories), so the two are joined here rather
than inside either.
"""

from __future__ import annotations

import os

from distiq.pipeline import RunResult, load_recipe
from distiq.pipeline import run as run_stages
from distiq.pipeline.recipe import Recipe
from distiq.report import build_report


def run(
    recipe: str | os.PathLike[str] | dict | Recipe, run_dir: str | os.PathLike[str] | None = None
) -> RunResult:
    """Run ``recipe`` into ``run_dir`` and, unless the recipe says ``report: false``, build its report.

    Returns:
        The run directory and one record per stage (test-split metrics).
    """
    recipe = load_recipe(recipe)
    result = run_stages(recipe, run_dir)
    if recipe.report:
        build_report(result.run_dir)
    return result
