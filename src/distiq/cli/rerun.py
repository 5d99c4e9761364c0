"""What a training command's output folder was made from, and what a rerun into it does.

Why: ``--out a`` run twice must not hand back the first run's model under the second run's options.
The checkpoint in the folder records the training options and the command's *inputs* (its other
options, the data, and the sha256 of every input file's contents); a rerun with the same resumes
bit-exactly, one with others is refused with one line saying what changed, unless the user says
``--force`` (start fresh) or ``--resume`` (continue that checkpoint with the new options). One
process at a time may write a folder (:func:`distiq.lock.hold_folder`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from distiq.cli.processes import is_worker
from distiq.engine.config import TrainConfig
from distiq.engine.train import InputsChanged, Rerun
from distiq.errors import DistiqError
from distiq.fingerprint import data_fingerprint, file_sha256
from distiq.lock import hold_folder

# options that say where results go and what is shown, or which code may load: not inputs
_NOT_INPUTS = {"out", "progress", "force", "resume", "model_code", "data", "data_root"}


class RerunOptions(BaseModel):
    """What to do when ``--out`` already holds a checkpoint."""

    model_config = ConfigDict(extra="forbid")
    force: bool = Field(
        False,
        description="Discard the checkpoint in --out and train from scratch (needed when --out "
        "holds training of other options, data or input files; without it such a rerun is refused).",
    )
    resume: bool = Field(
        False,
        description="Continue the checkpoint in --out with these options although options, data "
        "or input files changed. Same inputs always resume, bit-exactly, without either flag.",
    )


def rerun_mode(opts: RerunOptions) -> Rerun:
    """The engine's ``rerun`` for ``--force``/``--resume``."""
    if opts.force and opts.resume:
        raise DistiqError("--force and --resume: give one (start fresh, or continue the checkpoint)")
    return "fresh" if opts.force else "resume" if opts.resume else "auto"


def training_inputs(opts: BaseModel, files: dict[str, Path] | None = None) -> dict[str, Any]:
    """A command's inputs beyond the training options: its other options, the data and the files.

    Args:
        opts: The command's options (``data`` and ``data_root`` among them).
        files: Input files by option name (``{"teacher": path}``); each is recorded with the sha256
            of its contents, so a file replaced at the same path is a different input.
    """
    training = set(TrainConfig.model_fields)
    dumped = opts.model_dump(mode="json")
    inputs = {k: v for k, v in dumped.items() if k not in training and k not in _NOT_INPUTS}
    inputs["data"] = data_fingerprint(dumped["data"], dumped.get("data_root"))
    for name, path in (files or {}).items():
        inputs[name] = {"path": str(path), "sha256": file_sha256(path)}
    return inputs


def inputs_key(config: dict, inputs: dict) -> str:
    """A short hash of the training options and the inputs (what ``summary.json`` records)."""
    blob = json.dumps({"config": config, "inputs": inputs}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@contextlib.contextmanager
def output_folder(out: Path) -> Iterator[None]:
    """Hold ``out``'s lock while a command writes it; say a refused rerun in the command's terms.
    A ``--nproc`` job's other ranks write nothing and run under rank 0's lock."""
    with contextlib.nullcontext() if is_worker() else hold_folder(out):
        try:
            yield
        except InputsChanged as e:
            raise DistiqError(
                f"{out}: holds training of other inputs ({'; '.join(e.changes)}); pass --force to "
                "start fresh, or --resume to continue its checkpoint with these options"
            ) from None
