"""The one training loop: plain training, distillation, fine-tuning and QAT all run through it.

Reproducibility and exact resume come from one rule: everything random in an epoch (shuffling,
dropout) is seeded from ``(seed, epoch)`` at the epoch's start, and everything stateful (weights,
optimizer moments, adapters, best weights, history) is checkpointed at the epoch's end. A run
killed anywhere therefore redoes the interrupted epoch from identical state and ends bit-identical
to an uninterrupted one.

A checkpoint is resumed only by the training that made it: it records the options and the caller's
``inputs``, and a rerun with others is refused (or, when asked, starts fresh or continues anyway).
Training is finite or stops: a non-finite loss or weight ends it with :class:`Diverged` before any
checkpoint of that epoch is written, so the last good checkpoint is never replaced by a broken one.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from distiq.data.arrays import ArrayDataset, as_arrays
from distiq.errors import DistiqError

from . import distributed as dd
from .batches import iterate_batches, predict_logits
from .checkpoint import (
    checkpoint_file,
    clear_checkpoint,
    flatten_optimizer,
    input_changes,
    load_checkpoint,
    plain,
    prefixed,
    save_checkpoint,
    section,
    unflatten_optimizer,
)
from .config import TrainConfig
from .objective import Objective
from .progress import EpochProgress, MetricsLog
from .weights import state_tensors

EpochCallback = Callable[[int, dict], None]
Rerun = Literal["auto", "fresh", "resume"]
RERUNS = ("auto", "fresh", "resume")


class InputsChanged(DistiqError):
    """The checkpoint directory holds training of other options or inputs (``rerun="auto"``).

    Attributes:
        folder: The checkpoint directory.
        changes: What differs, one phrase each (``"lr: 0.01 -> 0.1"``, ``"data changed"``).
    """

    def __init__(self, folder: str, changes: list[str]) -> None:
        self.folder, self.changes = folder, changes
        super().__init__(
            f"{folder}: holds a checkpoint of other inputs ({'; '.join(changes)}); delete it to start "
            "afresh (rerun='fresh'), or continue it with these options (rerun='resume')"
        )


class Diverged(DistiqError):
    """Training produced a non-finite loss or weight; the message names where and what was kept."""


@dataclass
class TrainResult:
    """What a training run produced.

    Attributes:
        model: The trained model (best epoch's weights when validating).
        history: One dict per epoch (losses, accuracies, lr, seconds).
        best_epoch: 0-based epoch whose weights ``model`` holds.
        stopped: Why training ended: "epochs", "target_accuracy" or "early_stopping".
        resumed_from: Epochs already done when this call started (0 for a fresh run).
    """

    model: nn.Module
    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    stopped: str = "epochs"
    resumed_from: int = 0

    @property
    def seconds_per_epoch(self) -> float:
        """Median wall-clock seconds of the training part of an epoch."""
        secs = sorted(h["train_seconds"] for h in self.history)
        return secs[len(secs) // 2] if secs else float("nan")


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed for one epoch's randomness."""
    return (seed * 1_000_003 + epoch * 7919) % (2**31)


def evaluate_loss_accuracy(model: nn.Module, data: ArrayDataset, batch_size: int) -> dict:
    """Cross-entropy and top-1 accuracy of ``model`` on ``data``."""
    logits = predict_logits(model, data, batch_size)
    return {
        "loss": float(F.cross_entropy(logits, data.y)),
        "accuracy": float((logits.argmax(1) == data.y).float().mean()),
    }


def train(
    model: nn.Module,
    train_data: Dataset,
    val_data: Dataset | None = None,
    *,
    objective: Objective | None = None,
    params: list[nn.Parameter] | None = None,
    on_epoch_end: EpochCallback | None = None,
    inputs: object = None,
    rerun: Rerun = "auto",
    **options: object,
) -> TrainResult:
    """Train ``model`` in place and return it with its history.

    Args:
        model: The network to train.
        train_data: Training samples ``(x, y)``.
        val_data: Validation samples, for early stopping, target accuracy and best-epoch restore.
        objective: Turns a batch into a loss (default: cross-entropy).
        params: Parameters to optimise (default: the model's trainable ones and the objective's).
        on_epoch_end: Called with ``(epoch, record)`` after each epoch's checkpoint.
        inputs: What else the result depends on (model, data, input files' hashes), JSON-able;
            recorded in the checkpoint beside the options and compared on resume.
        rerun: With a checkpoint in ``checkpoint_dir``: "auto" resumes it when it was made by the
            same options and ``inputs`` and raises :class:`InputsChanged` otherwise; "fresh" deletes
            it (and the log) and starts over; "resume" continues it whatever changed.
        **options: Fields of :class:`TrainConfig` (``epochs``, ``lr``, ``checkpoint_dir``, ...).

    Raises:
        InputsChanged: See ``rerun``.
        Diverged: A loss or weight became NaN or inf; the message names the epoch, the step and the
            last good checkpoint, which is kept.
    """
    cfg, rest = TrainConfig.from_options(**options)
    if rest:
        raise DistiqError(f"unknown training option(s): {', '.join(sorted(rest))}")
    dd.init_from_env()  # under torchrun: join the job (see distiq.engine.distributed)
    if rerun not in RERUNS:
        raise DistiqError(f"rerun: expected one of {', '.join(RERUNS)}, got {rerun!r}")
    train_set = as_arrays(train_data)
    val_set = as_arrays(val_data) if val_data is not None else None
    objective = objective or Objective()
    if params is None:
        params = [p for p in model.parameters() if p.requires_grad]
        params += [p for p in objective.parameters() if p.requires_grad]
    optimizer = cfg.make_optimizer(params)
    result = TrainResult(model=model)
    best_state: dict[str, torch.Tensor] | None = None
    log = MetricsLog(cfg.log_path if dd.is_main() else None)
    inputs = plain(inputs)
    start = _resume(cfg, model, objective, optimizer, result, inputs, rerun)
    if start is not None:
        best_state = start[1]
        start_epoch = start[0]
    else:
        start_epoch = 0
    if cfg.checkpoint_dir:
        log.truncate_after(start_epoch - 1)  # records past the checkpoint are an interrupted epoch's
    else:
        log.repair()
    dd.barrier()  # every rank resumed from the same checkpoint before rank 0 may write the next
    result.resumed_from = start_epoch
    if result.stopped != "epochs" or start_epoch >= cfg.epochs:
        return _finish(model, result, best_state)

    objective.setup(model, train_set)
    watched = _finite_tensors(model, objective)
    try:
        shown = cfg.progress if dd.is_main() else False
        with EpochProgress(_label(cfg), cfg.epochs, start_epoch, shown) as progress:
            for epoch in range(start_epoch, cfg.epochs):
                record = _run_epoch(cfg, epoch, model, objective, optimizer, params, train_set)
                _check_weights(cfg, epoch, model, objective, watched)
                if val_set is not None:
                    val = evaluate_loss_accuracy(model, val_set, cfg.eval_batch_size)
                    record.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
                result.history.append(record)
                if _improved(cfg, result, record):
                    result.best_epoch = epoch
                    best_state = state_tensors(model) if val_set is not None else None
                result.stopped = _stop_reason(cfg, result, record, epoch)
                log.write(record)
                if cfg.checkpoint_dir and dd.is_main():
                    _save(cfg, epoch, model, objective, optimizer, result, best_state, inputs)
                dd.barrier()
                progress.epoch_done(_summary(record))
                if on_epoch_end is not None:
                    on_epoch_end(epoch, record)
                if result.stopped != "epochs":
                    break
    finally:
        objective.teardown()
    return _finish(model, result, best_state)


def _run_epoch(cfg, epoch, model, objective, optimizer, params, data) -> dict:
    torch.manual_seed(epoch_seed(cfg.seed, epoch) + dd.rank())
    gen = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch))  # the same order on every rank
    lr = cfg.lr_at(epoch)
    for group in optimizer.param_groups:
        group["lr"] = lr
    model.train()
    objective.train()
    sums: dict[str, float] = {}
    correct = seen = 0
    t0 = time.perf_counter()
    views = cfg.views()
    batches = iterate_batches(data, cfg.batch_size, shuffle=True, generator=gen)
    for step, (x, y, idx) in enumerate(batches, start=1):
        if views.count > 1:  # one view per sample; its row in the augmented set: view * N + index
            drawn = views.draw(len(y), gen)
            x, idx = views.apply(x, drawn), drawn * len(data) + idx
        optimizer.zero_grad(set_to_none=True)
        share = dd.shard(torch.arange(len(y)))  # this rank's rows of the global batch
        if len(share):
            logits, terms = objective(model, x[share], y[share], idx[share])
            loss = float(terms["loss"].detach())
            if not math.isfinite(loss):
                raise _diverged(cfg, epoch, f"step {step}: the loss is {loss}")
            (terms["loss"] * (len(share) / len(y))).backward()  # summed over ranks: the batch mean
            n = len(share)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) * n
            correct += int((logits.detach().argmax(1) == y[share]).sum())
            seen += n
        dd.all_reduce_gradients(params)
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
    totals = dd.all_reduce_sums(sums | {"__correct": correct, "__seen": seen})
    correct, seen = totals.pop("__correct"), totals.pop("__seen")
    record = {"epoch": epoch, "lr": lr, "train_seconds": time.perf_counter() - t0}
    record.update({f"train_{k}": v / seen for k, v in totals.items()})
    record["train_accuracy"] = correct / seen
    return record


def _state(model: nn.Module, objective: Objective) -> dict[str, torch.Tensor]:
    return model.state_dict() | {f"objective.{k}": v for k, v in objective.state_dict().items()}


def _finite_tensors(model: nn.Module, objective: Objective) -> set[str]:
    """The floating-point state that is finite before training: what must stay so (a buffer that
    holds ``-inf`` on purpose, say a mask, is not watched)."""
    state = _state(model, objective)
    return {k for k, v in state.items() if v.is_floating_point() and bool(v.isfinite().all())}


def _check_weights(cfg: TrainConfig, epoch: int, model: nn.Module, objective: Objective, watched: set[str]):
    """Refuse to go on (and to checkpoint) with a NaN or inf weight, buffer or objective tensor."""
    for name, tensor in _state(model, objective).items():
        if name in watched and not bool(tensor.isfinite().all()):
            bad = int((~tensor.isfinite()).sum())
            raise _diverged(cfg, epoch, f"after its last step: {bad} value(s) of {name} not finite")


def _diverged(cfg: TrainConfig, epoch: int, where: str) -> Diverged:
    """One line: where training broke, at which lr, and which checkpoint holds the last good state."""
    kept = checkpoint_file(cfg.checkpoint_dir)
    if kept is not None:
        saved = f"the last good checkpoint, {kept}, is kept unchanged"
    elif cfg.checkpoint_dir:
        saved = f"no checkpoint was written to {cfg.checkpoint_dir} before it"
    else:
        saved = "no checkpoint_dir was given, so no checkpoint was kept"
    return Diverged(
        f"training diverged at epoch {epoch + 1}/{cfg.epochs}, {where} (lr {cfg.lr_at(epoch):g}); "
        f"{saved}; lower the learning rate (lr) or clip gradients (grad_clip)"
    )


def _improved(cfg: TrainConfig, result: TrainResult, record: dict) -> bool:
    if "val_accuracy" not in record:
        return True  # without validation the last epoch is the one kept
    key = cfg.monitor
    best = [h[key] for h in result.history[:-1]]
    if not best:
        return True
    return record[key] > max(best) if key == "val_accuracy" else record[key] < min(best)


def _stop_reason(cfg: TrainConfig, result: TrainResult, record: dict, epoch: int) -> str:
    acc = record.get("val_accuracy", record["train_accuracy"])
    if cfg.target_accuracy is not None and acc >= cfg.target_accuracy:
        return "target_accuracy"
    if cfg.patience is not None and epoch - result.best_epoch >= cfg.patience:
        return "early_stopping"
    return "epochs"


def _label(cfg: TrainConfig) -> str:
    """What a progress line names: the folder of the metrics log (a pipeline stage's folder, e.g.
    ``01-teacher``), else just "train"."""
    folder = Path(cfg.log_path).parent.name if cfg.log_path else ""
    return f"train {folder}" if folder else "train"


def _summary(record: dict) -> str:
    parts = [f"train loss {record['train_loss']:.4f}", f"train acc {record['train_accuracy']:.4f}"]
    if "val_accuracy" in record:
        parts.append(f"val acc {record['val_accuracy']:.4f}")
    return "  ".join(parts)


def _save(cfg, epoch, model, objective, optimizer, result, best_state, inputs) -> None:
    opt_tensors, opt_meta = flatten_optimizer(optimizer.state_dict())
    tensors = prefixed("model", state_tensors(model))
    tensors |= prefixed("objective", state_tensors(objective))
    tensors |= prefixed("optimizer", opt_tensors)
    if best_state is not None:
        tensors |= prefixed("best", best_state)
    meta = {
        "epoch": epoch + 1,
        "history": result.history,
        "best_epoch": result.best_epoch,
        "stopped": result.stopped,
        "optimizer": opt_meta,
        "config": plain(cfg.identity()),
        "inputs": inputs,
    }
    save_checkpoint(cfg.checkpoint_dir, tensors, meta)


def _resume(cfg, model, objective, optimizer, result, inputs, rerun) -> tuple[int, dict | None] | None:
    if not cfg.checkpoint_dir:
        return None
    if rerun == "fresh":
        if dd.is_main():
            clear_checkpoint(cfg.checkpoint_dir)
        return None
    found = load_checkpoint(cfg.checkpoint_dir)
    if found is None:
        return None
    tensors, meta = found
    changes = input_changes(meta, cfg, inputs)
    if changes and rerun == "auto":
        raise InputsChanged(cfg.checkpoint_dir, changes)
    try:
        model.load_state_dict(section("model", tensors))
        objective.load_state_dict(section("objective", tensors))
        _load_optimizer(optimizer, tensors, meta, cfg, changed=bool(changes))
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DistiqError(
            f"{checkpoint_file(cfg.checkpoint_dir)}: does not fit this model and optimizer ({first})"
        ) from None
    result.history = meta["history"]
    result.best_epoch = meta["best_epoch"]
    result.stopped = meta["stopped"]
    best = section("best", tensors) or None
    return meta["epoch"], best


def _load_optimizer(optimizer, tensors: dict, meta: dict, cfg: TrainConfig, changed: bool) -> None:
    """The checkpoint's optimizer state; continued with changed options, its moments are kept only
    for the same optimizer, and the hyperparameters are the new options' (the lr is set per epoch)."""
    made_by = meta.get("config", {}).get("optimizer") if isinstance(meta.get("config"), dict) else None
    if changed and made_by != cfg.optimizer:
        return
    fresh = dict(optimizer.defaults)
    optimizer.load_state_dict(unflatten_optimizer(section("optimizer", tensors), meta["optimizer"]))
    if changed:
        for group in optimizer.param_groups:
            group.update(fresh)


def _finish(model: nn.Module, result: TrainResult, best_state: dict | None) -> TrainResult:
    if best_state is not None:
        model.load_state_dict(copy.deepcopy(best_state))
    model.eval()
    return result
