"""Loading never runs code: a weights or sparse file names a registered model, or a user factory the
user allowed; a file with NaN/inf weights is refused. Files here are crafted the way an attacker would,
with the config written by hand, so that the test itself never imports the code the file names."""

from __future__ import annotations

import json
import sys

import pytest
import torch
import yaml
from safetensors.torch import save_file
from torch import nn

import distiq as dq
from distiq.cli.main import main
from distiq.engine.weights import save_weights, state_tensors
from distiq.errors import DataError, DistiqError
from distiq.prune import load_pruned, sparse

SIZES = {"num_classes": 10, "in_channels": 1, "image_size": 8}

PROBE = """
import pathlib
from torch import nn

pathlib.Path({marker!r}).write_text("imported")


def factory(num_classes, in_channels, image_size):
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size**2, num_classes))
"""


def plain_net() -> nn.Module:
    """The architecture the probe's factory builds, made here without importing the probe."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


def crafted(path, config: dict) -> str:
    """A safetensors file whose metadata config is ``config``, written with safetensors itself."""
    meta = {"format": "distiq-weights", "config": json.dumps(config)}
    save_file(state_tensors(plain_net()), str(path), metadata=meta)
    return str(path)


@pytest.fixture
def probe(tmp_path, monkeypatch):
    """A module of the user's own on sys.path that leaves a marker file when imported."""
    name = f"distiq_probe_{tmp_path.name.replace('-', '_')}"
    marker = tmp_path / "imported.txt"
    (tmp_path / f"{name}.py").write_text(PROBE.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    yield f"{name}:factory", marker
    sys.modules.pop(name, None)


def refused_line(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert "internal error" not in lines[0]
    return lines[0]


def commands(weights: str, dqsp: str, out) -> dict[str, list[str]]:
    """Every command that loads a weights (or sparse) file, stopped before any real work."""
    digits = ["--data", "digits"]
    return {
        "evaluate": ["evaluate", "--model", weights, *digits],
        "distill": ["distill", "--teacher", weights, *digits, "--epochs", "1", "--out", str(out)],
        "prune": ["prune", "--weights", weights, *digits, "--epochs", "0", "--out", str(out)],
        "export": ["export", "--model", weights, "--out", str(out / "m.onnx")],
        "quantize": ["quantize", "--model", weights, *digits, "--no-check", "--out", str(out)],
        "sparse": ["sparse", "--file", dqsp, "--out", str(out / "x.safetensors")],
    }


@pytest.mark.parametrize("command", ["evaluate", "distill", "prune", "export", "quantize", "sparse"])
def test_a_file_naming_user_code_is_refused_without_importing_it(capsys, tmp_path, probe, command):
    spec, marker = probe
    weights = crafted(tmp_path / "w.safetensors", {"name": spec, **SIZES})
    net = plain_net()
    net.config = {"name": spec, **SIZES}
    sparse.save(net, tmp_path / "w.dqsp")
    argv = commands(weights, str(tmp_path / "w.dqsp"), tmp_path / "out")[command]
    line = refused_line(capsys, argv)
    source = str(tmp_path / ("w.dqsp" if command == "sparse" else "w.safetensors"))
    assert source in line and repr(spec) in line and f"--model-code {spec}" in line
    assert not marker.exists() and spec.partition(":")[0] not in sys.modules


def test_torch_hub_load_is_refused_and_hubconf_never_runs(capsys, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    marker = tmp_path / "hubconf-ran.txt"
    (repo / "hubconf.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
        "def net(**kwargs):\n    raise SystemExit('hub entry called')\n"
    )
    config = {"name": "torch.hub:load", "repo_or_dir": str(repo), "model": "net", "source": "local", **SIZES}
    weights = crafted(tmp_path / "hub.safetensors", config)
    for argv in (
        ["evaluate", "--model", weights, "--data", "digits"],
        ["distill", "--teacher", weights, "--data", "digits", "--out", str(tmp_path / "d")],
    ):
        line = refused_line(capsys, argv)
        assert weights in line and "'torch.hub:load'" in line and "--model-code torch.hub:load" in line
    assert not marker.exists()


def test_logging_basic_config_never_empties_a_users_file(capsys, tmp_path):
    precious = tmp_path / "thesis.txt"
    precious.write_text("three years of work\n")
    config = {"name": "logging:basicConfig", "filename": str(precious), "filemode": "w", "force": True}
    weights = crafted(tmp_path / "log.safetensors", {**config, **SIZES})
    for argv in (
        ["evaluate", "--model", weights, "--data", "digits"],
        ["distill", "--teacher", weights, "--data", "digits", "--out", str(tmp_path / "d")],
    ):
        line = refused_line(capsys, argv)
        assert weights in line and "'logging:basicConfig'" in line
    assert precious.read_text() == "three years of work\n"


def test_the_user_allows_their_own_factory_on_the_command_line(capsys, tmp_path, probe):
    spec, marker = probe
    weights = crafted(tmp_path / "w.safetensors", {"name": spec, **SIZES})
    assert main(["evaluate", "--model", weights, "--data", "digits", "--model-code", spec]) == 0
    expected = dq.evaluate(plain_net().eval(), dq.data.load("digits", "test"))["accuracy"]
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["accuracy"] == expected
    assert marker.exists()  # imported because the user named it


def test_a_student_the_user_names_may_also_be_the_teachers_model(capsys, tmp_path, probe):
    spec, marker = probe
    weights = crafted(tmp_path / "w.safetensors", {"name": spec, **SIZES})
    out = tmp_path / "d"
    argv = ["distill", "--teacher", weights, "--student", spec, "--data", "digits", "--subsample", "200"]
    assert main([*argv, "--epochs", "1", "--out", str(out)]) == 0, capsys.readouterr().err
    assert (out / "model.safetensors").is_file() and marker.exists()


def test_python_api_refuses_then_allows_the_exact_reference(tmp_path, probe):
    spec, marker = probe
    weights = crafted(tmp_path / "w.safetensors", {"name": spec, **SIZES})
    with pytest.raises(DistiqError, match="names model code"):
        dq.load_model(weights)
    with pytest.raises(DistiqError, match="names model code"):
        dq.load_model(weights, allow_code=[spec + "x", "other.mod:factory"])
    assert not marker.exists()
    model = dq.load_model(weights, allow_code=spec)
    assert torch.equal(model[1].weight, plain_net()[1].weight) and marker.exists()
    assert load_pruned(weights, allow_code=[spec])[1].out_features == 10


def test_direct_create_by_import_path_still_works(probe):
    spec, marker = probe
    model = dq.models.create(spec, image_size=8)  # the user's own code asked for it
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10) and marker.exists()


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"name": "no-such-net", **SIZES}, "unknown model 'no-such-net'"),
        (["name", "mlp"], "must be an object with a short string 'name'"),
        ({"name": 5, **SIZES}, "must be an object with a short string 'name'"),
        ({"name": "evil.mod:f\nsecond line", **SIZES}, "must be an object with a short string 'name'"),
        ({"name": "mlp", **SIZES, "hiden": [16]}, "'hiden'"),
    ],
)
def test_malformed_configs_are_one_line_naming_the_file(capsys, tmp_path, config, fragment):
    weights = crafted(tmp_path / "c.safetensors", config)
    line = refused_line(capsys, ["evaluate", "--model", weights, "--data", "digits"])
    assert weights in line and fragment in line


def test_config_that_is_not_json_is_a_data_error(capsys, tmp_path):
    path = tmp_path / "j.safetensors"
    save_file(state_tensors(plain_net()), str(path), metadata={"config": "{not json"})
    line = refused_line(capsys, ["evaluate", "--model", str(path), "--data", "digits"])
    assert str(path) in line and "not JSON" in line


def test_non_plain_option_values_are_refused():
    config = {"name": "mlp", **SIZES, "hidden": [16], "dropout": object()}
    with pytest.raises(DistiqError, match="'dropout' is not plain JSON"):
        dq.models.create_from_config(config, source="probe.safetensors")
    ok = dq.models.create_from_config({"name": "mlp", **SIZES, "hidden": (16,)})  # in-memory tuples
    assert ok.config["hidden"] in ([16], (16,))


def nan_weights(path, bad: int = 3) -> str:
    torch.manual_seed(0)
    model = dq.models.create("mlp", image_size=8, hidden=[16])
    with torch.no_grad():
        first = next(name for name, p in model.named_parameters() if p.ndim == 2)
        weight = dict(model.named_parameters())[first]
        weight.view(-1)[:bad] = torch.tensor([float("nan"), float("inf"), -float("inf")][:bad])
    save_weights(model, path)
    return first


def test_nan_weights_are_refused_naming_file_tensor_and_count(capsys, tmp_path):
    path = tmp_path / "nan.safetensors"
    tensor = nan_weights(path)
    line = refused_line(capsys, ["evaluate", "--model", str(path), "--data", "digits"])
    assert str(path) in line and repr(tensor) in line and "3 non-finite" in line
    with pytest.raises(DataError, match=f"{tensor!r} has 3 non-finite"):
        dq.load_weights(dq.models.create("mlp", image_size=8, hidden=[16]), path)
    nan_weights(tmp_path / "one.safetensors", bad=1)
    with pytest.raises(DataError, match="1 non-finite"):
        dq.load_model(tmp_path / "one.safetensors")


def test_nan_weights_in_a_sparse_file_are_refused_at_load(tmp_path):
    torch.manual_seed(0)
    model = dq.models.create("mlp", image_size=8, hidden=[16])
    state = model.state_dict()
    first = next(k for k, v in state.items() if v.ndim == 2)
    state[first].view(-1)[0] = float("nan")
    sparse.save(model, tmp_path / "n.dqsp")
    assert torch.isnan(sparse.read(tmp_path / "n.dqsp")[0][first]).sum() == 1  # read stays bit-exact
    with pytest.raises(DataError, match=f"{first!r} has 1 non-finite"):
        sparse.load_model(tmp_path / "n.dqsp")


def test_recipe_names_the_factory_so_its_run_may_load_and_reuse_it(capsys, tmp_path, probe):
    spec, marker = probe
    weights = crafted(tmp_path / "w.safetensors", {"name": spec, **SIZES})
    quiet = {"latency": False, "robustness": False, "bootstrap": 0}
    recipe = {
        "name": "trusted",
        "data": {"name": "digits", "subsample": 200},
        "teacher": {"weights": weights},
        "evaluate": quiet,
        "report": False,
    }
    path = tmp_path / "refused.yaml"
    path.write_text(yaml.safe_dump(recipe))
    line = refused_line(capsys, ["run", str(path), "--out", str(tmp_path / "r0")])
    assert weights in line and repr(spec) in line and not marker.exists()

    recipe["teacher"]["model"] = spec  # the recipe is the user's code: naming it allows it
    first = dq.run(recipe, tmp_path / "r1")
    again = dq.run(recipe, tmp_path / "r1")  # reuses the teacher stage: reloads its weights file
    assert again.stages[0].skipped and marker.exists()
    assert again.stages[0].metrics["accuracy"] == first.stages[0].metrics["accuracy"]
