"""``distiq.run``: execute a recipe stage by stage into a run directory, resuming where it stopped."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from torch import nn

from distiq import data as dqdata
from distiq.errors import DataError
from distiq.fingerprint import data_fingerprint
from distiq.lock import hold_folder
from distiq.quant.target import cpu_info
from distiq.record import RunRecord, read_run, write_run

from .compress import run_prune, run_quantize
from .measure import logits_of, measure, retime
from .recipe import Recipe, load_recipe
from .rundir import (
    StageRecord,
    claim_stage_dir,
    load_stage,
    now,
    save_stage,
    spec_files,
    stage_key,
    versions,
    write_recipe,
)
from .search import run_search
from .splits import check_extras, evaluate_extras
from .stages import RunState, StageOutput, recipe_code, reload_output, run_distill, run_teacher
from .validate import check_recipe

console = Console(stderr=True)

StageFn = Callable[[object, RunState, Path], StageOutput]


@dataclass
class RunResult:
    """A finished run: its folder and one record per stage."""

    run_dir: Path
    stages: list[StageRecord]
    dataset: str

    def stage(self, kind: str) -> StageRecord:
        """The last stage of ``kind``."""
        return [s for s in self.stages if s.kind == kind][-1]


def load_data(recipe: Recipe, notes: list[str]) -> tuple[str, dqdata.ArrayDataset, ...]:
    """Train/val/test sets of ``data.name``: a dataset name, an ``.npz`` file or an image folder.

    Resolved as the command line resolves ``--data`` (:func:`distiq.data.resolve`). A file or folder
    has no test split, so ``data.test_fraction`` of it (stratified, seeded) is held out as the test set
    before anything else is drawn. A *named* dataset whose files are missing falls back to
    ``data.fallback`` (and says so); a user's own file never does: a wrong path is an error.
    """
    spec = recipe.data
    name = spec.name
    try:
        full, test = dqdata.resolve(name, "train", spec.root), dqdata.resolve(name, "test", spec.root)
    except DataError as e:
        if not spec.fallback or name not in dqdata.names():
            raise
        notes.append(f"{name} is not available ({e}); using {spec.fallback} instead")
        console.print(f"[yellow]{notes[-1]}")
        name = spec.fallback
        full, test = dqdata.resolve(name, "train"), dqdata.resolve(name, "test")
    if test is None:
        full, test = dqdata.split(full, spec.test_fraction, seed=spec.seed)
        test.name = f"{name}/test"
        notes.append(f"{name} has no test split: held out {len(test)} samples (data.test_fraction)")
    if spec.subsample is not None:
        n = int(spec.subsample) if spec.subsample > 1 else spec.subsample
        full = dqdata.subsample(full, min(n, len(full)) if isinstance(n, int) else n, seed=spec.seed)
    train, val = dqdata.split(full, spec.val_fraction, seed=spec.seed)
    return name, train, val, test


def data_contents(recipe: Recipe, dataset: str) -> dict:
    """What the data section alone does not say about the data a run used: the sha256 of a user's
    file or folder, or the dataset used instead of a missing one (``data.fallback``). Empty for a
    dataset used by name, so such runs keep the keys they had."""
    found = data_fingerprint(dataset, recipe.data.root)
    extra = {"sha256": found["sha256"]} if "sha256" in found else {}
    return extra | ({"used": dataset} if dataset != recipe.data.name else {})


def plan(recipe: Recipe) -> list[tuple[str, object, StageFn]]:
    """The stages the recipe asks for, in order."""
    stages: list[tuple[str, object, StageFn]] = [("teacher", recipe.teacher, run_teacher)]
    if recipe.distill is not None:
        stages.append(("distill", recipe.distill, run_distill))
    if recipe.prune is not None:
        stages.append(("prune", recipe.prune, run_prune))
    if recipe.quantize is not None:
        stages.append(("quantize", recipe.quantize, run_quantize))
    if recipe.budget is not None:
        stages.append(("search", recipe.budget, run_search))
    return stages


def run(
    recipe: str | os.PathLike[str] | dict | Recipe, run_dir: str | os.PathLike[str] | None = None
) -> RunResult:
    """Run ``recipe`` into ``run_dir`` (default ``runs/<name>``); finished stages are reused.

    A stage is reused when its inputs are unchanged: its recipe section, the data (a file's or
    folder's contents included), the contents of the files it names (``teacher.weights``) and the
    stages before it. One run at a time writes a folder.

    Returns:
        The run directory and one :class:`StageRecord` per stage (metrics on the test split).

    Raises:
        DistiqError: Among others, another process is running into ``run_dir`` (its pid is named).
    """
    recipe = load_recipe(recipe)
    run_dir = Path(run_dir or Path("runs") / recipe.name)
    with hold_folder(run_dir):
        return _run_stages(recipe, run_dir)


def _run_stages(recipe: Recipe, run_dir: Path) -> RunResult:
    """The stages of ``recipe`` into ``run_dir``, whose lock the caller holds."""
    notes: list[str] = []
    dataset, train, val, test = load_data(recipe, notes)
    check_recipe(recipe, train)  # every name and layer, before any stage writes or trains
    check_extras(recipe)
    state = RunState(recipe, run_dir, dataset, train, val, test, notes=notes)
    write_recipe(run_dir, recipe.model_dump(mode="json"))
    info = RunRecord(
        name=recipe.name,
        recipe=recipe.model_dump(mode="json"),
        versions=versions(),
        cpu=cpu_info(),  # every latency and int8 accuracy figure of this run was measured on it
        dataset=dataset,
        started=now(),
        notes=notes,
    )
    data_key = recipe.data.model_dump(mode="json") | {"seed": recipe.seed} | data_contents(recipe, dataset)
    eval_key = recipe.evaluate.model_dump(mode="json", exclude={"splits", "attribution"})  # not per stage
    previous, records, models, teacher_pred = "", [], [], None
    for index, (kind, spec, fn) in enumerate(plan(recipe)):
        key = stage_key(kind, spec.model_dump(mode="json"), previous, data_key, spec_files(spec))
        stage_dir = f"stages/{index:02d}-{kind}"
        record = load_stage(run_dir, stage_dir, key)
        if record is not None:
            console.print(f"[dim]{kind}: inputs unchanged, reusing {stage_dir}")
            record.skipped = True
            model = reload_output(record.artifacts, run_dir, recipe_code(recipe))
            onnx = run_dir / record.artifacts["onnx"]
        else:
            console.print(f"[bold]{kind}[/bold] -> {stage_dir}")
            claim_stage_dir(run_dir / stage_dir, key)
            t0 = time.perf_counter()
            out = fn(spec, state, run_dir / stage_dir)
            record = StageRecord(
                kind,
                kind,
                stage_dir,
                key,
                seconds=time.perf_counter() - t0,
                history=out.history,
                quant=out.quant,
                extra=out.extra,
                artifacts={k: str(Path(p).relative_to(run_dir)) for k, p in out.artifacts.items()},
            )
            model, onnx = out.model, out.onnx
        if record.extra.get("eval_key") != eval_key:
            record.metrics = measure(model, onnx, test, recipe.evaluate, teacher_pred, recipe.seed)
            record.extra["eval_key"] = eval_key
        save_stage(run_dir, record)
        if "search" in record.extra:
            info.search = record.extra["search"]
        if kind == "teacher":
            state.teacher, state.teacher_onnx = model, onnx
            teacher_pred = logits_of(model, test).argmax(1)
        state.model, state.onnx, previous = model, onnx, key
        if isinstance(model, nn.Module):
            state.float_model, state.float_onnx = model, onnx
        records.append(record)
        models.append(model)
        info.stages = records
        write_run(run_dir, info)
    if recipe.evaluate.latency:
        info.latency = _retime(run_dir, records, recipe)
    info.splits, info.attribution = evaluate_extras(state, records, models)  # when the recipe asks
    info.finished = now()
    write_run(run_dir, info)
    _summarise(records)
    return RunResult(run_dir, records, dataset)


def _retime(run_dir: Path, records: list[StageRecord], recipe: Recipe) -> dict:
    """All stages timed together (:func:`retime`), each stage record saved with its latencies."""
    files = {r.dir: run_dir / r.artifacts["onnx"] for r in records}
    how = retime(files, {r.dir: r.metrics for r in records}, recipe.evaluate)
    for r in records:
        save_stage(run_dir, r)
    return how


def _summarise(records: list[StageRecord]) -> None:
    from rich.table import Table

    table = Table(title="distiq run (test split)")
    for col in ("stage", "accuracy", "macro F1", "size", "latency b1 (ms)", "reused"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for r in records:
        m = r.metrics
        lat = f"{m['latency_ms_p50']:.3f}" if "latency_ms_p50" in m else "-"
        table.add_row(
            r.name,
            f"{100 * m['accuracy']:.2f}%",
            f"{m['f1_macro']:.4f}",
            f"{m['size_bytes'] / 1024:.1f} KiB",
            lat,
            "yes" if r.skipped else "",
        )
    console.print(table)


def load_run(run_dir: str | os.PathLike[str]) -> dict:
    """The ``run.json`` of a run directory, as a dict (:func:`distiq.record.read_run` for the record)."""
    return read_run(run_dir).to_dict()
