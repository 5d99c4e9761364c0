"""Check every name a recipe uses before any stage runs.

Why a pass of its own: the schema (:mod:`.recipe`) checks types and ranges, but a layer name can only
be checked against a built model, and a model can only be built once the data's shape and class count
are known. Without this pass a misspelt freeze layer, skip layer or feature layer surfaced only when
its stage started, after the teacher (and sometimes the student) had trained for minutes. Building the
models is cheap next to training them; one forward pass of two samples checks that they take the data.

Two entry points: :func:`check_names` needs no data (registry lookups, the feature specs' keys) and
runs when a recipe loads; :func:`check_recipe` adds the checks against the built teacher and student
and runs right after the run's data is loaded. Every problem found is reported, each as
``field: what is wrong``, joined into the one line a :class:`~distiq.errors.DistiqError` carries.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from distiq.distill.logits import make_logit_loss
from distiq.distill.objective import DistillObjective, FeatureSpec
from distiq.distill.schemes import freeze_
from distiq.engine.weights import load_model
from distiq.errors import DistiqError
from distiq.evaluate.fit import check_fits
from distiq.models import MODELS, create
from distiq.models.zoo import is_keras_file
from distiq.onnx.api import MODES as ONNX_MODES
from distiq.onnx.module import OnnxModel, is_onnx_file
from distiq.prune.structured import IMPORTANCES
from distiq.quant.observers import OBSERVERS

from .keras_stages import is_keras_model
from .stages import recipe_code

if TYPE_CHECKING:
    from distiq.data.arrays import ArrayDataset

    from .recipe import DistillSpec, Recipe

FEATURE_KEYS = tuple(f.name for f in dataclasses.fields(FeatureSpec))


def check_names(recipe: Recipe, source: str | None = None) -> None:
    """Check the names a recipe uses that need no data: models, losses, calibrators, importances,
    feature specs and search lists.

    Raises:
        DistiqError: One line, ``source: field: problem; field: problem``.
    """
    _raise(recipe, source, name_problems(recipe))


def check_recipe(recipe: Recipe, train: ArrayDataset, source: str | None = None) -> None:
    """:func:`check_names`, then every layer name against the models built for ``train``'s shape.

    The global torch RNG is restored afterwards, so building models here changes no run's weights.

    Raises:
        DistiqError: One line naming each bad field and what was expected.
    """
    problems = name_problems(recipe)
    if not problems:
        with torch.random.fork_rng(devices=[]):
            problems = model_problems(recipe, train)
    _raise(recipe, source, problems)


def _raise(recipe: Recipe, source: str | None, problems: list[str]) -> None:
    """One error for every problem, prefixed by ``source`` (default: the file the recipe came from)."""
    if problems:
        source = source or getattr(recipe, "_source", None) or "recipe"
        raise DistiqError(f"{source}: " + "; ".join(problems))


def _attempt(problems: list[str], field: str, check: Callable[[], Any]) -> Any:
    """``check()``, or ``None`` with ``field: message`` added to ``problems`` when it refuses.

    ``TypeError`` counts as a refusal: it is what a factory raises for an option of the wrong type.
    """
    try:
        return check()
    except (ValueError, TypeError) as e:  # DistiqError is a ValueError
        message = _first_line(e)
        key = field.rsplit(".", 1)[-1].split("[")[0]
        message = message.removeprefix(f"{key}: ")  # "distill.freeze: freeze: ..." reads as a stutter
        problems.append(f"{field}: {message}")
        return None


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines() or [type(error).__name__]
    return lines[0]


def name_problems(recipe: Recipe) -> list[str]:
    """Problems with the recipe's names, found without data (see :func:`check_names`)."""
    problems: list[str] = []
    if recipe.teacher.weights is None:
        _registered_model(problems, "teacher.model", recipe.teacher.model)
    if recipe.distill is not None:
        _distill_names(problems, recipe.distill)
    if recipe.prune is not None and recipe.prune.structured:
        _attempt(problems, "prune.importance", lambda: IMPORTANCES.get(recipe.prune.importance))
    if recipe.quantize is not None:
        _attempt(problems, "quantize.method", lambda: OBSERVERS.get(recipe.quantize.method))
    if recipe.budget is not None:
        _search_names(problems, recipe.budget.search)
    if is_onnx_file(recipe.teacher.weights):
        problems += onnx_teacher_problems(recipe)
    problems += keras_problems(recipe)
    return problems


def keras_problems(recipe: Recipe) -> list[str]:
    """What a recipe cannot do with a Keras model as the model the compression stages receive.

    Magnitude pruning and int8 work (:mod:`.keras_stages`: masks on the Keras kernels, int8 through the
    model's ONNX export); what rewrites torch.nn layers does not: channel pruning, weight sharing, and
    everything the ONNX path of an ONNX teacher cannot do either (:func:`onnx_path_problems`).
    """
    spec = recipe.distill
    compressed = spec.student if spec is not None else recipe.teacher.weights or recipe.teacher.model
    if not is_keras_file(compressed):
        return []
    why = f"the model it receives is a Keras model ({compressed})"
    problems = []
    prune = recipe.prune
    if prune is not None and prune.structured:
        problems.append(
            f"prune.structured: channel pruning rebuilds torch.nn layers and {why}; "
            "use magnitude pruning (structured: false)"
        )
    if prune is not None and prune.share_bits is not None:
        problems.append(
            f"prune.share_bits: weight sharing replaces torch.nn layers by codebook layers and {why}; "
            "leave share_bits unset"
        )
    if recipe.quantize is not None and recipe.quantize.skip:
        problems.append(
            f"quantize.skip: {why}, quantized through its ONNX export, whose nodes do not keep the Keras "
            "layer names; leave skip empty"
        )
    return problems + onnx_path_problems(recipe, why)


def onnx_path_problems(recipe: Recipe, why: str) -> list[str]:
    """What the quantize stage cannot do when it quantizes a float ONNX file (:func:`quantize_onnx`: an
    ONNX teacher's, a Keras model's export), and the budget search, which quantizes PyTorch models."""
    problems = []
    quantize = recipe.quantize
    if quantize is not None:
        if quantize.mode not in ONNX_MODES:
            what = "trains a PyTorch model" if quantize.mode == "qat" else "has no ONNX-file form"
            problems.append(f"quantize.mode: {quantize.mode!r} {what} and {why}; use static or dynamic")
        if quantize.rounding != "nearest":
            problems.append(f"quantize.rounding: {quantize.rounding!r} learns PyTorch weights and {why}")
        if quantize.act_bits != 8:
            problems.append(f"quantize.act_bits: ONNX QDQ activations are 8-bit and {why}; use 8")
    if recipe.budget is not None:
        problems.append(f"budget: the search quantizes PyTorch models and {why}; use quantize.budget")
    return problems


def onnx_teacher_problems(recipe: Recipe) -> list[str]:
    """What a teacher given only as an ONNX file cannot be asked for: ORT gives its logits, nothing
    else (no layer outputs, weights to copy or gradients), and PyTorch stages need a student."""
    why = "the teacher is an ONNX file"
    problems = []
    spec = recipe.distill
    if spec is not None and spec.features:
        problems.append(f"distill.features: {why}; feature terms need a PyTorch teacher's layer outputs")
    if spec is not None and spec.init_from_teacher:
        problems.append(f"distill.init_from_teacher: {why}; there are no PyTorch weights to copy")
    if spec is None:
        if recipe.prune is not None:
            problems.append(f"prune: {why}; distill it into a PyTorch student first (a distill: section)")
        problems += onnx_path_problems(recipe, why)
    if recipe.evaluate.attribution is not None:
        problems.append(f"evaluate.attribution: {why}; its attribution maps need gradients")
    return problems


def _registered_model(problems: list[str], field: str, name: object) -> None:
    if is_keras_file(name):  # a Keras file: it must exist; what it holds is checked when built
        if not Path(str(name)).is_file():
            problems.append(f"{field}: Keras model file not found: {name}")
    elif not isinstance(name, str) or ":" not in name:  # "package.module:factory": checked when built
        _attempt(problems, field, lambda: MODELS.get(name))


def _distill_names(problems: list[str], spec: DistillSpec) -> None:
    _registered_model(problems, "distill.student", spec.student)
    options = {"temperature": spec.temperature, **spec.loss_options}
    _attempt(problems, "distill.loss", lambda: make_logit_loss(spec.loss, **options))
    for i, feature in enumerate(spec.features):
        _attempt(problems, f"distill.features[{i}]", lambda f=feature: feature_spec(f))
    if spec.features and spec.offline is True:
        problems.append(
            "distill.offline: feature terms need the teacher online (offline caches logits only); "
            "set distill.offline: false"
        )


def feature_spec(entry: object) -> FeatureSpec:
    """A ``distill.features`` entry as a :class:`FeatureSpec`, refusing unknown or missing keys and
    layer names that are not strings (``FeatureSpec(**entry)`` would raise a bare ``TypeError``)."""
    if not isinstance(entry, dict):
        raise DistiqError(f"expected a mapping with keys {', '.join(FEATURE_KEYS)}, got {entry!r}")
    unknown = sorted(set(map(str, entry)) - set(FEATURE_KEYS))
    missing = [k for k in ("kind", "student", "teacher") if k not in entry]
    if unknown or missing:
        what = [f"unknown key(s) {', '.join(unknown)}"] * bool(unknown)
        what += [f"missing key(s) {', '.join(missing)}"] * bool(missing)
        raise DistiqError(f"{' and '.join(what)}; keys: {', '.join(FEATURE_KEYS)}")
    teachers = entry["teacher"] if isinstance(entry["teacher"], list) else [entry["teacher"]]
    if not isinstance(entry["student"], str) or not teachers or not all(isinstance(t, str) for t in teachers):
        raise DistiqError("student and teacher must be layer paths (teacher: a list of them for merge)")
    weight = entry.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not weight >= 0:
        raise DistiqError(f"weight must be a number >= 0, got {weight!r}")
    return FeatureSpec(**entry)


def _search_names(problems: list[str], space: Any) -> None:
    """The search lists: each non-empty, each calibrator known, each fallback count a whole number >= 0
    (a negative count would slice the sensitivity ranking from the end: all layers but one float)."""
    for key in ("methods", "bits", "per_channel", "float_fallback"):
        if not getattr(space, key):
            problems.append(f"budget.search.{key}: needs at least one value")
    for i, method in enumerate(space.methods):
        _attempt(problems, f"budget.search.methods[{i}]", lambda m=method: OBSERVERS.get(m))
    for i, count in enumerate(space.float_fallback):
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            problems.append(f"budget.search.float_fallback[{i}]: expected a layer count >= 0, got {count!r}")


def model_problems(recipe: Recipe, train: ArrayDataset) -> list[str]:
    """Problems found by building the recipe's models for ``train`` (see :func:`check_recipe`)."""
    problems: list[str] = []
    c, h, _ = train.input_shape
    shape = {"num_classes": train.num_classes, "in_channels": c, "image_size": h}
    example = train.x[:2]
    teacher_field = "teacher.weights" if recipe.teacher.weights is not None else "teacher.model"
    n = train.num_classes
    teacher = _attempt(problems, teacher_field, lambda: _teacher_fits(recipe, shape, train))
    student = None
    if recipe.distill is not None:
        spec = recipe.distill
        built = lambda: create(spec.student, **shape, **spec.student_options)  # noqa: E731
        student = _attempt(problems, "distill.student", lambda: _takes_data(built(), example, n))
        if teacher is not None and student is not None:
            _distill_layers(problems, spec, teacher, student, example)
    quantized = student if recipe.distill is not None else teacher  # what prune and quantize receive
    if recipe.prune is not None and recipe.prune.exclude and is_keras_model(quantized):
        from distiq.keras.prune import kernels  # the extra, imported once the Keras model was built

        _attempt(
            problems, "prune.exclude", lambda: kernels(quantized.keras_model, tuple(recipe.prune.exclude))
        )
    if recipe.quantize is not None and quantized is not None and not isinstance(quantized, OnnxModel):
        for i, path in enumerate(recipe.quantize.skip):
            _layer(problems, f"quantize.skip[{i}]", quantized, path)
    return problems


def _teacher_fits(recipe: Recipe, shape: dict, train: ArrayDataset) -> nn.Module:
    """The teacher, once it showed it takes the data: a weights file is checked as every command
    checks the model a user names (:func:`check_fits`, naming the file)."""
    spec = recipe.teacher
    if spec.weights is None:
        return _takes_data(create(spec.model, **shape, **spec.model_options), train.x[:2], train.num_classes)
    if is_onnx_file(spec.weights):
        check_fits(spec.weights, train)
        return OnnxModel(spec.weights)
    if is_keras_file(spec.weights):
        model = create(str(spec.weights))
        check_fits(model, train, spec.weights)
        return model
    model = load_model(spec.weights, allow_code=recipe_code(recipe))  # as the teacher stage loads it
    check_fits(model, train, spec.weights)
    return model


def _takes_data(model: nn.Module, example: torch.Tensor, num_classes: int) -> nn.Module:
    """``model``, once one eval-mode forward pass of two samples showed it takes the data and gives one
    logit per class (the layer checks after this one run the model too)."""
    was_training = model.training
    try:
        with torch.no_grad():
            out = model.eval()(example)
    except RuntimeError as e:
        raise DistiqError(
            f"{_model_name(model)} does not take inputs of shape {list(example.shape[1:])}: {_first_line(e)}"
        ) from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[1] != num_classes:
        got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise DistiqError(
            f"{_model_name(model)} gives outputs {got}, the data has {num_classes} classes "
            f"(expected [batch, {num_classes}])"
        )
    return model


def _distill_layers(
    problems: list[str], spec: DistillSpec, teacher: nn.Module, student: nn.Module, example: torch.Tensor
) -> None:
    """Feature layers against both models, then the terms built from their shapes; freeze patterns."""
    before = len(problems)
    specs = []
    for i, entry in enumerate(spec.features):
        feature = feature_spec(entry)  # checked by name_problems already
        _layer(problems, f"distill.features[{i}].student", student, feature.student)
        for j, path in enumerate(feature.teacher_layers):
            suffix = f"[{j}]" if feature.kind == "merge" else ""
            _layer(problems, f"distill.features[{i}].teacher{suffix}", teacher, path)
        specs.append(feature)
    if specs and len(problems) == before:  # every layer exists: the terms must fit their shapes
        loss = make_logit_loss(spec.loss, temperature=spec.temperature, **spec.loss_options)
        _attempt(
            problems,
            "distill.features",
            lambda: DistillObjective(student, teacher, loss, spec.alpha, specs, example).teardown(),
        )
    if spec.freeze:
        _attempt(problems, "distill.freeze", lambda: freeze_(student, spec.freeze))


def _layer(problems: list[str], field: str, model: nn.Module, path: str) -> None:
    """Add ``field: no layer 'path' in model; close: ...`` unless ``path`` is one of its modules."""
    names = [n for n, _ in model.named_modules() if n]
    if path in names:
        return
    close = difflib.get_close_matches(path, names, n=4, cutoff=0.5) or names[:4]
    more = " ..." if len(names) > len(close) else ""
    problems.append(
        f"{field}: no layer {path!r} in {_model_name(model)}; "
        f"{'close: ' if close else ''}{', '.join(close) or 'it has no layers'}{more}"
    )


def _model_name(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    return str(config["name"]) if isinstance(config, dict) and "name" in config else type(model).__name__
