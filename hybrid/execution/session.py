"""One command on one run: its store, its log, its executor, and what its stages decided.

A session that writes holds the run's lock (``hybrid.store.lock``) from before its first write
until it closes, also on an error or Ctrl-C: one writer per run.

The executor starts on first use, so a rerun with nothing left to do never starts Ray, and
``release_hosts`` gives the encoder's GPU and CPUs back before the decoders need them. Which
executor runs the work is the config's choice (``resources.executor``); Ray is imported only
when it is chosen.
"""

from __future__ import annotations

import sys
import weakref
from dataclasses import dataclass, field

from hybrid.config import Config
from hybrid.encoder.base_run import resolve as resolve_base_run
from hybrid.execution.executors import Executor, SerialExecutor
from hybrid.execution.runner import StageResult
from hybrid.logs import attach_run_log, detach_run_logs
from hybrid.store.lock import RunLock, acquire
from hybrid.store.runs import open_run, record_time, require_run, run_store
from hybrid.store.storage import Store


@dataclass
class Session:
    cfg: Config
    store: Store
    _executor: Executor | None = None
    #: what earlier stages of this command decided, for the later ones
    results: dict[str, StageResult] = field(default_factory=dict)
    #: the run's lock, held by a writing session
    lock: RunLock | None = None
    _release: weakref.finalize | None = None

    @classmethod
    def open(cls, cfg: Config, write: bool = True, existing: bool = False,
             break_lock: bool = False, command: str = "") -> "Session":
        """``existing``: the command serves or reads a run that must already be there (checked
        before the lock, so a mistyped run id leaves nothing behind)."""
        cfg = resolve_base_run(cfg)  # a reused encoder's settings are part of the run's config
        command = command or " ".join(["hybrid", *sys.argv[1:2]])
        if existing:  # once, here: open_run need not list the store again
            require_run(cfg, run_store(cfg))
        lock = acquire(run_store(cfg), command, break_lock) if write else None
        try:
            store = open_run(cfg, write=write)
            if write:  # a read-only command leaves no trace in the run, not even in run.log
                attach_run_log(store)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        session = cls(cfg, store, lock=lock)
        if lock is not None:
            # a stage called on its own never closes the session it opened: its lock goes
            # when the session does (at most once, whichever comes first)
            session._release = weakref.finalize(session, lock.release)
        return session

    @classmethod
    def ensure(cls, cfg: Config, session: "Session | None", write: bool = True,
               existing: bool = False) -> "Session":
        """The command's session, or a new one for a stage called on its own."""
        return session if session is not None else cls.open(cfg, write, existing)

    @property
    def executor(self) -> Executor:
        """Started on first use: a rerun with nothing left to do never starts Ray."""
        return _Lazy(self)

    def real_executor(self) -> Executor:
        if self._executor is None:
            self._executor = executor_for(self.cfg, self.store)
        return self._executor

    def timed(self, stage: str, result: StageResult, **extra) -> None:
        """Record a pass's wall time in the run's timings (only when it did some work)."""
        if result.ran:
            record_time(self.store, stage, result.seconds, catchments=len(result.ran),
                        failed=len(result.failed), **extra)

    def release_hosts(self) -> None:
        if self._executor is not None:
            self._executor.close()

    def close(self) -> None:
        try:
            self.release_hosts()
            detach_run_logs()
        finally:
            if self._release is not None:
                self._release()


class _Lazy:
    def __init__(self, session: Session) -> None:
        self.session = session

    def map(self, *args, **kwargs):
        return self.session.real_executor().map(*args, **kwargs)

    def call(self, *args, **kwargs):
        return self.session.real_executor().call(*args, **kwargs)

    def close(self) -> None:
        self.session.release_hosts()


def executor_for(cfg: Config, store: Store) -> Executor:
    if cfg.resources.executor == "local":
        return SerialExecutor()
    from hybrid.execution.ray_executor import RayExecutor  # the only place Ray comes in

    return RayExecutor(cfg, store)


def joins_cluster(cfg: Config) -> bool:
    """Whether the run goes to an existing cluster (which may have several nodes)."""
    return cfg.resources.executor == "ray" and cfg.resources.cluster_address() is not None
