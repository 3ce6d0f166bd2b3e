"""Errors a user can act on, and what the command's exit status says about a run.

Anything raised as a ``HybridError`` is printed by the CLI as one line (no traceback) and turns
into exit status 2, so the message itself must name the file, catchment or config key and say
what to do. Per-catchment problems are not exceptions that stop a run: they become ``skipped``
or ``failed`` rows of the summary, and a run that finished with failures exits with 3.
"""

import re

#: ``user:password@`` inside a URL (a store URL, an endpoint), as it must never be printed
_CREDENTIALS_IN_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")


def redact(text: str) -> str:
    """``text`` with the credentials of every URL in it replaced by ``***``: applied to every
    error line, log line and traceback the package prints."""
    return _CREDENTIALS_IN_URL.sub(lambda m: f"{m.group('scheme')}***@", text)


#: exit statuses of the ``hybrid`` command
EXIT_OK = 0
EXIT_ERROR = 2          # bad config, data or store: nothing useful could run
EXIT_FAILURES = 3       # the run finished, but some catchments failed (see the summary)
EXIT_INTERRUPTED = 130


class HybridError(Exception):
    """Base class for problems with the user's input rather than bugs in the code."""


class ConfigError(HybridError):
    """The run configuration is invalid (unknown key, wrong type, bad value)."""


class DataError(HybridError):
    """A dataset file or catchment is missing or malformed."""


class StoreError(HybridError):
    """The object store is unreachable or holds something unexpected."""


class CorruptPartition(StoreError):
    """A catchment's partition exists but cannot be read (truncated copy, bad disk).

    Raised inside per-catchment work; the runner records the catchment as failed and deletes the
    partition, so the next run rebuilds it instead of failing on it forever.
    """

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key


class SkipCatchment(Exception):
    """A catchment that cannot be used (no data in a period, no valid window): recorded with its
    reason as ``status = skipped``; the run goes on and still exits 0."""

    def __init__(self, gauge_id: str, reason: str) -> None:
        super().__init__(f"catchment {gauge_id}: {reason}")
        self.gauge_id = gauge_id
        self.reason = reason

    def __reduce__(self):  # survive pickling through Ray
        return (SkipCatchment, (self.gauge_id, self.reason))
