"""Experiment tracking: a finished run logged to MLflow (recipe, per-epoch and stage metrics, files).

Why at the end of a run, from the run record: the record (:mod:`distiq.record`) already holds every
number the report shows, so MLflow gets exactly those (no second bookkeeping inside the stages), and a
resumed run logs once, complete. Why MLflow's client object and not its module-level "active run": a
user's own script may have a run open; distiq never touches that state.

The default store is a local folder, ``mlruns/`` beside the run directory (``mlflow ui
--backend-store-uri file:runs/mlruns`` shows it). MLflow 3 keeps its file store in maintenance mode
behind ``MLFLOW_ALLOW_FILE_STORE``; distiq sets it for ``file:`` URIs only, since a local folder is the
one store that needs no server or database.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from distiq.errors import DistiqError
from distiq.record import read_run, write_run

#: MLflow's limit on a parameter value's length.
MAX_PARAM = 6000


def default_uri(run_dir: Path) -> str:
    """The local file store beside the run directory."""
    return (run_dir.resolve().parent / "mlruns").as_uri()


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay values (MLflow params are flat strings)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out |= flatten(value, f"{prefix}.{key}" if prefix else str(key))
    return out


def _scalars(mapping: dict) -> dict[str, float]:
    return {k: float(v) for k, v in mapping.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def log_run(run_dir: str | os.PathLike[str], uri: str | None = None, experiment: str = "distiq") -> str:
    """Log the finished run in ``run_dir`` to MLflow; return the MLflow run id (also kept in run.json).

    Logged: the recipe as parameters (dotted paths), each stage's scalar metrics as
    ``<stage>.<metric>``, each training epoch's numbers as ``<stage>.<key>`` at step ``epoch``, and
    ``run.json``, the run's recipe and the report folder as artifacts.

    Raises:
        DistiqError: mlflow is not installed (the ``mlflow`` extra), or the store cannot be written.
    """
    try:
        from mlflow.entities import Metric, Param
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise DistiqError("tracking.mlflow: needs the mlflow package: pip install 'distiq[mlflow]'") from None
    run_dir = Path(run_dir)
    record = read_run(run_dir)
    uri = uri or default_uri(run_dir)
    if uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    tags = {"distiq.run_dir": str(run_dir.resolve()), "distiq.cpu": str(record.cpu.get("model", ""))}
    run = client.create_run(experiment_id, run_name=record.name, tags=tags)
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    params = [Param(k[:250], json.dumps(v)[:MAX_PARAM]) for k, v in flatten(record.recipe).items()]
    metrics = []
    for stage in record.stages:
        metrics += [Metric(f"{stage.name}.{k}", v, now, 0) for k, v in _scalars(stage.metrics).items()]
        for row in stage.history:
            step = int(row.get("epoch", 0))
            metrics += [
                Metric(f"{stage.name}.{k}", v, now, step) for k, v in _scalars(row).items() if k != "epoch"
            ]
    for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(run_id, params=params[i : i + 100])
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i : i + 1000])
    for name in ("run.json", "run-recipe.yaml"):
        if (run_dir / name).is_file():
            client.log_artifact(run_id, str(run_dir / name))
    if (run_dir / "report").is_dir():
        client.log_artifacts(run_id, str(run_dir / "report"), "report")
    client.set_terminated(run_id)
    record.tracking = {"mlflow": {"uri": uri, "experiment": experiment, "run_id": run_id}}
    write_run(run_dir, record)
    return run_id


__all__ = ["default_uri", "flatten", "log_run"]
