"""``--nproc N`` of the training commands: the command relaunched under ``torchrun`` in N processes.

Why a relaunch and not processes spawned inside: ``torchrun`` is how the same job runs across machines
(the documented line in the README), so the local case takes the same road; each process then runs
the command as usual, the engine joins the job (:mod:`distiq.engine.distributed`), and only rank 0
locks the output folder and writes its files.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from distiq.engine.distributed import launch_command
from distiq.errors import DistiqError

#: The arguments ``distiq`` was called with (set by :func:`distiq.cli.main.main`), for the relaunch.
ARGV: list[str] = []


class ProcessOptions(BaseModel):
    """How many processes a training command runs in."""

    model_config = ConfigDict(extra="forbid")
    nproc: int = Field(
        1, ge=1, description="Processes (torch.distributed, gloo on CPU): N > 1 relaunches under torchrun."
    )


def is_worker() -> bool:
    """A process of a ``torchrun`` job other than rank 0: it trains but writes nothing."""
    return int(os.environ.get("RANK", "0")) > 0


def relaunched(opts: ProcessOptions, out: Path) -> dict | None:
    """With ``--nproc N > 1`` outside a job: run this command in N processes and return rank 0's
    ``summary.json``; otherwise None (the caller runs the command itself).

    Raises:
        DistiqError: The job failed (a process's exit code, its messages are above).
    """
    if opts.nproc == 1 or "WORLD_SIZE" in os.environ:
        return None
    args = _without_nproc(ARGV)
    done = subprocess.run(launch_command(opts.nproc, args), check=False)
    if done.returncode != 0:
        raise DistiqError(f"--nproc {opts.nproc}: the job exited with code {done.returncode} (see above)")
    return json.loads((out / "summary.json").read_text())


def _without_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out
