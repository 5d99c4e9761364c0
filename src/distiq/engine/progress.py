"""Progress of long work on stderr, and a JSONL metrics log.

On a terminal progress is a rich bar. Elsewhere (a log file, ``make demo | tee``, CI) rich hides its
bar, so a run would print nothing for minutes; there the epoch loop prints one plain line per epoch
instead, which is what a log wants. ``progress=False`` prints nothing (tests).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Literal

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from distiq.io import write_bytes_atomic


def make_progress(enabled: bool | None = None) -> Progress:
    """A progress display; ``enabled=None`` means "only if stderr is a terminal"."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
        transient=False,
    )


class EpochProgress:
    """Progress of an epoch loop: a rich bar on a terminal, one plain line per epoch elsewhere.

    Args:
        description: What is running (e.g. the stage folder), first on every line.
        total: Epochs in all.
        completed: Epochs already done (a resumed run).
        enabled: True: always the bar; False: nothing; None: the bar if stderr is a terminal,
            else plain lines.
    """

    def __init__(self, description: str, total: int, completed: int = 0, enabled: bool | None = None) -> None:
        self.description, self.total, self.done = description, total, completed
        self.mode: Literal["bar", "lines", "off"]
        if enabled is None:
            self.mode = "bar" if sys.stderr.isatty() else "lines"
        else:
            self.mode = "bar" if enabled else "off"
        self._bar = make_progress(True) if self.mode == "bar" else None
        self._task = None
        self._since = time.perf_counter()

    def __enter__(self) -> EpochProgress:
        if self._bar is not None:
            self._bar.__enter__()
            self._task = self._bar.add_task(self.description, total=self.total, completed=self.done, info="")
        self._since = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def epoch_done(self, info: str) -> None:
        """One more epoch finished; ``info`` summarises it (losses, accuracies)."""
        now = time.perf_counter()
        seconds, self._since = now - self._since, now
        self.done += 1
        if self._bar is not None:
            self._bar.update(self._task, advance=1, info=info)
        elif self.mode == "lines":
            line = f"{self.description}: epoch {self.done}/{self.total}  {info}  {seconds:.1f} s"
            # sys.stderr looked up now, not at import: a redirected or captured stream gets the line
            print(line, file=sys.stderr, flush=True)


def _epoch_of(record: dict) -> int | float:
    epoch = record.get("epoch", 0)
    return epoch if isinstance(epoch, int) else math.inf  # a record without a sane epoch is dropped


class MetricsLog:
    """Appends one JSON object per line; each line is flushed and fsynced when written.

    A process killed mid-write leaves a partial last line. Reading skips it and :meth:`repair`
    removes it, so one interrupted write never blocks a resume (nor glues the next record onto it).
    """

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = Path(path) if path else None
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict) -> None:
        if self.path is None:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def records(self) -> list[dict]:
        """The complete records in the log (a partial or garbled line is skipped)."""
        if self.path is None or not self.path.exists():
            return []
        found = []
        for line in self.path.read_bytes().decode(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                found.append(record)
        return found

    def truncate_after(self, epoch: int) -> None:
        """Keep the complete records of epochs up to ``epoch``: later ones were written by a run that
        was then interrupted, and a broken line by one killed while writing it."""
        if self.path is None or not self.path.exists():
            return
        self._rewrite([r for r in self.records() if _epoch_of(r) <= epoch])

    def repair(self) -> None:
        """Drop broken lines (a write cut short), keeping every complete record."""
        if self.path is None or not self.path.exists():
            return
        text = self.path.read_bytes()
        if not text or (text.endswith(b"\n") and len(self.records()) == text.count(b"\n")):
            return
        self._rewrite(self.records())

    def _rewrite(self, records: list[dict]) -> None:
        """Replace the log in one rename, so a kill now leaves the old log or the new one."""
        write_bytes_atomic(self.path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode())
