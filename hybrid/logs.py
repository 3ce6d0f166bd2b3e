"""Logging for every command: plain lines on stderr, and the same lines in the run's ``run.log``.

Lines go to stderr (a terminal or a ``ray job submit`` log alike) as they happen. A run keeps its
own record: each command appends what it logged to ``<run>/run.log`` in the store, with
timestamps, when a stage ends and when the command exits, so a run on S3 carries its history
without a local file. A store that cannot be written (a read-only copy of a finished run) loses
only the log record, with one warning.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
import threading

from hybrid.store import layout

LOGGER = "hybrid"


#: pass as ``extra`` for a line meant for run.log only (a recap of what a remote worker
#: already printed live)
RUN_LOG_ONLY = {"run_log_only": True}


class _Stderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (pytest's capture, a redirected job)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.addFilter(lambda record: not getattr(record, "run_log_only", False))

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # logging assigns it in __init__
        pass


class RunLog(logging.Handler):
    """Collects this command's lines and appends them to ``run.log`` of one run folder."""

    def __init__(self, store) -> None:
        super().__init__(logging.INFO)
        self.store = store
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._failed = False

    def emit(self, record: logging.LogRecord) -> None:
        stamp = dt.datetime.fromtimestamp(record.created).isoformat(sep=" ", timespec="seconds")
        with self._lock:
            self._lines.extend(f"{stamp} {line}" for line in record.getMessage().splitlines())

    def flush(self) -> None:
        from hybrid.errors import StoreError

        with self._lock:
            if not self._lines or self._failed:
                return
            lines, self._lines = self._lines, []
        try:
            previous = self.store.read_text(layout.RUN_LOG) \
                if self.store.exists(layout.RUN_LOG) else ""
            self.store.write_text(layout.RUN_LOG, previous + "\n".join(lines) + "\n")
        except StoreError as err:
            self._failed = True
            print(f"warning: run.log not written ({err})", file=sys.stderr)


_console_lock = threading.Lock()


def _redacted(record: logging.LogRecord) -> bool:
    """No log line, on stderr or in run.log, carries a URL's credentials."""
    from hybrid.errors import redact

    message = record.getMessage()
    clean = redact(message)
    if clean != message:
        record.msg, record.args = clean, ()
    return True


def logger() -> logging.Logger:
    """The package logger, with its stderr handler installed once."""
    log = logging.getLogger(LOGGER)
    with _console_lock:
        if _redacted not in log.filters:
            log.addFilter(_redacted)
        if not any(isinstance(h, _Stderr) for h in log.handlers):
            handler = _Stderr()
            handler.setFormatter(logging.Formatter("%(message)s"))
            log.addHandler(handler)
            log.setLevel(logging.INFO)
            log.propagate = False
    return log


def attach_run_log(store) -> RunLog:
    """Record this command's lines for ``store``'s run folder (one handler per run)."""
    log = logger()
    for handler in log.handlers:
        if isinstance(handler, RunLog) and handler.store.url == store.url:
            return handler
    handler = RunLog(store)
    log.addHandler(handler)
    return handler


def flush_run_logs() -> None:
    for handler in logging.getLogger(LOGGER).handlers:
        if isinstance(handler, RunLog):
            handler.flush()


def detach_run_logs() -> None:
    log = logging.getLogger(LOGGER)
    for handler in list(log.handlers):
        if isinstance(handler, RunLog):
            handler.flush()
            log.removeHandler(handler)
