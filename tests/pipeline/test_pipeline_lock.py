"""One run at a time per folder; stage keys hash the contents of the files a stage reads; a run folder
never overwrites the user's files nor leaves the runs folder; broken records mean "not done"."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import distiq as dq
from distiq import pipeline
from distiq.cli.main import main
from distiq.engine import save_weights
from distiq.engine.weights import read_safetensors
from distiq.errors import DataError, DistiqError
from distiq.lock import LOCK_FILE, hold_folder
from distiq.models import create
from distiq.pipeline.recipe import load_recipe

QUIET = {"latency": False, "robustness": False, "bootstrap": 0}


def teacher_only(**teacher) -> dict:
    return {
        "name": "lock",
        "data": {"name": "digits", "subsample": 300},
        "teacher": teacher or {"model": "mlp", "model_options": {"hidden": [16]}, "train": {"epochs": 1}},
        "evaluate": QUIET,
        "report": False,
    }


def weights_digest(path: Path) -> str:
    """Tensors and metadata of a weights file (safetensors orders metadata as a hash map does)."""
    tensors, meta = read_safetensors(path)
    digest = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    for name in sorted(tensors):
        digest.update(name.encode() + tensors[name].numpy().tobytes())
    return digest.hexdigest()


# ---- the lock --------------------------------------------------------------------------------------


def test_a_held_folder_is_refused_at_once_naming_the_folder_and_pid(tmp_path):
    with hold_folder(tmp_path / "run"):
        t0 = time.perf_counter()
        with pytest.raises(DistiqError) as e:
            with hold_folder(tmp_path / "run"):
                pass
        assert time.perf_counter() - t0 < 0.5
    assert str(tmp_path / "run") in str(e.value) and f"pid {os.getpid()}" in str(e.value)
    with hold_folder(tmp_path / "run"):  # released at the end of the block
        pass


def test_the_lock_of_a_process_killed_with_sigkill_does_not_block(tmp_path):
    folder = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from distiq.lock import hold_folder\nwith hold_folder({str(folder)!r}):\n"
            "    print('held', flush=True)\n    import time; time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DistiqError, match=f"pid {holder.pid}"):
            with hold_folder(folder):
                pass
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert (folder / LOCK_FILE).read_text().strip() == str(holder.pid)  # the stale file stays behind
    with hold_folder(folder):
        pass


def kill_recipe() -> dict:
    return {
        "name": "kill",
        "seed": 0,
        "data": {"name": "digits", "subsample": 600},
        "teacher": {
            "model": "mlp",
            "model_options": {"hidden": [32]},
            "train": {"epochs": 2, "lr": 0.01, "batch_size": 64},
        },
        "distill": {
            "student": "mlp",
            "student_options": {"hidden": [32]},
            "train": {"epochs": 12, "lr": 0.01, "batch_size": 8},
        },
        "evaluate": QUIET,
        "report": False,
    }


SECOND = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from distiq.cli.main import main
    go = Path(sys.argv[1])
    while not go.exists():
        time.sleep(0.01)
    t0 = time.perf_counter()
    code = main(["run", sys.argv[2], "--out", sys.argv[3]])
    print(f"{time.perf_counter() - t0:.3f}", flush=True)
    sys.exit(code)
    """
)


def _outputs(run_dir: Path) -> dict:
    """What a run leaves, as comparable values: ONNX bytes, weights, epoch records minus timings."""
    found = {}
    for stage in sorted((run_dir / "stages").iterdir()):
        found[f"{stage.name}/onnx"] = hashlib.sha256((stage / "model.onnx").read_bytes()).hexdigest()
        found[f"{stage.name}/weights"] = weights_digest(stage / "model.safetensors")
        history = [json.loads(x) for x in (stage / "history.jsonl").read_text().splitlines()]
        found[f"{stage.name}/history"] = [{k: v for k, v in r.items() if "seconds" not in k} for r in history]
    return found


def test_second_run_into_a_busy_folder_exits_2_at_once_then_the_killed_run_resumes_identically(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(kill_recipe()))
    whole, killed, go = tmp_path / "whole", tmp_path / "killed", tmp_path / "go"
    cmd = [sys.executable, "-m", "distiq", "run", str(recipe), "--out"]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    assert subprocess.run([*cmd, str(whole)], timeout=300, **quiet).returncode == 0

    # the second run is started first and waits, imported, for the go: its own start-up is not timed
    second = subprocess.Popen(
        [sys.executable, "-c", SECOND, str(go), str(recipe), str(killed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = subprocess.Popen([*cmd, str(killed)], **quiet)
    history = killed / "stages" / "01-distill" / "history.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and first.poll() is None:
        if history.exists() and len(history.read_text().splitlines()) >= 2:
            break
        time.sleep(0.02)
    assert first.poll() is None, "the first run ended before the second could start"
    go.touch()
    out, err = second.communicate(timeout=60)
    alive = first.poll() is None
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert alive, "the first run had ended before the second was refused"
    assert second.returncode == 2, err
    (line,) = err.strip().splitlines()
    assert str(killed) in line and f"pid {first.pid}" in line
    assert float(out) < 2.0  # refused at the lock: no data loaded, nothing trained
    assert 2 <= len(history.read_text().splitlines()) < 12

    assert subprocess.run([*cmd, str(killed)], timeout=300, **quiet).returncode == 0
    assert _outputs(killed) == _outputs(whole)


# ---- stage keys hash contents ----------------------------------------------------------------------


def test_teacher_weights_replaced_at_the_same_path_rerun_the_teacher_stage(tmp_path):
    path = tmp_path / "teacher.safetensors"
    torch.manual_seed(0)
    save_weights(create("mlp", image_size=8, hidden=(16,)), path)
    recipe = teacher_only(weights=str(path))
    first = pipeline.run(recipe, tmp_path / "run")
    path.write_bytes(path.read_bytes())  # rewritten, same contents: still reused
    assert [s.skipped for s in pipeline.run(recipe, tmp_path / "run").stages] == [True]
    torch.manual_seed(1)
    save_weights(create("mlp", image_size=8, hidden=(16,)), path)
    again = pipeline.run(recipe, tmp_path / "run")
    assert [s.skipped for s in again.stages] == [False]
    assert again.stages[0].key != first.stages[0].key
    stage = tmp_path / "run" / again.stages[0].artifacts["weights"]
    assert weights_digest(stage) == weights_digest(path)  # the new teacher, not the old one


def test_npz_data_replaced_at_the_same_path_reruns_the_stages(tmp_path):
    data = tmp_path / "data.npz"

    def write(seed: int) -> None:
        r = np.random.default_rng(seed)
        np.savez(data, x=r.random((90, 1, 8, 8), dtype=np.float32), y=np.arange(90) % 3)

    write(0)
    recipe = teacher_only() | {"data": {"name": str(data)}}
    pipeline.run(recipe, tmp_path / "run")
    assert [s.skipped for s in pipeline.run(recipe, tmp_path / "run").stages] == [True]
    write(1)
    assert [s.skipped for s in pipeline.run(recipe, tmp_path / "run").stages] == [False]


# ---- the user's files and the runs folder ----------------------------------------------------------


@pytest.mark.parametrize("name", ["/tmp/elsewhere", "../outside", "a/../../b", "~/x", "", "a\0b"])
def test_recipe_name_outside_the_runs_folder_is_refused_at_load(capsys, tmp_path, name):
    with pytest.raises(DistiqError, match=r"name: .*inside runs/"):
        load_recipe(teacher_only() | {"name": name})
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(teacher_only() | {"name": name}))
    assert main(["run", str(path)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert str(path) in line and "name" in line


def test_out_dot_keeps_the_users_recipe_yaml(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mine = "# my notes\n" + yaml.safe_dump(teacher_only())
    Path("recipe.yaml").write_text(mine)
    result = dq.run("recipe.yaml", ".")
    assert Path("recipe.yaml").read_text() == mine
    written = yaml.safe_load(Path("run-recipe.yaml").read_text())
    assert written == json.loads(Path("run.json").read_text())["recipe"]
    assert result.stages[0].kind == "teacher"


def test_recipe_yaml_is_still_written_where_the_name_is_free_or_distiqs(tmp_path):
    recipe = teacher_only()
    pipeline.run(recipe, tmp_path)
    first = yaml.safe_load((tmp_path / "recipe.yaml").read_text())
    assert first == yaml.safe_load((tmp_path / "run-recipe.yaml").read_text())
    recipe["seed"] = 3
    pipeline.run(recipe, tmp_path)  # distiq's own copy is kept up to date
    assert yaml.safe_load((tmp_path / "recipe.yaml").read_text())["seed"] == 3


# ---- broken records mean "not done" ----------------------------------------------------------------


@pytest.mark.parametrize(
    "record",
    [
        lambda r: r | {"artifacts": ["model.onnx"]},
        lambda r: r | {"extra": "x"},
        lambda r: r | {"artifacts": {"weights": 3}},
        lambda r: [r],
    ],
)
def test_malformed_stage_json_reruns_the_stage(capsys, tmp_path, record):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(teacher_only()))
    assert main(["run", str(recipe), "--out", str(tmp_path / "run")]) == 0
    path = tmp_path / "run" / "stages" / "00-teacher" / "stage.json"
    path.write_text(json.dumps(record(json.loads(path.read_text()))))
    (tmp_path / "run" / "stages" / "00-teacher" / "key.txt").write_bytes(b"\xff\xfe\x00")
    assert main(["run", str(recipe), "--out", str(tmp_path / "run")]) == 0, capsys.readouterr().err
    stages = json.loads((tmp_path / "run" / "run.json").read_text())["stages"]
    assert [s["skipped"] for s in stages] == [False]


def test_malformed_run_json_is_a_data_error(tmp_path):
    (tmp_path / "run.json").write_bytes(b"{\xff")
    with pytest.raises(DataError, match="run.json"):
        pipeline.load_run(tmp_path)
