"""``evaluate.splits`` and ``evaluate.attribution`` in a real digits run: intervals and agreement in
run.json, each data ratio in its own reusable stage folder."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats as sstats

import distiq as dq
from distiq.errors import DistiqError


def splits_recipe(name: str = "splits") -> dict:
    """A tiny digits run (teacher, distill, int8) with every split estimate and attribution."""
    train = {"epochs": 2, "lr": 0.01, "batch_size": 64}
    return {
        "name": name,
        "seed": 0,
        "data": {"name": "digits", "val_fraction": 0.15},
        "teacher": {"model": "lenet5", "train": train},
        "distill": {"student": "mlp", "student_options": {"hidden": [32]}, "loss": "kd", "train": train},
        "quantize": {"method": "minmax", "calib_samples": 128, "sensitivity": False, "calib_repeats": 0},
        "evaluate": {
            "latency": False,
            "robustness": False,
            "bootstrap": 0,
            "splits": {"subsample": {"repeats": 5, "fraction": 0.5}, "kfold": {"k": 4}, "ratios": [0.5, 1.0]},
            "attribution": {"samples": 20, "steps": 8},
        },
    }


@pytest.fixture(scope="module")
def splits_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("splits-run")
    return dq.run(splits_recipe(), run_dir), json.loads((run_dir / "run.json").read_text())


def _interval(values: list[float]) -> tuple[float, float]:
    return sstats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=sstats.sem(values))


def test_intervals_per_stage_in_run_json(splits_run):
    result, info = splits_run
    splits = info["splits"]
    n_test = splits["test_samples"]
    assert [s["stage"] for s in splits["stages"]] == ["teacher", "distill", "quantize"]
    for row, record in zip(splits["stages"], result.stages, strict=True):
        assert row["accuracy"] == pytest.approx(record.metrics["accuracy"])  # the whole test split
        sub = row["subsample"]["summary"]["accuracy"]
        assert sub["n"] == 5 and [r["n_test"] for r in row["subsample"]["runs"]] == [n_test // 2] * 5
        assert (sub["ci_low"], sub["ci_high"]) == pytest.approx(_interval(sub["values"]))
        folds = row["kfold"]
        assert sum(r["n_test"] for r in folds["runs"]) == n_test
        # each fold's share of the test split, weighting its accuracy, gives back the whole-split accuracy
        weighted = sum(r["accuracy"] * r["n_test"] for r in folds["runs"]) / n_test
        assert weighted == pytest.approx(row["accuracy"])
        k = folds["summary"]["accuracy"]
        assert (k["ci_low"], k["ci_high"]) == pytest.approx(_interval(k["values"]))


def test_data_ratios_rerun_the_distill_stage(splits_run):
    result, info = splits_run
    half, full = info["splits"]["ratios"]
    distill_record = json.loads((result.run_dir / "stages/01-distill/stage.json").read_text())
    assert full["ratio"] == 1.0 and full["dir"] == "stages/01-distill"  # ratio 1 is the distill stage
    assert full["accuracy"] == pytest.approx(result.stage("distill").metrics["accuracy"])
    assert half["dir"] == "stages/ratios/0.5" and half["n_train"] == math.floor(full["n_train"] / 2 + 0.5)
    assert distill_record["kind"] == "distill"
    assert (result.run_dir / half["dir"] / "model.safetensors").is_file()
    assert half["subsample"]["summary"]["accuracy"]["ci_low"] is not None
    assert half["accuracy"] != full["accuracy"]  # a student trained on half the data is another model


def test_attribution_agreement_in_run_json(splits_run):
    _, info = splits_run
    att = info["attribution"]
    assert att["samples"] == 20 and att["method"] == "integrated-gradients" and att["reference"] == "teacher"
    distill, quantize = att["stages"]
    assert distill["explained"] == "itself" and "float model of distill" in quantize["explained"]
    assert quantize["mean"] == pytest.approx(distill["mean"])  # the same float model stands in
    assert -1 <= distill["mean"] < 1 and len(distill["per_image"]) == 20
    assert set(distill["per_class"]) <= {str(c) for c in range(10)}
    example = att["examples"][0]
    assert set(example["maps"]) == {"teacher", "distill", "quantize"}
    assert np.asarray(example["maps"]["teacher"]).shape == (8, 8)


def test_rerun_reuses_the_ratio_stage(splits_run, tmp_path):
    result, info = splits_run
    again = dq.run(splits_recipe(), result.run_dir)
    info2 = json.loads((again.run_dir / "run.json").read_text())
    assert [r["reused"] for r in info2["splits"]["ratios"]] == [True, True]
    assert info2["splits"]["ratios"][0]["accuracy"] == info["splits"]["ratios"][0]["accuracy"]


def test_ratios_without_distill_is_one_line_error(tmp_path):
    recipe = splits_recipe()
    del recipe["distill"]
    with pytest.raises(DistiqError, match=r"evaluate\.splits\.ratios: needs a distill: section"):
        dq.run(recipe, tmp_path)
    assert not (tmp_path / "stages").exists()  # checked before any stage trains
