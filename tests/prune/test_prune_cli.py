"""``distiq prune`` and ``distiq sparse`` end to end on the digits data (seconds, no download)."""

from __future__ import annotations

import json

import torch

import distiq as dq
from distiq.cli.main import main
from distiq.prune import load_pruned, sparse, sparsity_table


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_prune_fine_tune_and_compressed_round_trip(capsys, tmp_path):
    torch.manual_seed(0)
    weights = dq.save_weights(dq.models.create("lenet300-100", image_size=8), tmp_path / "w.safetensors")
    code, _, err = run(
        capsys,
        "prune",
        "--data",
        "digits",
        "--weights",
        weights,
        "--amount",
        "0.8",
        "--epochs",
        "1",
        "--pruning-schedule",
        "cubic",
        "--teacher",
        "original",
        "--out",
        tmp_path / "p",
    )
    assert code == 0, err
    summary = json.loads((tmp_path / "p" / "summary.json").read_text())
    assert summary["sparsity"]["total"]["sparsity"] > 0.79
    dense = load_pruned(tmp_path / "p" / "model.safetensors")
    assert sparsity_table(dense)["total"]["sparsity"] > 0.79
    code, _, err = run(
        capsys, "sparse", "--file", tmp_path / "p" / "model.dqsp", "--out", tmp_path / "x.safetensors"
    )
    assert code == 0, err
    restored = load_pruned(tmp_path / "x.safetensors")
    expected = sparse.load_model(tmp_path / "p" / "model.dqsp")
    for k, v in expected.state_dict().items():
        assert torch.equal(restored.state_dict()[k], v), k


def test_structured_prune_then_bad_file_is_exit_2(capsys, tmp_path):
    torch.manual_seed(0)
    weights = dq.save_weights(dq.models.create("lenet5", image_size=8), tmp_path / "w.safetensors")
    code, _, err = run(
        capsys,
        "prune",
        "--data",
        "digits",
        "--weights",
        weights,
        "--amount",
        "0.5",
        "--structured",
        "--scope",
        "layer",
        "--epochs",
        "0",
        "--sparse-values",
        "float32",
        "--out",
        tmp_path / "p",
    )
    assert code == 0, err
    summary = json.loads((tmp_path / "p" / "summary.json").read_text())
    assert summary["parameters"]["after"] < 0.5 * summary["parameters"]["before"]
    data = bytearray((tmp_path / "p" / "model.dqsp").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "bad.dqsp").write_bytes(bytes(data))
    code, _, err = run(capsys, "sparse", "--file", tmp_path / "bad.dqsp")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "bad.dqsp" in lines[0], err
    code, _, err = run(
        capsys,
        "prune",
        "--data",
        "digits",
        "--weights",
        weights,
        "--scope",
        "sideways",
        "--out",
        tmp_path / "q",
    )
    assert code == 2 and "scope" in err


def _distinct_nonzero(model: torch.nn.Module) -> dict[str, int]:
    return {
        name: len(torch.unique(m.weight[m.weight != 0]))
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear)
    }


def test_prune_then_share_weights(capsys, tmp_path):
    """--share-bits 3: every layer keeps at most 2**3 distinct non-zero weights, the zeros of pruning
    stay zeros, and the shared .dqsp file reloads to exactly the dense weights written beside it."""
    torch.manual_seed(0)
    weights = dq.save_weights(dq.models.create("lenet300-100", image_size=8), tmp_path / "w.safetensors")
    args = ["prune", "--data", "digits", "--amount", "0.8", "--scope", "layer", "--epochs", "1"]
    args += ["--weights", weights]
    code, _, err = run(capsys, *args, "--share-bits", "3", "--out", tmp_path / "s")
    assert code == 0, err
    dense = load_pruned(tmp_path / "s" / "model.safetensors")
    assert all(1 < k <= 8 for k in _distinct_nonzero(dense).values()), _distinct_nonzero(dense)
    assert sparsity_table(dense)["total"]["sparsity"] > 0.79
    reloaded = sparse.load_model(tmp_path / "s" / "model.dqsp")
    for k, v in dense.state_dict().items():
        assert torch.equal(reloaded.state_dict()[k], v), k
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert all(row["centroids"] <= 8 for row in summary["sharing"].values())
    code, _, err = run(capsys, *args, "--out", tmp_path / "p")  # the same pruning, int8 values
    assert code == 0, err
    assert (tmp_path / "s" / "model.dqsp").stat().st_size < (tmp_path / "p" / "model.dqsp").stat().st_size
