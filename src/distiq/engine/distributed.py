"""Training spread over processes with ``torch.distributed`` (gloo on CPU, NCCL on GPU).

How the one training engine runs under ``torchrun`` (or ``distiq distill --nproc N``):

- **Same batches as one process.** Every rank draws the same shuffled order (the seeded generator is
  not per rank) and takes its share of each global batch (``rank::world``). Each rank's loss is scaled
  by its share of the batch before ``backward``, and the gradients of every trained tensor (the
  model's and the objective's adapters) are summed across ranks: this is DistributedDataParallel's
  gradient averaging, exact for uneven shards too, so N processes reach the weights one process reaches
  on the same global batch, within float rounding. BatchNorm layers see their rank's share of a batch.
- **Rank 0 writes** (checkpoints, the metrics log, progress, teacher-logit caches); the others wait at
  a barrier and then read the same files, so a rerun after a kill of any rank resumes every rank from
  the same checkpoint, exactly.
- **Per-rank seeding**: rank ``r`` seeds torch's global generator with the epoch seed plus ``r``
  (dropout masks differ across ranks, as in DDP); rank 0's equals a single process's.
- **Offline teacher logits** are computed per shard of the transfer set and gathered.

A single process (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) never imports or initialises anything here
beyond the checks.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys
from collections.abc import Sequence

import torch
import torch.distributed as dist

from distiq.errors import DistiqError


def world_size() -> int:
    """Processes in the job (1 outside ``torchrun``)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 outside ``torchrun``)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """Whether this process writes files and logs (rank 0)."""
    return rank() == 0


def init_from_env() -> bool:
    """Join the job ``torchrun`` started (``WORLD_SIZE`` > 1 in the environment); True when distributed.

    Gloo on CPU, NCCL when CUDA is available. Idempotent.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_initialized():
        _import_group_holders()
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
        atexit.register(_leave_together)
    return True


def _import_group_holders() -> None:
    """Import, before the group exists, the torch modules that would keep it alive for ever.

    Why: the first ``optimizer.step()`` imports ``torch._dynamo``, which imports FSDP, whose functions
    take ``dist.group.WORLD`` as a default argument: imported after ``init_process_group`` they hold
    the group, ``destroy_process_group`` cannot free it, and its gloo threads still run while the
    interpreter shuts down, where one rank in about ten died of SIGABRT ("terminate called without an
    active exception") after its work was done. Imported first, their defaults hold ``None``.
    """
    import torch._dynamo  # noqa: F401


def _leave_together() -> None:
    """At exit, wait for every rank, then close the group.

    Why: a group left open is torn down by interpreter shutdown, with its gloo threads still running
    (see :func:`_import_group_holders` for what else kept them alive). Its threads are joined when its
    last reference goes; one held in a reference cycle would go only at shutdown, so the cycles are
    collected here. A rank whose peer is already gone (killed) cannot wait for it and just leaves.
    """
    if not dist.is_initialized():
        return
    try:
        dist.barrier()
    except RuntimeError:  # a peer is gone: nothing to wait for
        pass
    dist.destroy_process_group()
    gc.collect()


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def shard(batch_index: torch.Tensor) -> torch.Tensor:
    """This rank's rows of a global batch: positions ``rank, rank + world, ...``."""
    return batch_index[rank() :: world_size()]


def all_reduce_gradients(params: Sequence[torch.nn.Parameter]) -> None:
    """Sum each parameter's gradient over the ranks (a rank without one contributes zeros)."""
    if world_size() == 1:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)


def all_reduce_sums(values: dict[str, float]) -> dict[str, float]:
    """The element-wise sum of the ranks' ``values`` (same keys on every rank)."""
    if world_size() == 1:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return dict(zip(keys, t.tolist(), strict=True))


def gather_rows(part: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """Rows computed per rank (``part[i]`` is row ``index[i]``) gathered into an ``[n, ...]`` tensor
    on every rank."""
    if world_size() == 1:
        return part
    parts: list = [None] * world_size()
    dist.all_gather_object(parts, (index, part))
    out = torch.empty((n, *part.shape[1:]), dtype=part.dtype)
    for idx, rows in parts:
        out[idx] = rows
    return out


def launch_command(nproc: int, argv: Sequence[str]) -> list[str]:
    """The ``torchrun`` command line that runs ``distiq <argv>`` in ``nproc`` local processes.

    Raises:
        DistiqError: ``nproc`` < 1.
    """
    if nproc < 1:
        raise DistiqError(f"--nproc: expected at least 1 process, got {nproc}")
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
        "-m", "distiq", *argv,
    ]  # fmt: skip


__all__ = [
    "all_reduce_gradients", "all_reduce_sums", "barrier", "gather_rows", "init_from_env", "is_main",
    "launch_command", "rank", "shard", "world_size",
]  # fmt: skip
