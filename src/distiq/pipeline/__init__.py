"""Recipes chaining teacher -> distill -> prune -> quantize -> evaluate -> report."""

from .recipe import Recipe, load_recipe
from .runner import RunResult, load_run, run

__all__ = ["Recipe", "RunResult", "load_recipe", "load_run", "run"]
