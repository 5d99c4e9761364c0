"""Progress of the training loop: a plain line per epoch when stderr is not a terminal, a bar when it is."""

from __future__ import annotations

import re
import sys

import pytest
import torch
from torch import nn

from distiq.data.arrays import ArrayDataset
from distiq.engine import train
from distiq.engine.progress import EpochProgress

LINE = re.compile(
    r"^train 02-distill: epoch (\d+)/(\d+)  train loss (\d+\.\d{4})  train acc (\d\.\d{4})"
    r"  val acc (\d\.\d{4})  (\d+\.\d) s$"
)


def blobs(n: int = 120, seed: int = 0) -> ArrayDataset:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.randn(3, 16, generator=g)[y] * 1.5 + torch.randn(n, 16, generator=g)
    return ArrayDataset(x.reshape(n, 1, 4, 4), y)


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))


def test_not_a_terminal_prints_one_plain_line_per_epoch(tmp_path, capsys):
    assert not sys.stderr.isatty()  # captured: what `make demo > log` sees
    log = tmp_path / "02-distill" / "history.jsonl"  # a pipeline stage folder names the lines
    result = train(tiny_net(), blobs(), blobs(60, seed=1), epochs=2, lr=1e-2, log_path=str(log))
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 2, err
    for k, (line, record) in enumerate(zip(lines, result.history, strict=True), start=1):
        m = LINE.match(line)
        assert m, line
        assert (int(m[1]), int(m[2])) == (k, 2)
        assert m[3] == f"{record['train_loss']:.4f}" and m[4] == f"{record['train_accuracy']:.4f}"
        assert m[5] == f"{record['val_accuracy']:.4f}"
        assert float(m[6]) >= round(record["train_seconds"], 1) - 0.05  # the whole epoch, validation too


def test_resumed_run_counts_from_the_epoch_it_resumes(tmp_path, capsys):
    opts = {
        "lr": 1e-2,
        "checkpoint_dir": str(tmp_path / "ckpt"),
        "log_path": str(tmp_path / "02-distill" / "h.jsonl"),
    }
    train(tiny_net(), blobs(), blobs(60, seed=1), epochs=1, **opts)
    capsys.readouterr()
    train(tiny_net(), blobs(), blobs(60, seed=1), epochs=2, **opts)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and LINE.match(lines[0]).group(1, 2) == ("2", "2")


def test_without_a_log_path_lines_say_train_and_omit_val_without_validation(capsys):
    train(tiny_net(), blobs(), epochs=1, lr=1e-2)
    (line,) = capsys.readouterr().err.splitlines()
    assert re.fullmatch(r"train: epoch 1/1  train loss \d+\.\d{4}  train acc \d\.\d{4}  \d+\.\d s", line)


def test_progress_false_prints_nothing(capsys):
    train(tiny_net(), blobs(), blobs(60, seed=1), epochs=2, progress=False)
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize(
    ("tty", "enabled", "mode"),
    [(True, None, "bar"), (False, None, "lines"), (False, True, "bar"), (True, False, "off")],
)
def test_terminal_keeps_the_rich_bar(monkeypatch, tty, enabled, mode):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: tty)
    assert EpochProgress("train", 2, enabled=enabled).mode == mode


def test_terminal_prints_no_plain_lines(monkeypatch, capsys):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    with EpochProgress("train", 2) as progress:
        progress.epoch_done("train loss 0.5000")
        progress.epoch_done("train loss 0.2500")
    assert "epoch 1/2" not in capsys.readouterr().err
