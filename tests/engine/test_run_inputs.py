"""A training folder knows what made it: reruns resume only the same inputs, divergence stops with the
last good checkpoint intact, a broken log or state file is one line (or repaired), files honour umask."""

from __future__ import annotations

import hashlib
import json
import os
import stat

import numpy as np
import pytest
import torch
import yaml
from torch import nn

import distiq as dq
from distiq.cli.main import main
from distiq.data.arrays import ArrayDataset
from distiq.engine import save_weights, train
from distiq.engine.objective import Objective
from distiq.engine.train import Diverged, InputsChanged
from distiq.engine.weights import read_safetensors
from distiq.errors import DataError
from distiq.models import create


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def weights(path) -> str:
    """A digest of a weights file's tensors and metadata: safetensors writes the metadata in hash-map
    order, so equal weights files need not be equal bytes."""
    tensors, meta = read_safetensors(path)
    digest = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    for name in sorted(tensors):
        digest.update(name.encode() + tensors[name].numpy().tobytes())
    return digest.hexdigest()


def cli(capsys, *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().err


def train_args(out, *extra: str) -> list[str]:
    """``distiq train`` of a small MLP on 8x8 digits, one epoch unless ``extra`` says otherwise."""
    return [
        "train",
        "--data",
        "digits",
        "--model",
        "mlp",
        "--subsample",
        "400",
        "--epochs",
        "1",
        "--lr",
        "0.01",
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]


def blobs(n: int = 96, seed: int = 0) -> ArrayDataset:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.randn(3, 16, generator=g)[y] * 1.5 + torch.randn(n, 16, generator=g)
    return ArrayDataset(x.reshape(n, 1, 4, 4), y)


def tiny(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))


# ---- problem 2: reruns with other inputs ---------------------------------------------------------


def test_train_rerun_with_other_options_is_refused_same_options_resume_force_starts_fresh(capsys, tmp_path):
    out = tmp_path / "a"
    assert cli(capsys, *train_args(out))[0] == 0
    model, first = out / "model.safetensors", weights(out / "model.safetensors")

    code, err = cli(capsys, *train_args(out, "--lr", "0.3", "--optimizer", "sgd", "--seed", "5"))
    assert code == 2
    (line,) = err.strip().splitlines()
    assert str(out) in line and "--force" in line
    assert "lr: 0.01 -> 0.3" in line and "optimizer: 'adam' -> 'sgd'" in line and "seed: 0 -> 5" in line
    assert weights(model) == first
    assert json.loads((out / "summary.json").read_text())["options"]["lr"] == 0.01  # not the new options

    assert cli(capsys, *train_args(out))[0] == 0  # same inputs: resumed, bit-exact
    assert weights(model) == first

    assert cli(capsys, *train_args(out, "--lr", "0.3", "--optimizer", "sgd", "--force"))[0] == 0
    assert weights(model) != first
    summary = json.loads((out / "summary.json").read_text())
    assert summary["options"]["lr"] == 0.3 and summary["options"]["optimizer"] == "sgd"
    assert summary["inputs"]["data"] == {"name": "digits", "root": None}
    assert len(summary["inputs_key"]) == 16
    log = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [0] and log[0]["lr"] == 0.3  # the fresh run's log alone


def test_npz_replaced_at_the_same_path_is_another_input(capsys, tmp_path):
    data = tmp_path / "data.npz"

    def write(seed: int) -> None:
        r = np.random.default_rng(seed)
        np.savez(data, x=r.random((60, 1, 8, 8), dtype=np.float32), y=np.arange(60) % 3)

    write(0)
    out = tmp_path / "out"
    args = [
        "train",
        "--data",
        str(data),
        "--model",
        "mlp",
        "--epochs",
        "1",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert cli(capsys, *args)[0] == 0
    assert json.loads((out / "summary.json").read_text())["inputs"]["data"]["sha256"] == sha(data)
    write(1)
    code, err = cli(capsys, *args)
    assert code == 2 and "data changed" in err and str(out) in err


def test_distill_refuses_a_teacher_replaced_at_the_same_path(capsys, tmp_path):
    teacher = tmp_path / "teacher.safetensors"
    save_weights(create("mlp", image_size=8, hidden=(16,)), teacher)
    out = tmp_path / "student"
    args = [
        "distill",
        "--data",
        "digits",
        "--subsample",
        "300",
        "--teacher",
        str(teacher),
        "--student",
        "mlp",
    ]
    args += ["--epochs", "1", "--out", str(out), "--no-progress"]
    assert cli(capsys, *args)[0] == 0
    first = weights(out / "model.safetensors")
    assert cli(capsys, *args)[0] == 0 and weights(out / "model.safetensors") == first  # same teacher: resumed
    torch.manual_seed(7)
    save_weights(create("mlp", image_size=8, hidden=(16,)), teacher)  # other weights, same path
    code, err = cli(capsys, *args)
    assert code == 2 and "teacher changed" in err and "--force" in err
    assert cli(capsys, *args, "--force")[0] == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["inputs"]["teacher"]["sha256"] == sha(teacher)


def test_more_epochs_continue_only_when_the_done_epochs_lr_is_unchanged(tmp_path):
    ckpt = tmp_path / "ckpt"
    opts = {"lr": 1e-2, "schedule": "constant", "progress": False, "checkpoint_dir": str(ckpt)}
    train(tiny(), blobs(), epochs=1, **opts)
    resumed = train(tiny(seed=9), blobs(), epochs=2, **opts)  # a constant schedule: the same run, longer
    assert resumed.resumed_from == 1
    fresh = train(tiny(), blobs(), epochs=2, lr=1e-2, schedule="constant", progress=False)
    for k, v in fresh.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k

    cosine = tmp_path / "cosine"
    train(tiny(), blobs(), epochs=2, lr=1e-2, progress=False, checkpoint_dir=str(cosine))
    with pytest.raises(InputsChanged, match=r"epochs: 2 -> 3 after 2 done"):
        train(tiny(), blobs(), epochs=3, lr=1e-2, progress=False, checkpoint_dir=str(cosine))
    with pytest.raises(InputsChanged, match=r"inputs changed"):
        train(tiny(), blobs(), epochs=2, lr=1e-2, progress=False, checkpoint_dir=str(cosine), inputs="other")


# ---- problem 3 (training half): finite or stop ---------------------------------------------------


def test_divergence_stops_naming_the_epoch_and_keeps_the_last_good_checkpoint(capsys, tmp_path):
    out = tmp_path / "a"
    assert cli(capsys, *train_args(out))[0] == 0
    ckpt = out / "checkpoint" / "ckpt-000001.safetensors"
    before = {p.name: sha(p) for p in (out / "checkpoint").iterdir()}
    model = weights(out / "model.safetensors")
    blowup = ("--lr", "1e10", "--optimizer", "sgd", "--epochs", "4", "--schedule", "constant", "--resume")
    code, err = cli(capsys, *train_args(out, *blowup))
    assert code == 2
    (line,) = err.strip().splitlines()
    assert "training diverged at epoch 2/4" in line and "step" in line
    assert f"the last good checkpoint, {ckpt}, is kept unchanged" in line
    assert {p.name: sha(p) for p in (out / "checkpoint").iterdir()} == before
    assert weights(out / "model.safetensors") == model
    assert cli(capsys, *train_args(out))[0] == 0  # the kept checkpoint still resumes


def test_divergence_in_the_first_epoch_writes_no_model(capsys, tmp_path):
    out = tmp_path / "b"
    code, err = cli(capsys, *train_args(out, "--lr", "1e10", "--optimizer", "sgd", "--schedule", "constant"))
    assert code == 2 and "training diverged at epoch 1/1" in err and "no checkpoint was written" in err
    assert not (out / "model.safetensors").exists() and not (out / "checkpoint" / "state.json").exists()


def test_non_finite_weights_after_a_finite_loss_stop_before_the_checkpoint(tmp_path):
    class Scaled(Objective):
        """A finite loss whose gradients are so large that one SGD step overflows the weights."""

        def forward(self, model, x, y, index):
            logits, terms = super().forward(model, x, y, index)
            return logits, {"loss": terms["loss"] * 1e30}

    ckpt = tmp_path / "c"
    opts = {"optimizer": "sgd", "momentum": 0.0, "lr": 1e10, "batch_size": 1000, "progress": False}
    with pytest.raises(
        Diverged, match=r"diverged at epoch 1/2, after its last step: \d+ value\(s\) of \d\.\w+"
    ):
        train(tiny(), blobs(), objective=Scaled(), epochs=2, checkpoint_dir=str(ckpt), **opts)
    assert not (ckpt / "state.json").exists()


def test_a_buffer_that_holds_inf_from_the_start_is_not_divergence(tmp_path):
    model = tiny()
    model.register_buffer("mask", torch.tensor([0.0, float("-inf")]))  # -inf on purpose, as masks do
    result = train(model, blobs(), epochs=2, progress=False, checkpoint_dir=str(tmp_path / "c"))
    assert len(result.history) == 2 and (tmp_path / "c" / "ckpt-000002.safetensors").exists()


# ---- problem 4: a broken log or state file -------------------------------------------------------


def test_partial_last_line_of_metrics_log_is_repaired_on_resume(capsys, tmp_path):
    out = tmp_path / "a"
    assert cli(capsys, *train_args(out, "--schedule", "constant"))[0] == 0
    log = out / "metrics.jsonl"
    with open(log, "a") as f:
        f.write('{"epoch": 1, "lr": 0.0')  # killed in the middle of the next epoch's record
    assert cli(capsys, *train_args(out, "--schedule", "constant", "--epochs", "2"))[0] == 0
    records = [json.loads(x) for x in log.read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1]


def test_partial_line_in_a_log_without_checkpoint_is_dropped_not_glued(tmp_path):
    log = tmp_path / "h.jsonl"
    log.write_text('{"epoch": 0, "x": 1}\n{"epoch": 3, "tr')
    train(tiny(), blobs(), epochs=1, progress=False, log_path=str(log))
    records = [json.loads(x) for x in log.read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 0] and records[0] == {"epoch": 0, "x": 1}


@pytest.mark.parametrize(
    "state",
    [
        "[]",
        '{"file": 3}',
        '{"file": "../../elsewhere.safetensors"}',
        '{"file": "ckpt-000001.safetensors"}',  # the tensor file exists, the rest is missing
        '{"file": "ckpt-000001.safetensors", "epoch": 1, "history": {}, "best_epoch": 0, "stopped": "x"}',
        "\x00\xff not json",
    ],
)
def test_malformed_state_json_is_one_line_and_exit_2(capsys, tmp_path, state):
    out = tmp_path / "a"
    assert cli(capsys, *train_args(out))[0] == 0
    path = out / "checkpoint" / "state.json"
    path.write_bytes(state.encode("latin-1"))
    code, err = cli(capsys, *train_args(out))
    assert code == 2, err
    (line,) = err.strip().splitlines()
    assert str(path) in line and "corrupt checkpoint state" in line


def test_checkpoint_of_another_model_under_resume_is_one_line(capsys, tmp_path):
    out = tmp_path / "a"
    assert cli(capsys, *train_args(out))[0] == 0
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"model_options": {"hidden": [7]}}))
    code, err = cli(capsys, *train_args(out, "--config", str(cfg), "--resume"))
    assert code == 2 and "does not fit this model" in err and "ckpt-000001.safetensors" in err


def test_load_checkpoint_of_a_state_that_is_not_an_object_raises_data_error(tmp_path):
    from distiq.engine.checkpoint import load_checkpoint

    (tmp_path / "state.json").write_text('"ckpt-000001.safetensors"')
    with pytest.raises(DataError, match="not a JSON object"):
        load_checkpoint(tmp_path)


# ---- problem 5: written files honour the umask ---------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_weights_checkpoints_and_json_honour_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        save_weights(tiny(), tmp_path / "w.safetensors")
        train(tiny(), blobs(), epochs=1, progress=False, checkpoint_dir=str(tmp_path / "ck"))
    finally:
        os.umask(old)
    for path in [tmp_path / "w.safetensors", *sorted((tmp_path / "ck").iterdir())]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path


def test_saving_the_same_weights_twice_gives_the_same_bytes(tmp_path):
    """Reruns are compared by hash: the file must not depend on the library's map order."""
    torch.manual_seed(0)
    model = dq.models.create("mlp", image_size=8, hidden=(16,))
    digests = {
        hashlib.sha256(
            dq.save_weights(model, tmp_path / f"{i}.safetensors", {"epoch": i % 1}).read_bytes()
        ).hexdigest()
        for i in range(12)
    }
    assert len(digests) == 1
    back = dq.load_weights(dq.models.create("mlp", image_size=8, hidden=(16,)), tmp_path / "0.safetensors")
    assert all(
        torch.equal(a, b)
        for a, b in zip(back.state_dict().values(), model.state_dict().values(), strict=True)
    )
