"""The pipeline's stages, registered once: the CLI, ``hybrid run`` and ``jobs/run_pipeline.py``
all read this table instead of listing stages themselves.

Each stage is one module of this package with a ``run(cfg, session=None) -> StageOutcome``
function. No stage module imports another: what two stages share lives below them
(``hybrid.data.catalog``, ``hybrid.store.layout``, ``hybrid.evaluation``). Modules are imported
when a stage runs, not when the table is read, so ``hybrid --help`` or a config typo is
answered before torch is loaded.

Adding a stage (see ``template.py`` beside this file):

1. write ``hybrid/stages/<name>.py`` with ``run(cfg, session=None) -> StageOutcome``;
2. add one ``Stage(...)`` line to ``STAGES`` below, in pipeline order, with ``in_run=True`` if
   ``hybrid run`` should chain it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from hybrid.config import Config


@dataclass(frozen=True)
class Stage:
    name: str
    #: one line for ``hybrid --help``
    help: str
    #: whether ``hybrid run`` chains it (in the order of ``STAGES``)
    in_run: bool = True
    #: whether it writes to the run folder (a read-only command leaves no trace, not even logs)
    writes: bool = True
    #: give the encoder's GPU and CPUs back after it, before the decoders need them
    releases_hosts: bool = False
    #: it reads or serves a run that must exist (a typo in run_id or store names the runs there)
    needs_run: bool = False

    @property
    def run(self) -> Callable:
        return importlib.import_module(f"hybrid.stages.{self.name}").run


STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage("prepare", "load the dataset and write the canonical catchment store (Parquet per "
                     "catchment)"),
    Stage("pretrain", "pre-train the regional LSTM on the training catchments (Ray actor; GPU "
                      "if any)"),
    Stage("encode", "encode every catchment with the LSTM (no head) and write features to "
                    "Parquet", releases_hosts=True),
    Stage("baselines", "train the optional per-catchment LSTM baselines (Ray tasks)"),
    Stage("decode", "fit one random-forest decoder per catchment (Ray tasks), score it, and "
                    "write the summary"),
    Stage("score", "score every decoded catchment's predictions again (e.g. after adding a "
                   "metric) and rewrite the summary; never fits", in_run=False, needs_run=True),
    Stage("report", "write report.md and plots into the run folder from its summary",
          writes=False, needs_run=True),
    Stage("check", "check a config against its data and store without writing or training "
                   "anything", in_run=False, writes=False),
    Stage("predict", "regional and hybrid predictions of a finished run for any period, "
                     "without refitting", in_run=False, needs_run=True),
)}


def run_all(cfg: Config, break_lock: bool = False):
    """``hybrid run``: every stage with ``in_run`` in order, in one session; returns the last
    outcome that carries the summary, with the report's path."""
    from hybrid.execution.runner import StageOutcome
    from hybrid.execution.session import Session, executor_for, joins_cluster
    from hybrid.store.runs import run_store

    # a cluster that cannot serve this store is refused before anything is written
    early = executor_for(cfg, run_store(cfg)) if joins_cluster(cfg) else None
    session = Session.open(cfg, break_lock=break_lock, command="hybrid run")
    session._executor = early
    outcome = StageOutcome("run")
    try:
        for stage in STAGES.values():
            if not stage.in_run:
                continue
            result = stage.run(session.cfg, session)
            if stage.releases_hosts:
                session.release_hosts()
            outcome.failed = sorted({*outcome.failed, *result.failed})
            if result.summary is not None:
                outcome.summary = result.summary
            if result.path:
                outcome.path = result.path
        return outcome
    finally:
        session.close()
