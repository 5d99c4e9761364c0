"""Recipes: shipped ones validate; broken ones name the key path; runs resume stage by stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import distiq.pipeline as pipeline
from distiq.errors import DistiqError

ROOT = Path(__file__).resolve().parents[2]
RECIPE_DIRS = [ROOT / "recipes", ROOT / "src" / "distiq" / "recipes"]  # the repo's, and the package's


def shipped_recipes(folders: list[Path]) -> list[Path]:
    """Every YAML recipe in ``folders``, each file once and by its real path (``recipes/`` holds links
    to packaged ones; a dangling link stays as it is, so its validation fails)."""
    found = set()
    for folder in folders:
        for path in [*folder.glob("*.yaml"), *folder.glob("*.yml")]:
            found.add(path.resolve() if path.exists() else path)
    return sorted(found)


RECIPES = shipped_recipes(RECIPE_DIRS)


@pytest.mark.parametrize("path", RECIPES, ids=[p.relative_to(ROOT).as_posix() for p in RECIPES])
def test_shipped_recipe_validates(path):
    recipe = pipeline.load_recipe(path)
    assert recipe.teacher is not None


def test_recipes_are_shipped():
    assert RECIPES, f"no YAML recipe in {', '.join(str(d) for d in RECIPE_DIRS)}"
    demo = ROOT / "src" / "distiq" / "recipes" / "fashion_mnist_demo.yaml"  # what `distiq demo` runs
    assert demo in RECIPES


def test_recipe_glob_finds_packaged_only_recipes_and_counts_links_once(tmp_path):
    repo, package = tmp_path / "recipes", tmp_path / "src" / "distiq" / "recipes"
    repo.mkdir()
    package.mkdir(parents=True)
    for name in ("demo.yaml", "new.yml"):
        (package / name).write_text("name: x\n")
    (repo / "demo.yaml").symlink_to(package / "demo.yaml")
    (repo / "quick.yaml").write_text("name: y\n")
    found = shipped_recipes([repo, package])
    assert found == sorted([package / "demo.yaml", package / "new.yml", repo / "quick.yaml"])


@pytest.mark.parametrize(
    ("patch", "needle"),
    [
        ({"distill": {"train": {"epochs": 0}}}, "distill.train.epochs"),
        ({"distill": {"tempreature": 3}}, "distill.tempreature"),
        ({"quantize": {"method": "entropy"}}, "quantize.method"),
        ({"teacher": {"weights": "/no/such/teacher.safetensors"}}, "/no/such/teacher.safetensors"),
        ({"data": {"val_fraction": "half"}}, "data.val_fraction"),
    ],
)
def test_broken_recipe_names_the_key_path(tmp_path, patch, needle):
    base = {"name": "x", "teacher": {"model": "mlp"}, "distill": {"student": "mlp"}}
    for key, value in patch.items():
        base[key] = {**base.get(key, {}), **value}
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(base))
    with pytest.raises(DistiqError) as err:
        pipeline.load_recipe(path)
    message = str(err.value)
    assert needle in message and str(path) in message and "\n" not in message


def quick_recipe(**distill) -> dict:
    return {
        "name": "quick",
        "data": {"name": "digits", "subsample": 600},
        "teacher": {"model": "mlp", "model_options": {"hidden": [64]}, "train": {"epochs": 3, "lr": 0.01}},
        "distill": {
            "student": "mlp",
            "student_options": {"hidden": [16]},
            "train": {"epochs": 3, "lr": 0.01},
            **distill,
        },
        "evaluate": {"latency": False, "robustness": False, "bootstrap": 0},
        "report": False,
    }


def test_second_run_reuses_unchanged_stages_and_reruns_changed_ones(tmp_path):
    first = pipeline.run(quick_recipe(), tmp_path)
    assert [s.skipped for s in first.stages] == [False, False]
    again = pipeline.run(quick_recipe(), tmp_path)
    assert [s.skipped for s in again.stages] == [True, True]
    assert again.stage("distill").metrics["accuracy"] == first.stage("distill").metrics["accuracy"]
    changed = pipeline.run(quick_recipe(temperature=2.0), tmp_path)
    assert [s.skipped for s in changed.stages] == [True, False]
    flips = changed.stage("distill").metrics["vs_teacher"]["flips"]
    assert flips["flipped"] == flips["correct_to_wrong"] + flips["wrong_to_correct"] + flips["wrong_to_wrong"]
    assert flips["agreement"] == pytest.approx(changed.stage("distill").metrics["agreement_with_teacher"])
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["finished"] and [s["kind"] for s in info["stages"]] == ["teacher", "distill"]
    assert (tmp_path / "recipe.yaml").exists()


def test_missing_dataset_falls_back_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTIQ_FASHION_MNIST", str(tmp_path / "nowhere"))
    recipe = quick_recipe() | {"data": {"name": "fashion-mnist", "fallback": "digits", "subsample": 300}}
    result = pipeline.run(recipe, tmp_path / "run")
    assert result.dataset == "digits"
    assert any("fashion-mnist" in n for n in json.loads((tmp_path / "run" / "run.json").read_text())["notes"])


def test_stage_folder_is_kept_for_the_same_inputs_and_emptied_for_others(tmp_path):
    from distiq.pipeline.rundir import claim_stage_dir

    stage = tmp_path / "stages" / "02-prune"
    claim_stage_dir(stage, "aaa")
    (stage / "checkpoint").mkdir()
    (stage / "checkpoint" / "state.json").write_text("{}")
    claim_stage_dir(stage, "aaa")  # the same run, interrupted: its checkpoint resumes
    assert (stage / "checkpoint" / "state.json").exists()
    claim_stage_dir(stage, "bbb")  # other inputs: a stale checkpoint must not be resumed
    assert not (stage / "checkpoint").exists()
    assert (stage / "key.txt").read_text() == "bbb"


def test_stages_are_timed_together_at_the_end_of_every_run(tmp_path):
    recipe = quick_recipe() | {"evaluate": {"latency": True, "robustness": False, "bootstrap": 0}}
    first = pipeline.run(recipe, tmp_path)
    again = pipeline.run(recipe, tmp_path)
    assert [s.skipped for s in again.stages] == [True, True]
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["latency"]["rounds"] == 20 and info["latency"]["batch_sizes"] == [1, 256]
    for old, new in zip(first.stages, again.stages, strict=True):
        # reused stages are timed afresh, beside the others, not carried over from the first run
        assert new.metrics["latency_ms_p50"] != old.metrics["latency_ms_p50"]
        assert 0 < new.metrics["latency_ms_p50"] <= new.metrics["latency_ms_p95"]
        assert new.metrics["throughput"] == pytest.approx(256 / (new.metrics["latency_ms_batch256"] / 1e3))
    on_disk = json.loads((tmp_path / again.stages[1].dir / "stage.json").read_text())
    assert on_disk["metrics"]["latency_ms_p50"] == again.stages[1].metrics["latency_ms_p50"]
