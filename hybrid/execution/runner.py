"""The one per-catchment loop: what is done, what to do, what failed, for every stage.

A stage that works catchment by catchment is a ``CatchmentStage``: a plain function
``work(context, state, gauge_id)`` that writes one catchment's partition(s) and returns what it
wrote, an optional ``setup(context)`` that builds per-worker state once (a loaded model), and
the folder whose partitions say a catchment is done. ``run_stage`` then

1. checks the folder (``hybrid.store.partitions.verify``): intact partitions are kept, damaged or
   missing ones are redone with one log line each;
2. hands the rest to an *executor*: ``SerialExecutor`` and ``ThreadExecutor`` here, the Ray
   executor in ``hybrid.execution.ray_executor`` (the only module that imports Ray);
3. applies one failure policy: a catchment that raises is recorded with its one-line error
   (``SkipCatchment`` as skipped), never dropped; a damaged input partition is deleted so the
   next run rebuilds it; errors about the config or the store itself stop the stage;
4. writes the folder's manifest last.

Every stage therefore behaves the same on a laptop without Ray, in a test, and on a cluster.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Protocol

from hybrid.config import Config, config_from_dict
from hybrid.errors import ConfigError, CorruptPartition, SkipCatchment, StoreError
from hybrid.logs import flush_run_logs, logger
from hybrid.progress import Progress
from hybrid.store import partitions
from hybrid.store.storage import Store

log = logger()

Work = Callable[["Context", dict, str], dict]
Setup = Callable[["Context"], dict]


@dataclass
class Context:
    """Everything a unit of work needs, small and picklable: remote workers rebuild the store
    and config from it instead of re-reading ``config.yml`` (which would also miss credentials).

    ``extra`` carries per-stage facts decided on the driver (the catchment split, a base run).
    """

    store_url: str
    storage_options: dict[str, Any]
    config: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, store: Store, cfg: Config, **extra: Any) -> "Context":
        return cls(store.url, dict(store.storage_options), cfg.to_dict(), extra)

    @functools.cached_property
    def store(self) -> Store:
        return Store(self.store_url, self.storage_options)

    @functools.cached_property
    def cfg(self) -> Config:
        return config_from_dict(self.config)

    def __getstate__(self) -> dict:
        # the cached store holds an fsspec filesystem (sockets, locks): rebuild it remotely
        return {k: v for k, v in self.__dict__.items() if k not in ("store", "cfg")}


#: what a unit of work needs, in words the executor turns into a reservation: "encoder" (the
#: LSTM: a GPU when there is one) or "worker" (a decoder or baseline: CPUs)
ROLES = ("encoder", "worker")


@dataclass
class CatchmentStage:
    name: str
    #: the folder whose partition marks a catchment as done for this stage
    folder: str
    work: Work
    #: the stamp every partition of ``folder`` carries (config hash and lineage)
    stamp: dict[str, str]
    setup: Setup | None = None
    role: str = "worker"
    #: verb for the progress line and log ("encode", "decode" ...)
    verb: str = ""


class Executor(Protocol):
    """Runs ``work`` for each item and yields ``(item, result, error)`` as items finish."""

    def map(self, work: Work, setup: Setup | None, context: Context, items: list[str],
            role: str) -> Iterator[tuple[str, Any, BaseException | None]]: ...

    def call(self, fn: Callable[[Context], Any], context: Context,
             role: str) -> tuple[Any, dict]: ...

    def close(self) -> None: ...


class SerialExecutor:
    """In this process, one item after another (tests, debugging, a single core)."""

    def map(self, work, setup, context, items, role):
        state = {"node_id": "local", **(setup(context) if setup else {})}
        for item in items:
            try:
                yield item, work(context, state, item), None
            except Exception as err:  # noqa: BLE001 - the runner's failure policy decides
                yield item, None, err

    def call(self, fn, context, role):
        return fn(context), {"node_id": "local"}

    def close(self) -> None:
        pass


class ThreadExecutor(SerialExecutor):
    """Threads in this process, for work that waits on files (``prepare`` reading a dataset)."""

    def __init__(self, threads: int) -> None:
        self.threads = max(1, threads)

    def map(self, work, setup, context, items, role):
        state = {"node_id": "local", **(setup(context) if setup else {})}
        items = iter(items)
        with ThreadPoolExecutor(self.threads) as pool:
            pending = {}
            while True:
                while len(pending) < 2 * self.threads:
                    item = next(items, None)
                    if item is None:
                        break
                    pending[pool.submit(work, context, state, item)] = item
                if not pending:
                    return
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    item = pending.pop(future)
                    error = future.exception()
                    yield item, (None if error else future.result()), error


@dataclass
class StageResult:
    """What a stage pass ended with, for the next stage and for the summary."""

    stage: str
    #: gauge id -> the work's result (this pass) or the partition record (done before)
    done: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    #: gauge ids worked on in this pass
    ran: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def records(self, folder: str) -> dict[str, dict[str, int]]:
        """The partition records of ``folder`` for every done catchment."""
        out = {}
        for gauge_id, value in self.done.items():
            record = (value.get("records") or {}).get(folder) if isinstance(value, dict) \
                and "records" in value else value
            if isinstance(record, dict) and "bytes" in record:
                out[gauge_id] = dict(record)
        return out


def run_stage(stage: CatchmentStage, context: Context, gauges: Iterable[str],
              executor: Executor, known: dict[str, dict[str, int]] | None = None,
              force: Iterable[str] = (), manifest_extra: dict[str, Any] | None = None,
              write_manifest: bool = True) -> StageResult:
    """Bring ``stage``'s folder up to date for ``gauges``; see the module docstring."""
    store = context.store
    gauges = list(dict.fromkeys(gauges))
    forced = set(force)
    verdict = partitions.verify(store, stage.folder, gauges, stage.stamp, known=known)
    for gauge_id in forced & set(verdict.done):
        verdict.done.pop(gauge_id)
        verdict.redo.setdefault(gauge_id, "its inputs changed")
        verdict.todo.append(gauge_id)
    wanted = set(verdict.todo)
    todo = [g for g in gauges if g in wanted]
    verb = stage.verb or stage.name
    for gauge_id, reason in verdict.redo.items():
        log.info(f"{stage.name}: redoing catchment {gauge_id}: {reason}")
    log.info(f"{stage.name}: {len(todo)} of {len(gauges)} catchments to {verb} "
             f"({len(verdict.done)} already done"
             + (f", {len(verdict.skipped)} skipped before" if verdict.skipped else "") + ")")
    result = StageResult(stage.name, done=dict(verdict.done), skipped=dict(verdict.skipped),
                         ran=todo)
    started = time.monotonic()
    if todo:
        with Progress(len(todo), stage.name) as bar:
            for gauge_id, value, error in executor.map(stage.work, stage.setup, context, todo,
                                                       stage.role):
                outcome = _apply_policy(store, stage, gauge_id, value, error)
                if outcome == "done":
                    result.done[gauge_id] = value
                elif outcome.startswith("skipped:"):
                    result.skipped[gauge_id] = outcome[len("skipped:"):]
                else:
                    result.failed[gauge_id] = outcome[len("failed:"):]
                bar.update(failed=int(outcome.startswith("failed:")))
    result.seconds = time.monotonic() - started
    if write_manifest:
        partitions.write_manifest(store, stage.folder, stage.name, stage.stamp,
                                  result.records(stage.folder), result.skipped, result.failed,
                                  **(manifest_extra or {}))
    flush_run_logs()
    return result


def _apply_policy(store: Store, stage: CatchmentStage, gauge_id: str, value: Any,
                  error: BaseException | None) -> str:
    """"done", "skipped:<reason>" or "failed:<one-line error>"; raises what must stop a stage."""
    if error is None:
        return "done"
    if isinstance(error, SkipCatchment):
        log.info(f"{stage.name}: catchment {gauge_id} skipped: {error.reason}")
        return f"skipped:{error.reason}"
    if isinstance(error, CorruptPartition):
        store.delete(error.key)  # so that the next run rebuilds it instead of failing on it
        message = one_line(error)
        log.info(f"{stage.name}: catchment {gauge_id} failed: {message}")
        return f"failed:{message}"
    if isinstance(error, (StoreError, ConfigError)):
        raise error  # not about one catchment: every other one would fail the same way
    message = one_line(error)
    log.info(f"{stage.name}: catchment {gauge_id} failed: {message}")
    return f"failed:{message}"


def one_line(error: BaseException) -> str:
    """``Type: message`` on one line (project errors: the message alone)."""
    from hybrid.errors import HybridError

    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    text = lines[-1] if lines else repr(error)
    return text if isinstance(error, HybridError) else f"{type(error).__name__}: {text}"
