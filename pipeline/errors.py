"""User-facing errors: the CLI prints their message on one line and exits 2."""


class LinewatchError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits 2."""


class ConfigError(LinewatchError):
    """The configuration file or environment is invalid."""


class ModelError(LinewatchError):
    """A model folder is missing files or cannot be loaded."""


class ServiceUnavailable(LinewatchError):
    """Redis or the database cannot be reached."""
