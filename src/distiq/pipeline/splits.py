"""The recipe's ``evaluate.splits`` and ``evaluate.attribution``: run after every stage is measured.

Why after the stages: both read the finished models and change none of them. ``splits`` says how far
each stage's test accuracy can be trusted (mean, std and a 95% interval over subsamples and folds of
the test split) and how the student's accuracy grows with the transfer data (the distill stage re-run
on a share of the training split, each share in its own stage folder so a rerun reuses it by key);
``attribution`` says whether each later stage looks at the same pixels as the teacher. Tuning stays on
the validation split; the test split is only reported here, never searched.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from rich.console import Console
from torch import nn

from distiq.data.sampling import subsample
from distiq.errors import DistiqError
from distiq.evaluate.attribution import attribution_agreement
from distiq.evaluate.metrics import accuracy, confusion_matrix
from distiq.evaluate.splits import kfold_scores, subsample_scores

from .measure import logits_of
from .recipe import AttributionSpec, Recipe, SplitsSpec
from .rundir import StageRecord, claim_stage_dir, load_stage, save_stage, stage_key
from .stages import RunState, recipe_code, reload_output, run_distill

console = Console(stderr=True)

EXAMPLES = 4
"""Images whose maps run.json keeps for the report's figure (the agreement uses all of them)."""

Model = nn.Module | Path


def check_extras(recipe: Recipe) -> None:
    """Before any stage runs: what ``evaluate.splits`` needs that its own section cannot check.

    Raises:
        DistiqError: ``ratios`` without a ``distill:`` section to re-run.
    """
    splits = recipe.evaluate.splits
    if splits is not None and splits.ratios and recipe.distill is None:
        raise DistiqError(
            f"{recipe._source}: evaluate.splits.ratios: needs a distill: section (the student distilled "
            "on each share of the training data)"
        )


def evaluate_extras(
    state: RunState, records: list[StageRecord], models: list[Model]
) -> tuple[dict | None, dict | None]:
    """The run record's ``splits`` and ``attribution`` (None for those the recipe does not ask for)."""
    spec = state.recipe.evaluate
    splits = _splits(spec.splits, state, records, models) if spec.splits is not None else None
    attribution = None
    if spec.attribution is not None:
        attribution = _attribution(spec.attribution, state, records, models)
    return splits, attribution


def _intervals(spec: SplitsSpec, model: Model, state: RunState) -> dict:
    """Accuracy on the whole test split and its spread over the subsamples and folds asked for."""
    test, seed, where = state.test, state.recipe.seed, f"{state.recipe._source}: evaluate.splits"
    pred = logits_of(model, test).argmax(1)
    out: dict = {"accuracy": accuracy(confusion_matrix(pred, test.y, test.num_classes))}
    try:
        if spec.subsample is not None:
            sub = spec.subsample
            est = subsample_scores(pred, test.y, repeats=sub.repeats, fraction=sub.fraction, seed=seed)
            out["subsample"] = est.to_dict()
        if spec.kfold is not None:
            out["kfold"] = kfold_scores(pred, test.y, k=spec.kfold.k, seed=seed).to_dict()
    except ValueError as e:  # a fraction or k the test split cannot honour
        raise DistiqError(f"{where}: {e} (the test split has {len(test)} samples)") from None
    return out


def _splits(spec: SplitsSpec, state: RunState, records: list[StageRecord], models: list[Model]) -> dict:
    stages = [{"stage": r.name, **_intervals(spec, m, state)} for r, m in zip(records, models, strict=True)]
    ratios = [
        {**run, **_intervals(spec, model, state)} for run, model in _ratio_runs(spec, state, records, models)
    ]
    return {"test_samples": len(state.test), "seed": state.recipe.seed, "stages": stages, "ratios": ratios}


def _ratio_runs(
    spec: SplitsSpec, state: RunState, records: list[StageRecord], models: list[Model]
) -> list[tuple[dict, Model]]:
    """The distill stage re-run on each share of the training split, with its record and student.

    A share is a stratified subsample (seed: the recipe's). Ratio 1 is the distill stage itself (the
    same data, recipe and seed), so its student is reused. Each other share is a stage folder
    ``stages/ratios/<ratio>`` keyed on the distill section, the share and the teacher's key (which
    holds the data's), so a rerun reuses it like any stage.
    """
    out = []
    for ratio in spec.ratios:
        if ratio == 1:
            i = next(i for i, r in enumerate(records) if r.kind == "distill")
            n_train, record, model = len(state.train), records[i], models[i]
        else:
            share = subsample(state.train, float(ratio), seed=state.recipe.seed)
            n_train = len(share)
            record, model = _distill_share(ratio, dataclasses.replace(state, train=share), records[0].key)
        out.append(({"ratio": ratio, "n_train": n_train, "dir": record.dir, "reused": record.skipped}, model))
    return out


def _distill_share(ratio: float, share: RunState, teacher_key: str) -> tuple[StageRecord, Model]:
    """The distill stage run (or reused) on ``share``, whose training split is the ratio's subsample."""
    recipe, run_dir = share.recipe, share.run_dir
    key = stage_key(
        "distill-ratio", recipe.distill.model_dump(mode="json") | {"ratio": ratio}, teacher_key, {}
    )
    stage_dir = f"stages/ratios/{ratio:g}"
    record = load_stage(run_dir, stage_dir, key)
    if record is not None:
        console.print(f"[dim]distill on {ratio:g} of the data: inputs unchanged, reusing {stage_dir}")
        record.skipped = True
        return record, reload_output(record.artifacts, run_dir, recipe_code(recipe))
    console.print(f"[bold]distill on {ratio:g} of the data[/bold] -> {stage_dir}")
    claim_stage_dir(run_dir / stage_dir, key)
    t0 = time.perf_counter()
    result = run_distill(recipe.distill, share, run_dir / stage_dir)
    record = StageRecord(
        f"distill@{ratio:g}",
        "distill-ratio",
        stage_dir,
        key,
        seconds=time.perf_counter() - t0,
        history=result.history,
        artifacts={k: str(Path(p).relative_to(run_dir)) for k, p in result.artifacts.items()},
    )
    save_stage(run_dir, record)
    return record, result.model


def _explained(records: list[StageRecord], models: list[Model]) -> dict[str, tuple[nn.Module, str]]:
    """Every stage after the teacher: the module whose maps stand for it, and what that module is.

    An int8 stage is an ONNX file, without gradients: the float model it was quantized from stands in.
    """
    out = {}
    parent, parent_model = records[0].name, models[0]
    for r, m in zip(records[1:], models[1:], strict=True):
        if isinstance(m, nn.Module):
            parent, parent_model = r.name, m
            out[r.name] = (m, "itself")
        else:
            out[r.name] = (parent_model, f"the float model of {parent} (an int8 file has no gradients)")
    return out


def _attribution(
    spec: AttributionSpec, state: RunState, records: list[StageRecord], models: list[Model]
) -> dict:
    """Agreement of every later stage's maps with the teacher's on a fixed stratified test draw."""
    test, teacher = state.test, records[0].name
    shown = subsample(test, min(spec.samples, len(test)), seed=state.recipe.seed)
    explained = _explained(records, models)
    results, maps = attribution_agreement(
        models[0],
        {name: module for name, (module, _) in explained.items()},
        shown.x,
        shown.y,
        test.classes,
        spec.method,
        steps=spec.steps,
    )
    maps = {teacher: maps.pop("reference"), **maps}
    examples = [
        {
            "label": test.classes[int(shown.y[i])],
            "image": shown.x[i].mean(0).round(decimals=4).tolist(),
            "maps": {name: m[i].round(decimals=5).tolist() for name, m in maps.items()},
        }
        for i in _example_indices(shown.y)
    ]
    return {
        "method": spec.method,
        "samples": len(shown),
        "seed": state.recipe.seed,
        "reference": teacher,
        "target": "true class",
        "stages": [res.to_dict() | {"explained": explained[res.stage][1]} for res in results],
        "examples": examples,
    }


def _example_indices(y) -> list[int]:
    """The first image of each of the first :data:`EXAMPLES` classes present: varied digits."""
    seen: dict[int, int] = {}
    for i, c in enumerate(y.tolist()):
        seen.setdefault(c, i)
    return sorted(seen.values())[:EXAMPLES]
