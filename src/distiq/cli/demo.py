"""``distiq demo``: the shipped Fashion-MNIST recipe, end to end (what ``make demo`` runs).

Teacher -> KD student -> channel pruning -> int8 chosen under an accuracy budget -> report. Falls back
to scikit-learn's digits, and says so, when Fashion-MNIST is not installed.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from distiq.pipeline import load_recipe
from distiq.workflow import run

from .common import console

DEMO_RECIPE = "fashion_mnist_demo.yaml"


def demo_recipe_path() -> Path:
    """The demo recipe shipped inside the package."""
    return Path(str(resources.files("distiq") / "recipes" / DEMO_RECIPE))


class DemoOptions(BaseModel):
    """Options of ``distiq demo``."""

    model_config = ConfigDict(extra="forbid")
    out: Path = Field(Path("runs/demo"), description="Run directory.")


def run_demo(opts: DemoOptions) -> None:
    """Run the demo recipe and print where its report is."""
    recipe = load_recipe(demo_recipe_path())
    console.print(f"[bold]distiq demo[/bold]: recipe {demo_recipe_path()}")
    result = run(recipe, opts.out)
    teacher, final = result.stage("teacher").metrics, result.stages[-1].metrics
    nan = float("nan")
    speedup = teacher.get("latency_ms_batch256", nan) / final.get("latency_ms_batch256", nan)
    console.print(
        f"student: {100 * final['accuracy']:.2f}% vs teacher {100 * teacher['accuracy']:.2f}% "
        f"({100 * (final['accuracy'] - teacher['accuracy']):+.2f} points), "
        f"{teacher['size_bytes'] / final['size_bytes']:.1f}x smaller on disk, "
        f"{speedup:.1f}x "
        "faster at batch 256 in ONNX Runtime"
    )
    console.print(f"report: [bold]{result.run_dir / 'report' / 'report.html'}[/bold]")
