"""``build_report``: the run directory in, ``RUN_DIR/report/`` out.

Why every file is written atomically and the HTML last: a report folder is either the previous
complete report or the new one file by file, and ``report.html`` (the file people open) appears only
once the charts it describes are on disk. Charts a previous build wrote but this one no longer has
(a section that vanished) are removed so the Markdown never points at stale pictures.
"""

from __future__ import annotations

from pathlib import Path

from distiq.io import write_bytes_atomic, write_json_atomic

from .html import render_html
from .markdown import render_markdown
from .plots import figures
from .summary import load_run, summary

REPORT_DIR = "report"


def build_report(run_dir: str | Path, out_dir: str | Path | None = None) -> dict[str, Path]:
    """Write ``report.html``, ``report.md``, ``report.json`` and the charts for a run.

    Args:
        run_dir: A run directory written by ``distiq run`` (it holds ``run.json``).
        out_dir: Where to write; defaults to ``RUN_DIR/report``.

    Returns:
        Paths by name: ``"html"``, ``"markdown"``, ``"json"``, and each chart's key (``"pareto-size"``...).

    Raises:
        DataError: ``run.json`` is missing or corrupt; the message names it.
    """
    run = load_run(run_dir)
    out = Path(out_dir) if out_dir is not None else run.dir / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    plots = figures(run)
    paths: dict[str, Path] = {}
    for p in plots:
        paths[p.key] = write_bytes_atomic(out / f"{p.key}.png", p.png)
    keep = {path.name for path in paths.values()}
    for stale in out.glob("*.png"):
        if stale.name not in keep:
            stale.unlink(missing_ok=True)
    paths["json"] = write_json_atomic(out / "report.json", summary(run, [f"{p.key}.png" for p in plots]))
    paths["markdown"] = write_bytes_atomic(out / "report.md", render_markdown(run, plots).encode())
    paths["html"] = write_bytes_atomic(out / "report.html", render_html(run, plots).encode())
    return paths
