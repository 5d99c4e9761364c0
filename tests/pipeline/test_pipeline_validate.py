"""Every name in a recipe is checked before any stage runs: a bad one exits 2 in a moment, naming the
recipe field, and leaves no stage folder (so no teacher was trained, no checkpoint written)."""

from __future__ import annotations

import copy
import re
import time
from pathlib import Path

import pytest
import torch
import yaml

import distiq as dq
import distiq.pipeline as pipeline
from distiq.cli.main import main
from distiq.data.arrays import ArrayDataset, as_arrays
from distiq.errors import DistiqError
from distiq.pipeline.recipe import BudgetSpec, Recipe, SearchSpace
from distiq.pipeline.search import run_search
from distiq.pipeline.validate import check_recipe

ROOT = Path(__file__).resolve().parents[2]
HINT = {"kind": "hint", "student": "classifier.fc1", "teacher": "classifier.fc1"}


def base_recipe() -> dict:
    """Valid, and slow enough to notice if it ever trained (many epochs): a refusal must come first."""
    slow = {"epochs": 50, "lr": 0.01}
    return {
        "name": "bad",
        "data": {"name": "digits"},
        "teacher": {"model": "lenet5", "train": slow},
        "distill": {
            "student": "mlp",
            "student_options": {"hidden": [16]},
            "offline": False,
            "features": [dict(HINT)],
            "freeze": ["classifier.fc1"],
            "train": slow,
        },
        "quantize": {"skip": ["classifier.fc1"], "sensitivity": False, "calib_repeats": 0},
        "evaluate": {"latency": False, "robustness": False, "bootstrap": 0},
        "report": False,
    }


def patched(path: tuple, value: object) -> dict:
    recipe = copy.deepcopy(base_recipe())
    node = recipe
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return recipe


# (where to change the valid recipe, the bad value, what the one-line error must name)
BAD = {
    "teacher-model": (("teacher", "model"), "lenet55", "teacher.model: unknown model 'lenet55'"),
    "teacher-option": (("teacher", "model_options"), {"widht": 2}, "teacher.model: model 'lenet5'"),
    "student": (("distill", "student"), "mlpp", "distill.student: unknown model 'mlpp'"),
    "loss": (("distill", "loss"), "kdd", "unknown distillation loss 'kdd' (did you mean 'kd'?)"),
    "loss-option": (("distill", "loss_options"), {"beta": 8.0}, "distill.loss: distillation loss 'kd'"),
    "feature-student": (
        ("distill", "features", 0, "student"),
        "features.relu9",
        "distill.features[0].student: no layer 'features.relu9' in mlp",
    ),
    "feature-teacher": (
        ("distill", "features", 0, "teacher"),
        "features.conv9",
        "distill.features[0].teacher: no layer 'features.conv9' in lenet5",
    ),
    "feature-merge-teacher": (
        ("distill", "features", 0),
        {"kind": "merge", "student": "classifier.fc1", "teacher": ["features.conv1", "features.nope"]},
        "distill.features[0].teacher[1]: no layer 'features.nope' in lenet5",
    ),
    "feature-key": (
        ("distill", "features", 0),
        {"kind": "hint", "studnet": "classifier.fc1", "teacher": "classifier.fc1"},
        "distill.features[0]: unknown key(s) studnet and missing key(s) student",
    ),
    "feature-kind": (("distill", "features", 0, "kind"), "fitnet", "distill.features[0]: features.kind"),
    "feature-shapes": (
        ("distill", "features", 0, "teacher"),
        "features.conv1",  # a vector student feature cannot regress a spatial map
        "distill.features: features hint classifier.fc1 <- features.conv1",
    ),
    "feature-offline": (("distill", "offline"), True, "distill.offline: feature terms need the teacher"),
    "freeze": (("distill", "freeze"), ["conv"], "distill.freeze: no layer of MLP matches conv"),
    "skip": (("quantize", "skip"), ["classifier.fc9"], "quantize.skip[0]: no layer 'classifier.fc9' in mlp"),
    "search-method": (("budget",), {"search": {"methods": ["kll"]}}, "budget.search.methods.0"),
    "search-fallback": (("budget",), {"search": {"float_fallback": [-1]}}, "budget.search.float_fallback.0"),
}


def assert_refused_before_any_work(run_dir: Path, seconds: float) -> None:
    assert seconds < 5, f"refused only after {seconds:.1f} s"
    assert not (run_dir / "stages").exists(), "a stage started before the recipe was refused"
    assert not list(run_dir.rglob("*.safetensors")) and not list(run_dir.rglob("checkpoint"))


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_cli_run_refuses_a_bad_name_before_the_teacher_trains(tmp_path, capsys, case):
    path, value, needle = BAD[case]
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(patched(path, value)))
    out = tmp_path / "run"
    t0 = time.perf_counter()
    code = main(["run", str(recipe), "--out", str(out)])
    seconds = time.perf_counter() - t0
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert needle in err and str(recipe) in err
    assert len(err.splitlines()) == 1
    assert_refused_before_any_work(out, seconds)


def test_skip_layers_are_checked_against_the_teacher_without_a_student(tmp_path):
    recipe = base_recipe()
    del recipe["distill"]
    recipe["quantize"]["skip"] = ["features.conv1", "classifier.fc1", "features.conv7"]
    t0 = time.perf_counter()
    with pytest.raises(DistiqError) as err:
        dq.run(recipe, tmp_path)
    assert str(err.value) == (
        "recipe: quantize.skip[2]: no layer 'features.conv7' in lenet5; close: features.conv2, "
        "features.conv1, features, features.pool2 ..."
    )
    assert_refused_before_any_work(tmp_path, time.perf_counter() - t0)


def test_every_problem_is_named_in_the_one_line(tmp_path):
    recipe = base_recipe()
    recipe["distill"]["features"][0]["student"] = "nope"
    recipe["distill"]["freeze"] = ["pool"]
    recipe["quantize"]["skip"] = ["nope2"]
    with pytest.raises(DistiqError) as err:
        dq.run(recipe, tmp_path)
    message = str(err.value)
    assert "\n" not in message
    for field in ("distill.features[0].student", "distill.freeze", "quantize.skip[0]"):
        assert field in message


def test_teacher_weights_must_take_the_data_and_its_classes(tmp_path):
    wrong_size = dq.save_weights(dq.models.create("lenet5", image_size=28), tmp_path / "t28.safetensors")
    three = dq.models.create("lenet5", image_size=8, num_classes=3)
    wrong_classes = dq.save_weights(three, tmp_path / "t3.safetensors")
    for weights, needle in (
        (wrong_size, "(made for images [1, 28, 28]) cannot run on the data's images [1, 8, 8]"),
        (wrong_classes, "predicts 3 classes but the data"),
    ):
        recipe = base_recipe() | {"teacher": {"weights": str(weights)}}
        run_dir = tmp_path / weights.stem
        t0 = time.perf_counter()
        named = f"teacher.weights: {re.escape(str(weights))}: the model"
        with pytest.raises(DistiqError, match=named) as err:
            dq.run(recipe, run_dir)
        assert needle in str(err.value)
        assert_refused_before_any_work(run_dir, time.perf_counter() - t0)


def test_names_are_checked_when_the_recipe_loads_without_any_data(tmp_path):
    recipe = patched(("distill", "student"), "mlpp")
    recipe["data"] = {"name": str(tmp_path / "no-such-data.npz")}  # never opened: the name fails first
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(DistiqError, match=r"recipe.yaml: distill.student: unknown model 'mlpp' \(did you"):
        pipeline.load_recipe(path)


def test_a_valid_recipe_passes_and_leaves_the_random_stream_alone():
    train = as_arrays(dq.data.load("digits"))
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    check_recipe(pipeline.load_recipe(base_recipe()), train)  # builds both models
    assert torch.equal(torch.rand(3), expected)


def hand_built(**search) -> Recipe:
    """A recipe built without the schema's checks (``model_construct``), as Python callers can."""
    recipe = pipeline.load_recipe({"teacher": {"model": "mlp"}, "data": {"name": "digits"}})
    space = SearchSpace().model_copy(update=search)
    recipe.budget = BudgetSpec.model_construct(**(BudgetSpec().model_dump() | {"search": space}))
    return recipe


@pytest.mark.parametrize(
    ("search", "needle"),
    [
        ({"float_fallback": [0, -1]}, "budget.search.float_fallback[1]: expected a layer count >= 0, got -1"),
        ({"methods": []}, "budget.search.methods: needs at least one value"),
        ({"methods": ["kl", "kll"]}, "budget.search.methods[1]: unknown calibrator 'kll'"),
    ],
)
def test_hand_built_search_lists_are_refused_before_any_stage(tmp_path, search, needle):
    with pytest.raises(DistiqError) as err:
        pipeline.run(hand_built(**search), tmp_path)
    assert needle in str(err.value)
    assert not (tmp_path / "stages").exists()


def test_search_refuses_a_negative_float_fallback_itself(tmp_path):
    """``ranking[:-1]`` would keep every layer but one in float; the stage refuses before any work."""
    budget = hand_built(float_fallback=[2, -1]).budget
    with pytest.raises(DistiqError, match=r"budget.search.float_fallback: expected layer counts >= 0"):
        run_search(budget, None, tmp_path)


SHIPPED = sorted({p.resolve() for d in ("recipes", "src/distiq/recipes") for p in (ROOT / d).glob("*.yaml")})


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_recipes_pass_the_layer_checks(path):
    """Against stand-in data of the shape the recipe's dataset has (no download needed)."""
    recipe = pipeline.load_recipe(path)
    size = 8 if recipe.data.name == "digits" else 28
    classes = [str(i) for i in range(10)]
    stand_in = ArrayDataset(torch.zeros(4, 1, size, size), torch.arange(4), classes=classes)
    check_recipe(recipe, stand_in)
