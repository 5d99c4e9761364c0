"""An offline English text corpus: the quotations of Debian's ``fortunes`` packages.

Why fortunes: sentence-embedding distillation needs a few thousand varied English texts that every
machine can have without a network at run time. Debian ships ~15,000 quotations, jokes and
definitions in ``fortunes`` and ``fortunes-min`` (``apt-get install fortunes fortunes-min``), as
plain-text files under ``/usr/share/games/fortunes`` where entries are separated by lines holding a
single ``%``. Nothing here downloads anything; a missing folder is one error line with the install
command.

Parsing: the overstrike sequences some files use for bold/underline (``c\\bc``, ``_\\bc``) are
removed, whitespace is collapsed to single spaces, and entries that are mostly not letters (ASCII
art) or very short are dropped. Duplicates (the same text in two files) are removed after
normalisation, so a text cannot land on both sides of a split.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from distiq.errors import DataError, DistiqError

FORTUNES_DIR = Path("/usr/share/games/fortunes")
INSTALL_HINT = "apt-get install fortunes fortunes-min"
#: Entries shorter than this (characters, after normalisation) carry too little to embed.
MIN_CHARS = 20
#: Entries whose share of letters is below this are drawings, not text.
MIN_LETTER_SHARE = 0.5

_OVERSTRIKE = re.compile(r".\x08")
_SPACES = re.compile(r"\s+")


def normalise(entry: str) -> str:
    """One fortune as one line: overstrikes removed, runs of whitespace collapsed."""
    return _SPACES.sub(" ", _OVERSTRIKE.sub("", entry)).strip()


def parse_fortunes(text: str) -> list[str]:
    """The entries of one fortune file (``%`` lines separate them), normalised, in file order."""
    entries = re.split(r"^%\s*$", text, flags=re.MULTILINE)
    return [e for e in (normalise(raw) for raw in entries) if e]


def _is_text(entry: str) -> bool:
    if len(entry) < MIN_CHARS:
        return False
    letters = sum(c.isalpha() for c in entry)
    return letters / len(entry) >= MIN_LETTER_SHARE


def dedupe(texts: Iterable[str]) -> list[str]:
    """``texts`` without repeats (case and whitespace ignored), first occurrence kept, order kept."""
    seen: set[str] = set()
    out = []
    for t in texts:
        key = normalise(t).casefold()
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out


def fortune_files(root: str | os.PathLike[str] = FORTUNES_DIR) -> list[Path]:
    """The fortune text files in ``root``, sorted (the ``.dat`` indexes and ``.u8`` links skipped)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no fortunes folder; install the corpus with '{INSTALL_HINT}'")
    files = sorted(p for p in root.iterdir() if p.is_file() and not p.is_symlink() and not p.suffix)
    if not files:
        raise DataError(f"{root}: holds no fortune files; install the corpus with '{INSTALL_HINT}'")
    return files


def load_fortunes(root: str | os.PathLike[str] = FORTUNES_DIR) -> list[str]:
    """Every distinct fortune under ``root`` as one normalised line, in a fixed order.

    The order is the sorted file names, then file order, so the list is the same on every machine
    with the same packages installed.

    Raises:
        DataError: ``root`` is missing or holds no fortune files; the message names it and the
            ``apt-get`` line that installs them.
    """
    texts: list[str] = []
    for path in fortune_files(root):
        raw = path.read_bytes().decode("utf-8", errors="replace")
        texts.extend(e for e in parse_fortunes(raw) if _is_text(e))
    return dedupe(texts)


def _rank(text: str, seed: int) -> bytes:
    return hashlib.sha256(f"{seed}\0{text}".encode()).digest()


def split_texts(texts: Sequence[str], held_out: int | float, *, seed: int = 0) -> tuple[list[str], list[str]]:
    """Split ``texts`` into ``(train, held_out)``, disjoint and deterministic.

    Each text's side is decided by a hash of ``(seed, text)``, not by its position, so the split does
    not change when the corpus is read in another order, and a text added later does not move
    others. Duplicates are removed first, so no text is on both sides.

    Args:
        texts: The corpus.
        held_out: Number of held-out texts, or a fraction of the (deduplicated) corpus in (0, 1).
        seed: Another seed gives another split.
    """
    unique = dedupe(texts)
    n = round(held_out * len(unique)) if isinstance(held_out, float) else int(held_out)
    if isinstance(held_out, float) and not 0 < held_out < 1:
        raise DistiqError(f"held_out: a fraction must be in (0, 1), got {held_out}")
    if not 0 <= n <= len(unique):
        raise DistiqError(f"held_out: expected 0..{len(unique)} texts, got {n}")
    order = sorted(range(len(unique)), key=lambda i: _rank(unique[i], seed))
    held = set(order[:n])
    train = [t for i, t in enumerate(unique) if i not in held]
    test = [unique[i] for i in sorted(held)]
    return train, test
