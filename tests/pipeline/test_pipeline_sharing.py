"""A recipe's ``prune:`` section with ``share_bits``: pruned, shared, centroids fine-tuned, stored."""

from __future__ import annotations

import json

import torch

import distiq.pipeline as pipeline
from distiq.prune import load_pruned, sparse


def test_prune_stage_shares_weights_and_stores_the_shared_file(tmp_path):
    result = pipeline.run(
        {
            "name": "share",
            "data": {"name": "digits", "subsample": 400},
            "teacher": {
                "model": "mlp",
                "model_options": {"hidden": [64]},
                "train": {"epochs": 3, "lr": 0.01},
            },
            "prune": {
                "amount": 0.6,
                "scope": "layer",
                "share_bits": 2,
                "distill_from_teacher": False,
                "fine_tune": {"epochs": 1, "lr": 0.001, "batch_size": 64},
            },
            "evaluate": {"latency": False, "robustness": False, "bootstrap": 0},
            "report": False,
        },
        tmp_path,
    )
    stage = tmp_path / "stages" / "01-prune"
    dense = load_pruned(stage / "model.safetensors")
    for name, m in dense.named_modules():
        if isinstance(m, torch.nn.Linear):
            nonzero = m.weight[m.weight != 0]
            assert 1 < len(torch.unique(nonzero)) <= 4, name  # 2 bits: at most 4 centroids
            assert float((m.weight == 0).double().mean()) >= 0.6 - 1e-3, name
    reloaded = sparse.load_model(stage / "model.dqsp")
    for k, v in dense.state_dict().items():
        assert torch.equal(reloaded.state_dict()[k], v), k
    record = json.loads((stage / "stage.json").read_text())
    assert record["extra"]["compressed_bytes"] == (stage / "model.dqsp").stat().st_size
    assert {row["centroids"] for row in record["extra"]["sharing"].values()} <= {1, 2, 3, 4}
    phases = [h.get("phase") for h in result.stage("prune").history]
    assert phases.count("share") == 1 and phases[0] is None  # pruning's epoch, then the centroids'
