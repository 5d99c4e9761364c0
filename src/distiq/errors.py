"""Errors that mean "the user's input is wrong" (exit code 2 on the command line)."""


class DistiqError(ValueError):
    """Bad input: a file, field, option or layer that is not what distiq expected.

    The message names the offending thing and what was expected, in one line, because the command
    line prints it as is. Subclassing ``ValueError`` keeps ``except ValueError`` callers working.
    """


class DataError(DistiqError):
    """A data file is missing, truncated or corrupt; the message contains its path."""
