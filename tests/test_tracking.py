"""MLflow tracking of a finished run: recipe, per-epoch and stage metrics, report, in a local store."""

from __future__ import annotations

import json
import sys

import pytest

pytest.importorskip("mlflow", reason="the mlflow extra is not installed: pip install 'distiq[mlflow]'")
from mlflow.tracking import MlflowClient  # noqa: E402

import distiq as dq  # noqa: E402
from distiq.cli.main import main  # noqa: E402
from distiq.errors import DistiqError  # noqa: E402


def recipe(**extra) -> dict:
    return {
        "name": "tracked",
        "data": {"name": "digits", "subsample": 400},
        "teacher": {"model": "mlp", "model_options": {"hidden": [32]}, "train": {"epochs": 3, "lr": 0.01}},
        "distill": {"student": "mlp", "student_options": {"hidden": [8]}, "train": {"epochs": 2, "lr": 0.01}},
        "evaluate": {"latency": False, "robustness": False, "bootstrap": 0},
        **extra,
    }


def _only_run(uri: str, experiment: str = "distiq"):
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return client, run


def test_a_recipe_with_tracking_logs_recipe_metrics_and_report(tmp_path):
    uri = (tmp_path / "store").as_uri()
    result = dq.run(recipe(tracking={"mlflow": {"uri": uri, "experiment": "kd"}}), tmp_path / "run")
    client, run = _only_run(uri, "kd")
    info = json.loads((result.run_dir / "run.json").read_text())
    assert info["tracking"]["mlflow"]["run_id"] == run.info.run_id
    assert run.data.params["distill.train.epochs"] == "2" and run.data.params["data.name"] == '"digits"'
    assert run.data.metrics["distill.accuracy"] == pytest.approx(result.stage("distill").metrics["accuracy"])
    epochs = client.get_metric_history(run.info.run_id, "teacher.val_accuracy")
    assert [m.step for m in epochs] == [0, 1, 2]
    history = result.stage("teacher").history
    assert [m.value for m in epochs] == pytest.approx([h["val_accuracy"] for h in history])
    files = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"run.json", "run-recipe.yaml", "report"} <= files
    report = {a.path for a in client.list_artifacts(run.info.run_id, "report")}
    assert "report/report.html" in report


def test_cli_mlflow_local_writes_mlruns_beside_the_run(tmp_path, capsys):
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(recipe(report=False)))
    assert main(["run", str(path), "--out", str(tmp_path / "runs" / "r"), "--mlflow", "local"]) == 0
    _, run = _only_run((tmp_path / "runs" / "mlruns").as_uri())
    assert run.info.run_name == "tracked" and "distill.f1_macro" in run.data.metrics


def test_tracking_without_mlflow_is_one_clear_line(tmp_path, monkeypatch):
    from distiq.tracking import log_run

    dq.run(recipe(report=False), tmp_path / "run")
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if the extra were not installed
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    monkeypatch.setitem(sys.modules, "mlflow.entities", None)
    with pytest.raises(DistiqError, match=r"needs the mlflow package: pip install 'distiq\[mlflow\]'"):
        log_run(tmp_path / "run")
