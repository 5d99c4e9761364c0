"""Gradual pruning (Zhu & Gupta, 2017) and keeping masks applied through any training loop.

Zhu & Gupta, "To prune, or not to prune" (2017), raise the sparsity from ``s_i`` to ``s_f`` over ``n``
pruning steps spaced ``Δt`` training steps apart, starting at step ``t0``:

    s_t = s_f + (s_i - s_f) · (1 - (t - t0) / (n·Δt))³     for t in {t0, t0 + Δt, ..., t0 + n·Δt}

The cubic prunes fast while the network is redundant and slowly near the target, giving the remaining
weights time to recover between steps. Between pruning steps the sparsity stays at the last value.

Why an optimiser hook: the training loop (:func:`distiq.engine.train`, and :func:`distiq.distill` on top
of it) owns its optimiser, and pruning must not need its own copy of that loop. A global optimiser
step post-hook (``torch.optim.optimizer.register_optimizer_step_post_hook``), active only inside
:func:`keep_masks` and acting only on optimisers that hold the masked weights, runs after every step:
it advances the schedule and re-applies the masks.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from distiq.errors import DistiqError

from .magnitude import (
    attach_masks_,
    check_amount,
    effective_weight,
    magnitude_masks,
    masked_layers,
    prunable_layers,
    reapply_masks_,
)


def cubic_sparsity(step: int, final: float, initial: float, begin: int, steps: int, every: int) -> float:
    """Zhu & Gupta's sparsity after ``step`` training steps (see module docstring).

    Args:
        step: Training steps done, ``t``.
        final: Target sparsity ``s_f``.
        initial: Sparsity of the first pruning step ``s_i``.
        begin: Step ``t0`` of the first pruning step; the model is dense before it.
        steps: Number of pruning steps ``n`` after the first.
        every: Training steps between pruning steps ``Δt``.
    """
    if step < begin:
        return 0.0
    if steps <= 0:
        return final
    k = min((step - begin) // every, steps)  # pruning steps done since t0
    return final + (initial - final) * (1.0 - k / steps) ** 3


@dataclass
class CubicSchedule:
    """The gradual schedule's parameters, checked when built.

    Attributes:
        final: Target sparsity ``s_f`` in [0, 1).
        initial: Sparsity ``s_i`` at the first pruning step, in [0, final].
        begin: Training step ``t0`` of the first pruning step.
        steps: Number of pruning steps ``n`` (the ramp ends at ``begin + steps * every``).
        every: Training steps ``Δt`` between pruning steps.
    """

    final: float
    initial: float = 0.0
    begin: int = 0
    steps: int = 50
    every: int = 1

    def __post_init__(self) -> None:
        check_amount(self.final, "final sparsity")
        if not 0.0 <= self.initial <= self.final:
            raise DistiqError(
                f"initial sparsity: expected a value in [0, final={self.final}], got {self.initial}"
            )
        if self.begin < 0 or self.steps < 0 or self.every < 1:
            raise DistiqError(
                "schedule: need begin >= 0, steps >= 0, every >= 1; "
                f"got {self.begin}, {self.steps}, {self.every}"
            )

    @classmethod
    def over(cls, final: float, total_steps: int, ramp: float = 0.6, prunes: int = 50) -> CubicSchedule:
        """Ramp from 0 to ``final`` over the first ``ramp`` fraction of ``total_steps``, in ``prunes`` steps.

        The rest of training fine-tunes at the final sparsity, which is where most accuracy returns.
        """
        if not 0.0 < ramp <= 1.0:
            raise DistiqError(f"ramp: expected a fraction in (0, 1], got {ramp}")
        span = max(1, math.floor(ramp * total_steps))
        every = max(1, span // max(prunes, 1))
        return cls(final=final, steps=max(1, span // every), every=every)

    @property
    def end(self) -> int:
        """The training step at which the final sparsity is reached."""
        return self.begin + self.steps * self.every

    def sparsity_at(self, step: int) -> float:
        """Sparsity after ``step`` training steps."""
        return cubic_sparsity(step, self.final, self.initial, self.begin, self.steps, self.every)


class MaskKeeper:
    """Re-applies a model's masks after each optimiser step and, if given a schedule, prunes gradually.

    Args:
        model: A model whose layers carry masks, or (with ``schedule``) will.
        schedule: Gradual schedule; ``None`` keeps the current masks fixed.
        scope: ``"global"`` or ``"layer"`` threshold for the gradual steps.
        exclude: Layer paths the gradual steps must not prune.
    """

    def __init__(
        self,
        model: nn.Module,
        schedule: CubicSchedule | None = None,
        scope: str = "global",
        exclude: tuple[str, ...] = (),
    ) -> None:
        self.model = model
        self.schedule = schedule
        self.scope = scope
        self.layers = prunable_layers(model, exclude) if schedule is not None else masked_layers(model)
        self.step = 0
        self.sparsity = 0.0
        self._handle = None
        if schedule is not None:
            self._prune_to(schedule.sparsity_at(0))
        self._ids = {id(m.weight_orig) for m in masked_layers(model).values()}

    def _prune_to(self, sparsity: float) -> None:
        if sparsity <= self.sparsity and masked_layers(self.model):
            return
        weights = {n: effective_weight(m) for n, m in self.layers.items()}
        attach_masks_(self.model, magnitude_masks(weights, sparsity, self.scope))
        self.sparsity = sparsity

    def _owns(self, optimizer) -> bool:
        return any(id(p) in self._ids for g in optimizer.param_groups for p in g["params"])

    def after_step(self, optimizer, args, kwargs) -> None:
        """The optimiser post-hook: count the step, prune if the schedule says so, re-apply masks."""
        if not self._owns(optimizer):
            return
        self.step += 1
        if self.schedule is not None:
            self._prune_to(self.schedule.sparsity_at(self.step))
        reapply_masks_(self.model)

    def __enter__(self) -> MaskKeeper:
        self._handle = register_optimizer_step_post_hook(self.after_step)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


@contextlib.contextmanager
def keep_masks(
    model: nn.Module,
    schedule: CubicSchedule | None = None,
    scope: str = "global",
    exclude: tuple[str, ...] = (),
) -> Iterator[MaskKeeper]:
    """Within the block, every optimiser step on ``model`` is followed by the schedule and the masks."""
    with MaskKeeper(model, schedule, scope, exclude) as keeper:
        yield keeper
