"""The ``distiq`` command line (also ``python -m distiq``).

Exit codes: 0 success; 2 bad input (one clear line on stderr); 1 internal error.
"""

from __future__ import annotations

import os
import sys

import typer

from distiq.errors import DistiqError
from distiq.plugins import load_plugins

from . import processes
from .demo import DemoOptions, run_demo
from .distill import DistillOptions, run_distill
from .evaluate import EvaluateOptions, run_evaluate
from .export import ExportOptions, run_export
from .options import command
from .prune import register as register_prune
from .quantize import QuantizeOptions, run_quantize
from .report import report_command
from .run import run_command
from .train import TrainOptions, run_train

app = typer.Typer(
    name="distiq",
    help="Distill, prune and quantize neural networks; export int8 ONNX; measure what was kept.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

command(app, "demo", DemoOptions, "Teacher -> distilled student on Fashion-MNIST, end to end.")(run_demo)
command(app, "train", TrainOptions, "Train a model (a teacher or a baseline) on a dataset.")(run_train)
command(app, "distill", DistillOptions, "Distill a saved teacher into a student.")(run_distill)
command(app, "evaluate", EvaluateOptions, "Evaluate saved weights or an ONNX file.")(run_evaluate)
command(app, "quantize", QuantizeOptions, "Quantize saved weights to int8 ONNX + report.")(run_quantize)
command(app, "export", ExportOptions, "Export saved weights to ONNX.")(run_export)
app.command("report", help="Rebuild the HTML/Markdown/JSON report of a run directory.")(report_command)
app.command("run")(run_command)
register_prune(app)  # prune, sparse


@app.callback()
def _plugins(
    plugin: list[str] = typer.Option(  # noqa: B008 (typer declares options as defaults)
        [], "--plugin", help="A file (my_losses.py) or module to import first, so its registered names work."
    ),
) -> None:
    """Distill, prune and quantize neural networks; export int8 ONNX; measure what was kept."""
    load_plugins(plugin)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    processes.ARGV[:] = sys.argv[1:] if argv is None else list(argv)
    try:
        app(args=argv, standalone_mode=False)
    except DistiqError as e:
        print(f"distiq: error: {e}", file=sys.stderr)
        return 2
    except typer.Exit as e:
        return e.exit_code
    except (typer.Abort, KeyboardInterrupt):
        print("distiq: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if hasattr(e, "show") and isinstance(getattr(e, "exit_code", None), int):
            e.show()  # a usage error from typer's parser: it prints itself, exit code 2
            return e.exit_code
        if os.environ.get("DISTIQ_DEBUG"):
            raise
        print(
            f"distiq: internal error: {type(e).__name__}: {e} (set DISTIQ_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        return 1
    return 0
