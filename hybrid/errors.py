"""Errors a user can act on.

Anything raised as a ``HybridError`` is printed by the CLI as one line (no traceback) and turns
into a non-zero exit status, so the message itself must name the file, catchment or config key.
"""


class HybridError(Exception):
    """Base class for problems with the user's input rather than bugs in the code."""


class ConfigError(HybridError):
    """The run configuration is invalid (unknown key, wrong type, bad value)."""


class DataError(HybridError):
    """A dataset file or catchment is missing or malformed."""


class StoreError(HybridError):
    """The object store holds something unexpected (missing checkpoint, foreign run)."""
