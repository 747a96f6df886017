"""User-facing errors (the CLI prints their message on one line and exits 2) and the
one way an error message is cut to one line."""


class LinewatchError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits 2."""


class ConfigError(LinewatchError):
    """The configuration file or environment is invalid."""


class ModelError(LinewatchError):
    """A model folder is missing files or cannot be loaded."""


class ServiceUnavailable(LinewatchError):
    """Redis or the database cannot be reached."""


def one_line(message: object, limit: int = 300, last: bool = False) -> str:
    """One line of an error message, for a log line, a table cell or a stored reason:
    the first line (the last with `last`, e.g. a traceback's), cut to `limit` characters."""
    lines = str(message).strip().splitlines() or [""]
    return (lines[-1] if last else lines[0])[:limit]
