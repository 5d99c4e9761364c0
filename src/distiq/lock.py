"""One writer per output folder: a lock that a second run into the same folder meets at once.

Why: two runs writing one folder interleave checkpoints and stage records, and leave one run's model
under the other's key for every later run to reuse. The lock is ``fcntl.flock`` on a file held open
for the run's life, so the kernel releases it when the process ends in any way, ``kill -9``
included: a lock left by a dead process never blocks the next run. The file holds the holder's pid,
for the message; it is never deleted (deleting it would let a third run lock a fresh file while the
second still holds the old one).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from distiq.errors import DistiqError

LOCK_FILE = ".distiq.lock"


@contextlib.contextmanager
def hold_folder(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold ``folder``'s lock for the ``with`` block (creating the folder); yield the lock file.

    Raises:
        DistiqError: Another process holds it (the message names the folder and that pid), or the
            folder cannot be created or written.
    """
    folder = Path(folder)
    path = folder / LOCK_FILE
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise DistiqError(f"{folder}: cannot be used as an output folder ({e.strerror or e})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise DistiqError(
                f"{folder}: in use by another distiq run (pid {_holder(fd)}); "
                "wait for it to finish or choose another output folder"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        os.close(fd)  # releases the lock


def _holder(fd: int) -> str:
    """The pid written in the lock file (``unknown`` while the holder has not written it yet)."""
    try:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text if text.isdigit() else "unknown"
