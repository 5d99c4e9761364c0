"""Accuracy-budget search: the smallest (or fastest) int8 model within ``max_accuracy_drop`` of the teacher.

Candidates combine calibrator, bit width, weight granularity, weight rounding (nearest or AdaRound), an
optional extra pruning ratio and float fallback of the k most sensitive layers. Each is exported to
ONNX and judged on the *validation* split in ONNX Runtime (what will ship); the chosen one is then
measured on the test split by the runner, so tuning and reporting never see the same data. When no
candidate meets the budget, the closest is kept and the miss is recorded: a long search never ends
with nothing.
"""

from __future__ import annotations

import itertools
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from torch import nn

from distiq.data.arrays import ArrayDataset
from distiq.data.sampling import subsample
from distiq.errors import DistiqError
from distiq.evaluate.api import onnx_logits
from distiq.io import write_bytes_atomic
from distiq.prune import prune
from distiq.quant import export_onnx, quantize, sensitivity
from distiq.runtime import time_files

from .compress import int8_record
from .recipe import BudgetSpec
from .stages import RunState, StageOutput, train_options

console = Console(stderr=True)


def threshold(budget: BudgetSpec, reference: float) -> float:
    """Lowest acceptable validation accuracy (a fraction) given the teacher's."""
    if budget.relative:
        return reference * (1 - budget.max_accuracy_drop / 100)
    return reference - budget.max_accuracy_drop / 100


def _val_accuracy(path: Path, state: RunState) -> float:
    return float((onnx_logits(path, state.val).argmax(1) == state.val.y).double().mean())


def _pruned(state: RunState, amount: float, stage_dir: Path) -> nn.Module:
    """The last float module pruned by ``amount`` (a copy): after a quantize stage ``state.model`` is
    an int8 ONNX file, and candidates start from float weights anyway."""
    if state.float_model is None:
        raise DistiqError("budget: the search needs a float model from an earlier stage")
    if amount <= 0:
        return state.float_model
    spec = state.recipe.prune
    fine_tune = spec.fine_tune if spec is not None else None
    opts = train_options(fine_tune, stage_dir / f"prune-{amount:g}", state.recipe.seed) if fine_tune else {}
    return prune(
        state.float_model,
        amount,
        structured=spec.structured if spec else False,
        train_data=state.train if opts else None,
        val_data=state.val if opts else None,
        teacher=state.teacher if opts else None,
        example_input=state.train.x[:2],
        **opts,
    )


@dataclass(frozen=True)
class TrialContext:
    """What every trial of one pruning amount shares: sent once to each worker process."""

    base: nn.Module
    calib: ArrayDataset
    val: ArrayDataset
    example: torch.Tensor
    target: str
    threads: int


_context: TrialContext | None = None  # a worker's copy, set by _init_worker


def _init_worker(context: TrialContext) -> None:
    global _context
    _context = context
    torch.set_num_threads(context.threads)


def _quantized(context: TrialContext, params: dict) -> nn.Module:
    return quantize(
        context.base,
        context.calib,
        method=params["method"],
        bits=params["bits"],
        per_channel=params["per_channel"],
        skip=params["float_layers"],
        target=context.target,
        rounding=params["rounding"],
        adaround={"progress": False},
    )


def _run_trial(params: dict, path: Path, context: TrialContext | None = None) -> dict:
    """Quantize, export and judge one candidate on the validation split in ONNX Runtime.

    Top level and fed plain values, so a worker process can run it (``context`` None: the worker's
    own, set once by :func:`_init_worker`). The quantized module is not sent back: it is rebuilt for
    the chosen trial only (quantizing is deterministic), which keeps memory flat however long the search.
    """
    context = context or _context
    export_onnx(_quantized(context, params), path, context.example)
    logits = onnx_logits(path, context.val, threads=context.threads)
    return {"val_accuracy": float((logits.argmax(1) == context.val.y).double().mean())}


def _run_trials(context: TrialContext, tasks: list[tuple[dict, Path]], workers: int) -> list[dict]:
    """Results of ``tasks`` in order: in this process, or spread over ``workers`` spawned processes
    (spawned, not forked: a fork of a process whose OpenMP threads have run can hang in the child)."""
    if workers <= 1 or len(tasks) <= 1:
        return [_run_trial(params, path, context) for params, path in tasks]
    pool = ProcessPoolExecutor(
        max_workers=min(workers, len(tasks)),
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(context,),
    )
    with pool:
        futures = [pool.submit(_run_trial, params, path) for params, path in tasks]
        return [f.result() for f in futures]


def _trial_latencies(trials: list[dict], run_dir: Path) -> None:
    """Batch-1 latency of every trial file, timed together in interleaved rounds after all trials ran
    (never while trials share the cores, which would time the contention)."""
    paths = {str(t["id"]): run_dir / t["file"] for t in trials}
    timed = time_files(paths, (1,), threads=2, rounds=20)[1]
    for t in trials:
        t["latency_ms"] = timed[str(t["id"])].p50_ms


def run_search(budget: BudgetSpec, state: RunState, stage_dir: Path) -> StageOutput:
    """Try every candidate of ``budget.search``; keep the best that meets the budget.

    With ``budget.workers`` > 1 the candidates of each pruning amount are quantized, exported and
    judged in that many processes at once, one thread each; the results are the same as in one process.
    """
    space = budget.search
    amounts = space.prune_amounts or [0.0]
    grid = list(
        itertools.product(space.methods, space.bits, space.per_channel, space.float_fallback, space.rounding)
    )
    if not grid:  # the recipe schema refuses empty lists; a hand-built spec must fail here, not at max([])
        raise DistiqError(
            "budget.search: methods, bits, per_channel, float_fallback and rounding each need a value"
        )
    if any(isinstance(k, bool) or not isinstance(k, int) or k < 0 for k in space.float_fallback):
        # ranking[:-1] would keep every layer but one in float: refuse what the schema refuses
        raise DistiqError(
            f"budget.search.float_fallback: expected layer counts >= 0, got {space.float_fallback}"
        )
    seed = state.recipe.seed
    reference = float((onnx_logits(state.teacher_onnx, state.val).argmax(1) == state.val.y).double().mean())
    floor = threshold(budget, reference)
    calib = subsample(state.train, min(512, len(state.train)), seed=seed)
    target = state.recipe.quantize.target if state.recipe.quantize is not None else "auto"
    threads = 1 if budget.workers > 1 else torch.get_num_threads()
    trials: list[dict] = []
    contexts: dict[float, TrialContext] = {}
    (stage_dir / "trials").mkdir(parents=True, exist_ok=True)
    for amount in amounts:
        base = _pruned(state, amount, stage_dir)
        ranking = [r["layer"] for r in sensitivity(base, calib, state.val, method="minmax")]
        contexts[amount] = TrialContext(base, calib, state.val, calib.x[:1], target, threads)
        tasks = []
        for method, bits, per_channel, fallback, rounding in grid:
            tid = len(trials) + len(tasks)
            params = {
                "prune": amount,
                "method": method,
                "bits": bits,
                "per_channel": per_channel,
                "float_layers": ranking[:fallback],
                "rounding": rounding,
            }
            tasks.append((params, stage_dir / "trials" / f"trial-{tid:03d}.onnx"))
        results = _run_trials(contexts[amount], tasks, budget.workers)
        for (params, path), result in zip(tasks, results, strict=True):
            acc = result["val_accuracy"]
            trial = {
                "id": len(trials),
                "params": params,
                "val_accuracy": acc,
                "size_bytes": path.stat().st_size,
                "meets_budget": acc >= floor,
                "chosen": False,
                "file": str(path.relative_to(state.run_dir)),
            }
            trials.append(trial)
            console.print(
                f"trial {trial['id']}: {params} val {100 * acc:.2f}% "
                f"{trial['size_bytes'] / 1024:.1f} KiB {'ok' if trial['meets_budget'] else 'miss'}"
            )
    if budget.objective == "latency":
        _trial_latencies(trials, state.run_dir)
    key = "latency_ms" if budget.objective == "latency" else "size_bytes"
    meeting = [t for t in trials if t["meets_budget"]]
    best = (
        min(meeting, key=lambda t: (t[key], -t["val_accuracy"]))
        if meeting
        else max(trials, key=lambda t: t["val_accuracy"])
    )
    best["chosen"] = True
    missed_by = None if meeting else floor - best["val_accuracy"]
    if missed_by is not None:
        console.print(
            f"[yellow]no candidate meets the budget; keeping trial {best['id']}, "
            f"{100 * missed_by:.2f} points short"
        )
    chosen = state.run_dir / best["file"]
    final = stage_dir / "model.onnx"
    write_bytes_atomic(final, chosen.read_bytes())
    search = {
        "objective": budget.objective,
        "budget": budget.model_dump(mode="json"),
        "trials": trials,
        "reference_accuracy": reference,
        "threshold": floor,
        "missed_by": missed_by,
        "chosen": best["id"],
    }
    # the chosen file, run in ONNX Runtime on the test split beside its simulation, and its kernels
    quant = int8_record(state, final, _quantized(contexts[best["params"]["prune"]], best["params"]))
    return StageOutput(final, final, {"onnx": final}, quant=quant, extra={"search": search})
