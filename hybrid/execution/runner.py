"""The one per-catchment loop: what is done, what to do, what failed, for every stage.

A stage that works catchment by catchment is a ``CatchmentStage``: a plain function
``work(context, state, gauge_id)`` that writes one catchment's partition(s) and returns a
``WorkResult``, an optional ``setup(context)`` that builds per-worker state once (a loaded
model), and the folder whose partitions say a catchment is done. ``run_stage`` then

1. checks the folder (``hybrid.store.partitions.verify``): intact partitions are kept, damaged
   or missing ones are redone with one log line each;
2. hands the rest to an executor (``hybrid.execution.executors``; Ray's in
   ``hybrid.execution.ray_executor``, the only module that imports Ray);
3. applies one failure policy: a catchment that raises is recorded with its one-line error
   (``SkipCatchment`` as skipped), never dropped; a damaged input partition is deleted so the
   next run rebuilds it; errors about the config or the store itself stop the stage;
4. writes the folder's manifest last.

Every stage therefore behaves the same on a laptop without Ray, in a test, and on a cluster.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd

from hybrid.errors import (
    EXIT_FAILURES,
    EXIT_OK,
    ConfigError,
    CorruptPartition,
    HybridError,
    SkipCatchment,
    StoreError,
)
from hybrid.execution.context import Context, WorkResult
from hybrid.execution.executors import Executor, Setup, Work
from hybrid.logs import flush_run_logs, logger
from hybrid.progress import Progress
from hybrid.store import partitions
from hybrid.store.storage import Store

log = logger()


@dataclass
class CatchmentStage:
    name: str
    #: the folder whose partition marks a catchment as done for this stage
    folder: str
    work: Work
    #: the stamp every partition of ``folder`` carries (config hash and lineage)
    stamp: dict[str, str]
    setup: Setup | None = None
    #: "encoder" (a GPU host when there is one) or "worker" (CPUs): see ``Executor``
    role: str = "worker"
    #: verb for the progress line and log ("encode", "decode" ...)
    verb: str = ""


@dataclass
class StageResult:
    """What a stage pass ended with, for the next stage and for the summary."""

    stage: str
    #: gauge id -> what the work returned (this pass) or the partition found (done before)
    done: dict[str, WorkResult] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    #: gauge ids worked on in this pass
    ran: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def records(self, folder: str) -> dict[str, dict[str, Any]]:
        """The partition records of ``folder`` for every done catchment."""
        return {g: dict(v.records[folder]) for g, v in self.done.items() if folder in v.records}


@dataclass(frozen=True)
class Outcome:
    """One catchment's fate under the failure policy."""

    status: Literal["done", "skipped", "failed"]
    reason: str = ""


@dataclass
class StageOutcome:
    """What every stage command returns: the CLI's exit status and what to show next."""

    stage: str
    #: catchments that failed (named on stderr; rerun to retry them)
    failed: list[str] = field(default_factory=list)
    #: the run's summary table, for the stages that rewrite it
    summary: pd.DataFrame | None = None
    #: the file a user opens next (report.md, a model folder), if any
    path: str = ""
    #: the stage's own counts and facts (device, best epoch, catchments done ...)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return EXIT_FAILURES if self.failed else EXIT_OK

    @classmethod
    def of(cls, result: StageResult, **kwargs: Any) -> "StageOutcome":
        return cls(result.stage, failed=sorted(result.failed), **kwargs)


def run_stage(stage: CatchmentStage, context: Context, gauges: Iterable[str],
              executor: Executor, known: dict[str, dict[str, int]] | None = None,
              force: Iterable[str] = (), manifest_extra: dict[str, Any] | None = None,
              write_manifest: bool = True) -> StageResult:
    """Bring ``stage``'s folder up to date for ``gauges``; see the module docstring."""
    store = context.store
    gauges = list(dict.fromkeys(gauges))
    verdict = partitions.verify(store, stage.folder, gauges, stage.stamp, known=known)
    for gauge_id in set(force) & set(verdict.done):
        verdict.done.pop(gauge_id)
        verdict.redo.setdefault(gauge_id, "its inputs changed")
        verdict.todo.append(gauge_id)
    wanted = set(verdict.todo)
    todo = [g for g in gauges if g in wanted]
    _announce(stage, verdict, todo, len(gauges))
    done = {g: WorkResult({stage.folder: record}) for g, record in verdict.done.items()}
    result = StageResult(stage.name, done=done, skipped=dict(verdict.skipped), ran=todo)
    started = time.monotonic()
    if todo:
        with Progress(len(todo), stage.name) as bar:
            for gauge_id, value, error in executor.map(stage.work, stage.setup, context, todo,
                                                       stage.role):
                outcome = apply_policy(store, stage.name, gauge_id, error)
                if outcome.status == "done":
                    result.done[gauge_id] = value
                elif outcome.status == "skipped":
                    result.skipped[gauge_id] = outcome.reason
                else:
                    result.failed[gauge_id] = outcome.reason
                bar.update(failed=int(outcome.status == "failed"))
    result.seconds = time.monotonic() - started
    if write_manifest:
        partitions.write_manifest(store, stage.folder, stage.name, stage.stamp,
                                  result.records(stage.folder), result.skipped, result.failed,
                                  **(manifest_extra or {}))
    flush_run_logs()
    return result


def _announce(stage: CatchmentStage, verdict: partitions.Verdict, todo: list[str],
              total: int) -> None:
    for gauge_id, reason in verdict.redo.items():
        log.info(f"{stage.name}: redoing catchment {gauge_id}: {reason}")
    log.info(f"{stage.name}: {len(todo)} of {total} catchments to {stage.verb or stage.name} "
             f"({len(verdict.done)} already done"
             + (f", {len(verdict.skipped)} skipped before" if verdict.skipped else "") + ")")


def apply_policy(store: Store, stage: str, gauge_id: str, error: BaseException | None
                 ) -> Outcome:
    """A catchment's ``Outcome``; raises what must stop the whole stage."""
    if error is None:
        return Outcome("done")
    if isinstance(error, SkipCatchment):
        log.info(f"{stage}: catchment {gauge_id} skipped: {error.reason}")
        return Outcome("skipped", error.reason)
    if isinstance(error, CorruptPartition):
        store.delete(error.key)  # so that the next run rebuilds it instead of failing on it
    elif isinstance(error, (StoreError, ConfigError)):
        raise error  # not about one catchment: every other one would fail the same way
    message = one_line(error)
    log.info(f"{stage}: catchment {gauge_id} failed: {message}")
    return Outcome("failed", message)


def one_line(error: BaseException) -> str:
    """``Type: message`` on one line (project errors: the message alone)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    text = lines[-1] if lines else repr(error)
    return text if isinstance(error, HybridError) else f"{type(error).__name__}: {text}"
