"""Errors that mean "the user's input is wrong" (exit code 2 on the command line)."""


class DistiqError(ValueError):
    """Bad input: a file, field, option or layer that is not what distiq expected.

    The message names the offending thing and what was expected, in one line, because the command
    line prints it as is. Subclassing ``ValueError`` keeps ``except ValueError`` callers working.
    """


class DataError(DistiqError):
    """A data file is missing, truncated or corrupt; the message contains its path."""


def validation_message(err: object, source: str) -> str:
    """One line from a pydantic ``ValidationError``: each bad key's dotted path and what was expected."""
    parts = []
    for e in err.errors():  # type: ignore[attr-defined]
        key = ".".join(_printable(p) for p in e["loc"]) or "(top level)"
        got = "" if e["type"] == "missing" else f" (got {e['input']!r})"
        message = e["msg"].removeprefix("Value error, ")  # our validators' own words need no label
        parts.append(f"{key}: {message}{got}")
    return f"{source}: " + "; ".join(parts)


def _printable(part: object) -> str:
    """A key as written, or quoted when it holds a newline or other control character (a YAML key can),
    so the message stays one line."""
    text = str(part)
    return text if text.isprintable() else repr(text)
