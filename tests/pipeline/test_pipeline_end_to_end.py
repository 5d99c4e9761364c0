"""The whole product on its real paths: ``dq.run`` from teacher to report, and ``distiq run`` killed
with SIGKILL inside a training stage, then run again, ending with the same int8 file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest
import yaml

import distiq as dq
from distiq.quant import cpu_target
from distiq.quant.deploy import MIN_AGREEMENT


def full_recipe(name: str = "e2e") -> dict:
    return {
        "name": name,
        "seed": 0,
        "data": {"name": "digits", "val_fraction": 0.15},
        "teacher": {"model": "lenet5", "train": {"epochs": 4, "lr": 0.01, "batch_size": 64}},
        "distill": {
            "student": "mlp",
            "student_options": {"hidden": [48]},
            "loss": "kd",
            "train": {"epochs": 4, "lr": 0.01, "batch_size": 64},
        },
        "prune": {"amount": 0.3, "fine_tune": {"epochs": 1, "lr": 0.001, "batch_size": 64}},
        "quantize": {"method": "minmax", "calib_samples": 256, "sensitivity": False, "calib_repeats": 0},
        "evaluate": {"latency": False, "robustness": False, "bootstrap": 0},
        "budget": {
            "max_accuracy_drop": 3.0,
            "search": {
                "methods": ["minmax", "percentile"],
                "prune_amounts": [0.0, 0.5],
                "float_fallback": [0],
            },
        },
        "report": True,
    }


def test_run_from_teacher_to_report_on_digits(tmp_path):
    t0 = time.perf_counter()
    result = dq.run(full_recipe(), tmp_path)
    seconds = time.perf_counter() - t0
    assert [s.kind for s in result.stages] == ["teacher", "distill", "prune", "quantize", "search"]
    assert seconds < 60, f"end-to-end run took {seconds:.0f} s"
    info = json.loads((tmp_path / "run.json").read_text())
    # the quantize stage's accuracy is what ONNX Runtime delivers on this CPU, simulation beside it
    quant = result.stage("quantize")
    deploy = quant.quant["deploy"]
    assert deploy["cpu"]["target"] == cpu_target() and deploy["file_target"] == cpu_target()
    assert quant.metrics["accuracy"] == pytest.approx(deploy["accuracy"]["onnx"])
    assert deploy["agreement"] >= MIN_AGREEMENT, deploy
    assert abs(deploy["accuracy"]["simulated"] - deploy["accuracy"]["onnx"]) <= 0.003, deploy
    # the search pruned the float student (not the int8 file the quantize stage left) and chose one
    trials = info["search"]["trials"]
    assert sorted({t["params"]["prune"] for t in trials}) == [0.0, 0.5] and len(trials) == 4
    assert sum(t["chosen"] for t in trials) == 1
    chosen = result.stage("search")
    assert chosen.metrics["accuracy"] == pytest.approx(chosen.quant["deploy"]["accuracy"]["onnx"])
    assert chosen.quant["deploy"]["agreement"] >= MIN_AGREEMENT and chosen.quant["integer_nodes"]
    final = onnx.load(str(tmp_path / result.stages[-1].artifacts["onnx"]))
    assert any(n.op_type == "DequantizeLinear" for n in final.graph.node)
    html = (tmp_path / "report" / "report.html").read_text()
    assert "quantize" in html and cpu_target() in html


def _run_cli(recipe: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "distiq", "run", str(recipe), "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )


def kill_recipe() -> dict:
    recipe = full_recipe("kill")
    recipe["data"]["subsample"] = 600
    recipe["teacher"] = {"model": "mlp", "model_options": {"hidden": [32]}, "train": {"epochs": 2}}
    recipe["distill"]["train"] |= {"epochs": 8, "batch_size": 16}  # long enough to be killed in the middle
    recipe["budget"] = None
    recipe["report"] = False
    return recipe


def test_sigkill_inside_a_training_stage_resumes_to_the_same_int8_file(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(kill_recipe()))
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert _run_cli(path, whole).wait(timeout=300) == 0
    proc = _run_cli(path, killed)
    history = killed / "stages" / "01-distill" / "history.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if history.exists() and len(history.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    epochs_done = len(history.read_text().splitlines())
    assert 2 <= epochs_done < 8
    assert not (killed / "stages" / "03-quantize" / "model.onnx").exists()
    assert _run_cli(path, killed).wait(timeout=300) == 0
    a = (whole / "stages" / "03-quantize" / "model.onnx").read_bytes()
    b = (killed / "stages" / "03-quantize" / "model.onnx").read_bytes()
    assert a == b
