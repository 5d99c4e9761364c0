"""A recipe's data: a dataset name, an ``.npz`` file or an image folder, resolved as the CLI does."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import distiq as dq
from distiq.errors import DataError, DistiqError
from distiq.pipeline.recipe import load_recipe
from distiq.pipeline.runner import load_data

TINY = {
    "teacher": {
        "model": "mlp",
        "model_options": {"hidden": [32]},
        "train": {"epochs": 4, "lr": 0.01, "batch_size": 32},
    },
    "evaluate": {"latency": False, "robustness": False, "bootstrap": 0},
    "report": False,
}


@pytest.fixture
def npz(tmp_path):
    """300 digits written as a user's own file (float32 [N, 1, 8, 8] and int64 labels)."""
    digits = dq.data.subsample(dq.data.load("digits"), 300, seed=0)
    path = tmp_path / "mine.npz"
    np.savez(path, x=digits.x.numpy(), y=digits.y.numpy())
    return path


def test_run_on_an_npz_file_holds_out_the_test_fraction(tmp_path, npz):
    path = npz
    recipe = TINY | {"name": "npz", "data": {"name": str(path), "test_fraction": 0.25}}
    result = dq.run(recipe, tmp_path / "run")
    assert result.dataset == str(path)
    assert result.stage("teacher").metrics["accuracy"] > 0.5  # learnt (chance: 0.1), measured on held-out
    test = load_data(load_recipe(recipe), [])[3]
    assert 70 <= len(test) <= 80  # a quarter of 300, rounded per class
    notes = json.loads((tmp_path / "run" / "run.json").read_text())["notes"]
    assert f"{path} has no test split: held out {len(test)} samples (data.test_fraction)" in notes


def test_file_test_split_is_stratified_disjoint_and_seeded(npz):
    path = npz
    recipe = load_recipe(TINY | {"data": {"name": str(path), "val_fraction": 0.1}})
    assert recipe.data.test_fraction == 0.2  # the default
    name, train, val, test = load_data(recipe, [])
    assert name == str(path)
    assert len(test) == 60 and len(train) + len(val) + len(test) == 300
    assert np.bincount(test.y.numpy(), minlength=10).min() >= 1  # every class is measured
    rows = {tuple(r) for r in test.x.flatten(1).tolist()}
    assert not rows & {tuple(r) for r in train.x.flatten(1).tolist()}
    again = load_data(recipe, [])[3]
    assert (again.x == test.x).all()


def test_named_dataset_keeps_its_own_test_split():
    recipe = load_recipe(TINY | {"data": {"name": "digits", "test_fraction": 0.5}})
    test = load_data(recipe, [])[3]
    assert len(test) == len(dq.data.load("digits", "test"))  # test_fraction unused


def test_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (tmp_path / "imgs" / label).mkdir(parents=True)
        for i in range(10):
            pixels = rng.integers(0, 255, (8, 8), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "imgs" / label / f"{i}.png")
    recipe = load_recipe(TINY | {"data": {"name": str(tmp_path / "imgs"), "test_fraction": 0.2}})
    _, train, val, test = load_data(recipe, [])
    assert len(test) == 4 and test.classes == ["cat", "dog"] and test.input_shape == (1, 8, 8)
    assert len(train) + len(val) == 16


def test_missing_file_is_an_error_naming_it_not_a_silent_fallback(tmp_path):
    missing = tmp_path / "nope.npz"
    with pytest.raises(DistiqError, match=str(missing)):
        dq.run(TINY | {"data": {"name": str(missing)}}, tmp_path / "run")  # fallback "digits" is the default
    assert not (tmp_path / "run" / "stages").exists()


def test_corrupt_file_is_an_error_naming_it(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DataError, match=str(bad)):
        load_data(load_recipe(TINY | {"data": {"name": str(bad)}}), [])


def test_missing_named_dataset_still_falls_back(tmp_path):
    notes: list[str] = []
    recipe = load_recipe(TINY | {"data": {"name": "fashion-mnist", "root": str(tmp_path)}})
    name, *_ = load_data(recipe, notes)
    assert name == "digits" and "fashion-mnist is not available" in notes[0]


def test_misspelt_dataset_name_names_the_closest():
    with pytest.raises(DistiqError, match="did you mean 'digits'"):
        load_data(load_recipe(TINY | {"data": {"name": "digitz"}}), [])
