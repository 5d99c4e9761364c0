"""torch.distributed (gloo, 2 CPU processes under torchrun): the same weights as one process on the
same global batch, and an exact resume after a kill -9 of one rank."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import distiq as dq
from distiq.engine.distributed import launch_command

#: One offline distillation: a fixed random teacher, 301 digits (uneven shards), batch 65, 4 epochs.
SCRIPT = """
import atexit, os, sys
from pathlib import Path
import torch
import distiq as dq
from distiq.engine import distributed as dd

out, work, kill_after = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
data = dq.data.subsample(dq.data.load("digits", "train"), 301, seed=0)
torch.manual_seed(1)
teacher = dq.models.create("mlp", image_size=8, hidden=(32,))
torch.manual_seed(0)
student = dq.models.create("mlp", image_size=8, hidden=(16,))
marker = work / "killed-once"

def on_epoch_end(epoch, record):
    if epoch == kill_after and dd.rank() == dd.world_size() - 1 and not marker.exists():
        marker.touch()
        os.kill(os.getpid(), 9)

result = dq.distill(
    teacher, student, data, epochs=4, lr=0.01, batch_size=65, offline=True,
    cache_dir=work / "cache", checkpoint_dir=work / "checkpoint", progress=False,
    on_epoch_end=on_epoch_end,
)
if dd.is_main():
    dq.save_weights(student, out)
    (work / "resumed_from").write_text(str(result.resumed_from))
atexit._run_exitfuncs()  # distiq's exit handler; then which threads would run into interpreter shutdown
threads = sorted(p.read_text().strip() for p in Path("/proc/self/task").glob("*/comm"))
# one file per rank (two ranks' prints interleave on one stdout); RANK from torchrun's environment,
# as the exit handler has already destroyed the process group dd.rank() would ask
(work / f"threads-{os.environ.get('RANK', '0')}.txt").write_text(" ".join(threads))
"""


def _run(cmd: list[str], tmp: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env |= {"OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return dict(dq.load_model(path).state_dict())


@pytest.fixture(scope="module")
def script(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("dist") / "job.py"
    path.write_text(SCRIPT)
    return path


#: Two local gloo processes, as ``distiq ... --nproc 2`` launches them.
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]


def _torchrun(script: Path, out: Path, work: Path, kill_after: int = -1):
    return _run([*TORCHRUN, str(script), str(out), str(work), str(kill_after)], script.parent)


@pytest.fixture(scope="module")
def two(script) -> tuple[Path, subprocess.CompletedProcess]:
    """The job run uninterrupted in 2 processes (its weights, its run), shared by the tests below: each
    torchrun costs three interpreter start-ups."""
    work = script.parent / "w2"
    done = _torchrun(script, work / "two.safetensors", work)
    assert done.returncode == 0, done.stderr[-6000:]
    return work, done


def test_two_processes_reach_the_weights_of_one(script, two, tmp_path):
    one = _run(
        [sys.executable, str(script), str(tmp_path / "one.safetensors"), str(tmp_path / "w1"), "-1"], tmp_path
    )
    assert one.returncode == 0, one.stderr[-6000:]
    work, run = two
    # gloo threads left running into interpreter shutdown killed a finished rank (SIGABRT) in CI
    left = {p.name: p.read_text() for p in work.glob("threads-*.txt")}
    assert sorted(left) == ["threads-0.txt", "threads-1.txt"], run.stdout
    assert not any("gloo" in names for names in left.values()), left
    a, b = _weights(tmp_path / "one.safetensors"), _weights(work / "two.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-6, msg=name)
    assert any(not torch.equal(a[n], _initial()[n]) for n in a)  # it trained
    # the teacher logits were computed per shard, gathered, and cached once by rank 0
    assert len(list((work / "cache").glob("teacher-logits-*.safetensors"))) == 1


def _initial() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return dict(dq.models.create("mlp", image_size=8, hidden=(16,)).state_dict())


def test_a_killed_rank_resumes_exactly(script, two, tmp_path):
    killed = _torchrun(script, tmp_path / "k.safetensors", tmp_path / "w-k", kill_after=1)
    assert killed.returncode != 0 and (tmp_path / "w-k" / "killed-once").exists()
    assert not (tmp_path / "k.safetensors").exists()
    again = _torchrun(script, tmp_path / "k.safetensors", tmp_path / "w-k", kill_after=1)
    assert again.returncode == 0, again.stderr[-6000:]
    assert (tmp_path / "w-k" / "resumed_from").read_text() == "2"  # epochs 0 and 1 were checkpointed
    a, b = _weights(two[0] / "two.safetensors"), _weights(tmp_path / "k.safetensors")
    for name in a:
        assert torch.equal(a[name], b[name]), name


#: QAT through the same engine: a fixed random MLP calibrated on 128 digits, 2 epochs of LSQ fine-tuning.
#: SGD, not Adam: Adam divides by the gradient's running size, so a scale whose gradient is near zero
#: takes a full step whose sign float rounding decides, and the two runs part by whole steps.
QAT_SCRIPT = """
import sys
import torch
from safetensors.torch import save_file
import distiq as dq
from distiq.engine import distributed as dd

data = dq.data.subsample(dq.data.load("digits", "train"), 301, seed=0)
torch.manual_seed(0)
model = dq.models.create("mlp", image_size=8, hidden=(16,))
qmodel = dq.quantize(
    model, data.subset(range(128)), mode="qat", train_data=data, epochs=2, lr=0.01, batch_size=65,
    optimizer="sgd", progress=False,
)
if dd.is_main():
    save_file({k: v.contiguous() for k, v in qmodel.state_dict().items()}, sys.argv[1])
"""


def test_qat_in_two_processes_reaches_the_weights_of_one(tmp_path):
    """QAT is the one engine too: 2 gloo processes learn the weights and LSQ scales of one."""
    script = tmp_path / "qat.py"
    script.write_text(QAT_SCRIPT)
    one = _run([sys.executable, str(script), str(tmp_path / "one.safetensors")], tmp_path)
    assert one.returncode == 0, one.stderr[-6000:]
    two = _run([*TORCHRUN, str(script), str(tmp_path / "two.safetensors")], tmp_path)
    assert two.returncode == 0, two.stderr[-6000:]
    a, b = load_file(tmp_path / "one.safetensors"), load_file(tmp_path / "two.safetensors")
    assert a.keys() == b.keys() and any("scale" in k for k in a)
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-6, msg=name)
    initial = _initial()
    assert any(not torch.equal(a[k], initial[k]) for k in initial if k in a)  # it trained


def test_launch_command_is_torchrun_of_distiq():
    cmd = launch_command(3, ["distill", "--teacher", "t.safetensors"])
    assert cmd[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=3", "-m"]
    assert cmd[6:] == ["distiq", "distill", "--teacher", "t.safetensors"]


def test_distill_command_with_nproc_2_matches_one_process(tmp_path):
    torch.manual_seed(1)
    teacher = dq.save_weights(dq.models.create("mlp", image_size=8, hidden=(32,)), tmp_path / "t.safetensors")
    common = [
        "distill", "--teacher", str(teacher), "--student", "mlp",
        "--data", "digits", "--subsample", "301", "--epochs", "2", "--batch-size", "65", "--no-progress",
    ]  # fmt: skip
    runs = {}
    for n in (1, 2):
        cmd = [sys.executable, "-m", "distiq", *common, "--nproc", str(n), "--out", str(tmp_path / f"n{n}")]
        done = _run(cmd, tmp_path)
        assert done.returncode == 0, done.stderr[-6000:]
        runs[n] = _weights(tmp_path / f"n{n}" / "model.safetensors")
    for name, value in runs[1].items():
        torch.testing.assert_close(runs[2][name], value, rtol=1e-5, atol=1e-5, msg=name)  # float rounding
    assert (tmp_path / "n2" / "summary.json").is_file()
