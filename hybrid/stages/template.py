"""Template for a new stage: copy this file to ``hybrid/stages/<name>.py``.

A stage brings one folder of the run up to date, catchment by catchment, through the runner
(``hybrid.execution.runner``), so it resumes, heals damaged partitions and runs the same in a
test, a serial loop or on Ray without code of its own for any of that.

Steps:

1. Rename the stage and its folder (add the folder's name to ``hybrid.store.layout``, the one
   home of keys).
2. Write the unit of work: read one catchment through ``hybrid.data.catalog`` (never through
   another stage module), write its partition with ``hybrid.store.partitions``, return a
   ``WorkResult``. Raise ``SkipCatchment`` for a catchment that cannot be used.
3. Add one line to ``STAGES`` in ``hybrid/stages/__init__.py`` (``in_run=True`` if
   ``hybrid run`` should chain it); the CLI and ``jobs/run_pipeline.py`` pick it up from there.
4. Test the unit of work as a plain function, and the stage with ``SerialExecutor``.

This module is not in ``STAGES``, so it never runs.
"""

from __future__ import annotations

from hybrid.config import Config
from hybrid.data.catalog import load_catchment, usable_catchments
from hybrid.execution.context import Context, WorkResult
from hybrid.execution.runner import CatchmentStage, StageOutcome, run_stage
from hybrid.execution.session import Session
from hybrid.store import partitions
from hybrid.store.provenance import config_hash

FOLDER = "my_stage"  # in a real stage: a constant of hybrid.store.layout


def run(cfg: Config, session: Session | None = None) -> StageOutcome:
    session = Session.ensure(cfg, session)
    cfg, store = session.cfg, session.store
    stamp = {"stage": "my_stage", "config": config_hash(cfg.to_dict())}
    stage = CatchmentStage("my_stage", FOLDER, one_catchment, stamp)
    result = run_stage(stage, Context.of(store, cfg), usable_catchments(store),
                       session.executor)
    session.timed("my_stage", result)
    return StageOutcome.of(result)


def one_catchment(context: Context, state: dict, gauge_id: str) -> WorkResult:
    frame = load_catchment(context.store, gauge_id)
    table = frame.describe().reset_index()  # whatever the stage computes for one catchment
    stamp = {"stage": "my_stage", "config": config_hash(context.config)}
    record = partitions.write_partition(context.store, FOLDER, gauge_id, table, stamp)
    return WorkResult({FOLDER: record})
