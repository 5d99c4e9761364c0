"""Accuracy-budget search: threshold arithmetic, choice within budget, closest kept when none meets it."""

from __future__ import annotations

import json

import pytest

import distiq.pipeline as pipeline
from distiq.errors import DistiqError
from distiq.pipeline.recipe import BudgetSpec, SearchSpace, load_recipe
from distiq.pipeline.search import run_search, threshold


def test_threshold_points_and_relative():
    assert threshold(BudgetSpec(max_accuracy_drop=1.0), 0.92) == pytest.approx(0.91)
    assert threshold(BudgetSpec(max_accuracy_drop=1.0, relative=True), 0.92) == pytest.approx(0.92 * 0.99)


def recipe(drop: float) -> dict:
    return {
        "name": "search",
        "data": {"name": "digits", "subsample": 500},
        "teacher": {"model": "mlp", "model_options": {"hidden": [64]}, "train": {"epochs": 4, "lr": 0.01}},
        "distill": {
            "student": "mlp",
            "student_options": {"hidden": [32]},
            "train": {"epochs": 4, "lr": 0.01},
        },
        "evaluate": {"latency": False, "robustness": False, "bootstrap": 0},
        "budget": {
            "max_accuracy_drop": drop,
            "search": {"methods": ["minmax", "percentile"], "bits": [8, 4], "float_fallback": [0]},
        },
        "report": False,
    }


def test_generous_budget_picks_the_smallest_meeting_candidate(tmp_path):
    result = pipeline.run(recipe(drop=50.0), tmp_path)
    search = json.loads((tmp_path / "run.json").read_text())["search"]
    trials = search["trials"]
    assert len(trials) == 4 and search["missed_by"] is None
    meeting = [t for t in trials if t["val_accuracy"] >= search["threshold"]]
    assert [t["meets_budget"] for t in trials] == [t in meeting for t in trials]
    chosen = [t for t in trials if t["chosen"]]
    assert len(chosen) == 1 and chosen[0]["size_bytes"] == min(t["size_bytes"] for t in meeting)
    smallest = [t for t in meeting if t["size_bytes"] == chosen[0]["size_bytes"]]
    assert chosen[0]["val_accuracy"] == max(t["val_accuracy"] for t in smallest)  # ties: most accurate
    assert result.stages[-1].kind == "search"
    assert result.stages[-1].metrics["size_bytes"] == chosen[0]["size_bytes"]


def test_trials_in_worker_processes_match_one_process(tmp_path):
    """Two spawned workers judge the same candidates to the same accuracy and file size as the
    sequential search; the latency objective times every trial file afterwards and picks the fastest."""
    one = recipe(drop=50.0)
    pipeline.run(one, tmp_path / "one")
    two = one | {"budget": one["budget"] | {"workers": 2, "objective": "latency"}}
    pipeline.run(two, tmp_path / "two")
    seq, par = (json.loads((tmp_path / d / "run.json").read_text())["search"] for d in ("one", "two"))
    assert [(t["params"], t["val_accuracy"], t["size_bytes"]) for t in par["trials"]] == [
        (t["params"], t["val_accuracy"], t["size_bytes"]) for t in seq["trials"]
    ]
    meeting = [t for t in par["trials"] if t["meets_budget"]]
    assert all(t["latency_ms"] > 0 for t in par["trials"])
    (chosen,) = [t for t in par["trials"] if t["chosen"]]
    assert chosen["latency_ms"] == min(t["latency_ms"] for t in meeting)


def test_impossible_budget_keeps_the_closest_and_says_by_how_much(tmp_path):
    pipeline.run(
        recipe(drop=-0.0)
        | {
            "budget": {
                "max_accuracy_drop": 0.0,
                "relative": True,
                "search": {"methods": ["minmax"], "bits": [2], "float_fallback": [0]},
            }
        },
        tmp_path,
    )
    search = json.loads((tmp_path / "run.json").read_text())["search"]
    best = max(search["trials"], key=lambda t: t["val_accuracy"])
    assert best["chosen"] and not best["meets_budget"]
    assert search["missed_by"] == pytest.approx(search["threshold"] - best["val_accuracy"])
    assert (tmp_path / "stages" / "02-search" / "model.onnx").exists()


def test_search_after_a_quantize_stage_prunes_the_float_model(tmp_path):
    """After ``quantize`` the run's current model is an ONNX file; pruning candidates start from the
    last float module instead."""
    result = pipeline.run(
        {
            "name": "quantize-then-search",
            "data": {"name": "digits", "subsample": 300},
            "teacher": {"model": "mlp", "model_options": {"hidden": [32]}, "train": {"epochs": 1}},
            "quantize": {"method": "minmax", "calib_samples": 64, "sensitivity": False, "calib_repeats": 0},
            "evaluate": {"latency": False, "robustness": False, "bootstrap": 0},
            "budget": {
                "max_accuracy_drop": 100.0,
                "search": {"methods": ["minmax"], "prune_amounts": [0.3], "float_fallback": [0]},
            },
            "report": False,
        },
        tmp_path,
    )
    assert [s.kind for s in result.stages] == ["teacher", "quantize", "search"]
    trials = json.loads((tmp_path / "run.json").read_text())["search"]["trials"]
    assert [t["params"]["prune"] for t in trials] == [0.3]
    assert trials[0]["chosen"] and (tmp_path / trials[0]["file"]).is_file()
    assert result.stage("search").metrics["size_bytes"] == trials[0]["size_bytes"]


@pytest.mark.parametrize("key", ["methods", "bits", "per_channel", "float_fallback"])
def test_an_empty_search_list_is_a_validation_error(key):
    recipe = {"teacher": {"model": "mlp"}, "budget": {"search": {key: []}}}
    with pytest.raises(DistiqError, match=rf"budget\.search\.{key}: List should have at least 1 item"):
        load_recipe(recipe)


def test_empty_prune_amounts_means_no_pruning():
    space = load_recipe(
        {"teacher": {"model": "mlp"}, "budget": {"search": {"prune_amounts": []}}}
    ).budget.search
    assert space.prune_amounts == []


def test_a_hand_built_empty_search_fails_before_any_work(tmp_path):
    """The schema is bypassed (``model_construct``): the search must still refuse, not crash at max([])."""
    budget = BudgetSpec.model_construct(search=SearchSpace.model_construct(methods=[], bits=[8]))
    with pytest.raises(DistiqError, match="budget.search"):
        run_search(budget, None, tmp_path)  # type: ignore[arg-type]  # refused before the state is read
