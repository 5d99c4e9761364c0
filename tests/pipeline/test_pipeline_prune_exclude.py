"""A recipe's ``prune.exclude``: the named layers keep every weight, the others lose the amount."""

from __future__ import annotations

import distiq.pipeline as pipeline
from distiq.prune import load_pruned


def test_excluded_layer_keeps_its_weights_in_the_prune_stage(tmp_path):
    pipeline.run(
        {
            "name": "exclude",
            "data": {"name": "digits", "subsample": 400},
            "teacher": {
                "model": "mlp",
                "model_options": {"hidden": [64]},
                "train": {"epochs": 2, "lr": 0.01},
            },
            "prune": {
                "amount": 0.6,
                "scope": "layer",
                "exclude": ["classifier.fc2"],
                "distill_from_teacher": False,
                "fine_tune": {"epochs": 1, "lr": 0.001, "batch_size": 64},
            },
            "evaluate": {"latency": False, "robustness": False, "bootstrap": 0},
            "report": False,
        },
        tmp_path,
    )
    pruned = load_pruned(tmp_path / "stages" / "01-prune" / "model.safetensors")
    zeros = {
        n: float((m.weight == 0).double().mean()) for n, m in pruned.named_modules() if hasattr(m, "weight")
    }
    assert zeros["classifier.fc2"] == 0.0  # trained weights are never exactly zero unless pruned
    assert zeros["classifier.fc1"] >= 0.6 - 1e-3
