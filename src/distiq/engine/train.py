"""The one training loop: plain training, distillation, fine-tuning and QAT all run through it.

Reproducibility and exact resume come from one rule: everything random in an epoch (shuffling,
dropout) is seeded from ``(seed, epoch)`` at the epoch's start, and everything stateful (weights,
optimizer moments, adapters, best weights, history) is checkpointed at the epoch's end. A run
killed anywhere therefore redoes the interrupted epoch from identical state and ends bit-identical
to an uninterrupted one.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from distiq.data.arrays import ArrayDataset, as_arrays

from .batches import iterate_batches, predict_logits
from .checkpoint import (
    flatten_optimizer,
    load_checkpoint,
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
        **options: Fields of :class:`TrainConfig` (``epochs``, ``lr``, ``checkpoint_dir``, ...).
    """
    cfg, rest = TrainConfig.from_options(**options)
    if rest:
        from distiq.errors import DistiqError

        raise DistiqError(f"unknown training option(s): {', '.join(sorted(rest))}")
    train_set = as_arrays(train_data)
    val_set = as_arrays(val_data) if val_data is not None else None
    objective = objective or Objective()
    if params is None:
        params = [p for p in model.parameters() if p.requires_grad]
        params += [p for p in objective.parameters() if p.requires_grad]
    optimizer = cfg.make_optimizer(params)
    result = TrainResult(model=model)
    best_state: dict[str, torch.Tensor] | None = None
    log = MetricsLog(cfg.log_path)
    start = _resume(cfg, model, objective, optimizer, result, log)
    if start is not None:
        best_state = start[1]
        start_epoch = start[0]
    else:
        start_epoch = 0
    result.resumed_from = start_epoch
    if result.stopped != "epochs" or start_epoch >= cfg.epochs:
        return _finish(model, result, best_state)

    objective.setup(model, train_set)
    try:
        with EpochProgress(_label(cfg), cfg.epochs, start_epoch, cfg.progress) as progress:
            for epoch in range(start_epoch, cfg.epochs):
                record = _run_epoch(cfg, epoch, model, objective, optimizer, params, train_set)
                if val_set is not None:
                    val = evaluate_loss_accuracy(model, val_set, cfg.eval_batch_size)
                    record.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
                result.history.append(record)
                if _improved(cfg, result, record):
                    result.best_epoch = epoch
                    best_state = state_tensors(model) if val_set is not None else None
                result.stopped = _stop_reason(cfg, result, record, epoch)
                log.write(record)
                if cfg.checkpoint_dir:
                    _save(cfg, epoch, model, objective, optimizer, result, best_state)
                progress.epoch_done(_summary(record))
                if on_epoch_end is not None:
                    on_epoch_end(epoch, record)
                if result.stopped != "epochs":
                    break
    finally:
        objective.teardown()
    return _finish(model, result, best_state)


def _run_epoch(cfg, epoch, model, objective, optimizer, params, data) -> dict:
    torch.manual_seed(epoch_seed(cfg.seed, epoch))
    gen = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch))
    lr = cfg.lr_at(epoch)
    for group in optimizer.param_groups:
        group["lr"] = lr
    model.train()
    objective.train()
    sums: dict[str, float] = {}
    correct = seen = 0
    t0 = time.perf_counter()
    for x, y, idx in iterate_batches(data, cfg.batch_size, shuffle=True, generator=gen):
        optimizer.zero_grad(set_to_none=True)
        logits, terms = objective(model, x, y, idx)
        terms["loss"].backward()
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        n = len(y)
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach()) * n
        correct += int((logits.detach().argmax(1) == y).sum())
        seen += n
    record = {"epoch": epoch, "lr": lr, "train_seconds": time.perf_counter() - t0}
    record.update({f"train_{k}": v / seen for k, v in sums.items()})
    record["train_accuracy"] = correct / seen
    return record


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


def _save(cfg, epoch, model, objective, optimizer, result, best_state) -> None:
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
    }
    save_checkpoint(cfg.checkpoint_dir, tensors, meta)


def _resume(cfg, model, objective, optimizer, result, log) -> tuple[int, dict | None] | None:
    if not cfg.checkpoint_dir:
        return None
    found = load_checkpoint(cfg.checkpoint_dir)
    if found is None:
        return None
    tensors, meta = found
    model.load_state_dict(section("model", tensors))
    objective.load_state_dict(section("objective", tensors))
    optimizer.load_state_dict(unflatten_optimizer(section("optimizer", tensors), meta["optimizer"]))
    result.history = meta["history"]
    result.best_epoch = meta["best_epoch"]
    result.stopped = meta["stopped"]
    log.truncate_after(meta["epoch"] - 1)
    best = section("best", tensors) or None
    return meta["epoch"], best


def _finish(model: nn.Module, result: TrainResult, best_state: dict | None) -> TrainResult:
    if best_state is not None:
        model.load_state_dict(copy.deepcopy(best_state))
    model.eval()
    return result
