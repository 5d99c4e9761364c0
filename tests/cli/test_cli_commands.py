"""The command line: help, clear errors with exit code 2, and train -> distill -> evaluate on digits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open

from distiq.cli.main import main
from distiq.engine.weights import load_model


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_commands_and_options(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for cmd in ("train", "distill", "evaluate"):
        assert cmd in out
    code, out, _ = run(capsys, "distill", "--help")
    assert code == 0
    for opt in ("--config", "--teacher", "--temperature", "--alpha", "--epochs", "--lr", "--offline"):
        assert opt in out
    assert "features" in out  # YAML-only options are named in the help too


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["train", "--data", "digits", "--epochs", "0"], "epochs"),
        (["train", "--data", "no-such-data"], "no-such-data"),
        (["train", "--data", "digits", "--model", "no-such-model", "--epochs", "1"], "no-such-model"),
        (["train", "--config", "/nonexistent/cfg.yaml"], "/nonexistent/cfg.yaml"),
        (["evaluate", "--model", "/nonexistent/w.safetensors", "--data", "digits"], "w.safetensors"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, args, needle):
    code, _, err = run(capsys, *args, *(["--out", str(tmp_path)] if args[0] == "train" else []))
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], err


def test_unknown_yaml_key_names_the_key(capsys, tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("data: digits\nepochs: 1\nlearning_rate: 0.1\n")
    code, _, err = run(capsys, "train", "--config", str(cfg))
    assert code == 2
    assert "learning_rate" in err and str(cfg) in err


def test_unknown_cli_option_exits_2(capsys):
    code, _, _ = run(capsys, "train", "--no-such-option", "3")
    assert code == 2


def test_train_distill_evaluate_on_digits(capsys, tmp_path):
    teacher_dir, student_dir = tmp_path / "teacher", tmp_path / "student"
    cfg = tmp_path / "teacher.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "data": "digits",
                "model": "lenet5",
                "epochs": 4,
                "lr": 0.01,
                "out": str(teacher_dir),
                "progress": False,
            }
        )
    )
    code, _, err = run(capsys, "train", "--config", str(cfg), "--epochs", "8")
    assert code == 0, err
    summary = json.loads((teacher_dir / "summary.json").read_text())
    assert summary["epochs_run"] == 8  # the command line overrides the file
    assert summary["test"]["accuracy"] > 0.8

    code, _, err = run(
        capsys,
        "distill",
        "--data",
        "digits",
        "--teacher",
        str(teacher_dir / "model.safetensors"),
        "--student",
        "mlp",
        "--epochs",
        "3",
        "--offline",
        "--out",
        str(student_dir),
        "--no-progress",
    )
    assert code == 0, err
    assert list((student_dir / "teacher-cache").glob("teacher-logits-*.safetensors"))
    student_summary = json.loads((student_dir / "summary.json").read_text())

    code, out, err = run(
        capsys, "evaluate", "--model", str(student_dir / "model.safetensors"), "--data", "digits"
    )
    assert code == 0, err
    metrics = json.loads(out)
    assert metrics["accuracy"] == pytest.approx(student_summary["test"]["accuracy"])


def train_teacher(capsys, out: Path, epochs: int, subsample: int | None = None) -> Path:
    """A lenet5 trained on digits by ``distiq train``; its weights file."""
    args = ["train", "--data", "digits", "--model", "lenet5", "--epochs", str(epochs)]
    args += ["--subsample", str(subsample)] if subsample else []
    code, _, err = run(capsys, *args, "--out", str(out), "--no-progress")
    assert code == 0, err
    return out / "model.safetensors"


def test_distill_augmented_caches_the_teacher_per_view(capsys, tmp_path):
    teacher = train_teacher(capsys, tmp_path / "teacher", epochs=1)
    rows = {}
    for name, extra in (("plain", []), ("shifted", ["--augment-shift", "1", "--augment-flip"])):
        out = tmp_path / name
        args = [
            "distill",
            "--data",
            "digits",
            "--teacher",
            str(teacher),
            "--student",
            "mlp",
            "--epochs",
            "1",
            "--offline",
            "--out",
            str(out),
            "--no-progress",
            *extra,
        ]
        code, _, err = run(capsys, *args)
        assert code == 0, err
        (cache,) = (out / "teacher-cache").glob("teacher-logits-*.safetensors")
        rows[name] = safe_open(str(cache), "pt").get_slice("logits").get_shape()[0]
    assert rows["shifted"] == 18 * rows["plain"]  # 9 shifts x 2 mirrorings of every training image


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_model(path).state_dict()


def test_sigkilled_distill_resumes_to_identical_weights(capsys, tmp_path):
    teacher = train_teacher(capsys, tmp_path / "teacher", epochs=2, subsample=400)

    def config(out: Path) -> Path:
        path = out.with_suffix(".yaml")
        path.write_text(
            yaml.safe_dump(
                {
                    "data": "digits",
                    "teacher": str(teacher),
                    "student": "mlp",
                    "subsample": 400,
                    "student_options": {"hidden": [64], "dropout": 0.1},
                    "epochs": 6,
                    "batch_size": 8,
                    "out": str(out),
                    "progress": False,
                }
            )
        )
        return path

    cmd = [sys.executable, "-m", "distiq", "distill", "--config"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    subprocess.run([*cmd, str(config(tmp_path / "whole"))], check=True, env=env, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen([*cmd, str(config(killed))], env=env, stderr=subprocess.DEVNULL)
    state = killed / "checkpoint" / "state.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if state.exists() and json.loads(state.read_text())["epoch"] >= 2:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "model.safetensors").exists()
    subprocess.run([*cmd, str(config(killed))], check=True, env=env, capture_output=True)

    whole, resumed = (
        _weights(tmp_path / "whole" / "model.safetensors"),
        _weights(killed / "model.safetensors"),
    )
    for k, v in whole.items():
        assert torch.equal(v, resumed[k]), k
    log = [json.loads(x) for x in (killed / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == list(range(6))
