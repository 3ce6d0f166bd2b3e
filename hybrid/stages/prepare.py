"""Stage 1: turn any dataset into the canonical catchment store.

Every later stage reads only this layout, never a dataset's own files (``hybrid.store.layout``)::

    <run>/catchments/<id>/part-0.parquet   gauge_id, date, dynamic inputs, target (float32)
    <run>/catchments/_manifest.json                 written last: written, skipped, failed
    <run>/attributes.parquet                        gauge_id + static attributes (float32)

So a dataset's quirks (units, missing-value codes, bad numbers) are dealt with exactly once, and
remote workers read small Parquet partitions from object storage instead of raw CSVs. Bad
numbers never pass silently: infinite or out-of-range values and negative streamflow become
missing days with one log line per catchment (kept in the manifest's ``warnings``), and a
catchment that cannot be used is skipped with its reason, which reaches the summary and report.

Reading runs on the driver (the dataset's files are on its disk) in threads, so the store's
latency overlaps the parsing.
"""

from __future__ import annotations

import os
import time

from hybrid.config import Config
from hybrid.data.canonical import (
    PREPARE_THREADS,
    canonical_frame,
    catchment_info,
    data_source,
    dataset_for,
    dataset_state,
    prepare_attributes,
    read_series,
    resolve_basins,
)
from hybrid.data.catalog import check_train_count
from hybrid.errors import ConfigError, DataError
from hybrid.execution.context import Context, WorkResult
from hybrid.execution.executors import ThreadExecutor
from hybrid.execution.runner import CatchmentStage, StageOutcome, StageResult, run_stage
from hybrid.execution.session import Session
from hybrid.logs import flush_run_logs, logger
from hybrid.store import layout, partitions
from hybrid.store.provenance import config_hash
from hybrid.store.runs import record_time
from hybrid.store.storage import Store, table_bytes

log = logger()


def run(cfg: Config, session: Session | None = None) -> StageOutcome:
    """``hybrid prepare``: the canonical catchment store of the run, brought up to date."""
    session = Session.ensure(cfg, session)
    started = time.monotonic()
    result = prepare(session.cfg, session.store)
    if result.ran:
        record_time(session.store, "prepare", time.monotonic() - started,
                    catchments=len(result.ran), failed=len(result.failed))
    session.results["prepare"] = result
    flush_run_logs()
    return StageOutcome.of(result)


def prepare_stamp(cfg: Config) -> dict[str, str]:
    return {"stage": "prepare", "config": config_hash(cfg.to_dict())}


def _setup(context: Context) -> dict:
    return dataset_state(context.cfg, dataset_for(context.cfg))


def _prepare_one(context: Context, state: dict, gauge_id: str) -> dict:
    cfg = context.cfg
    frame, warnings = canonical_frame(cfg, gauge_id, read_series(cfg, state, gauge_id))
    info = {**catchment_info(cfg, frame), "source": data_source(cfg)}
    record = partitions.write_partition(context.store, layout.CATCHMENTS, gauge_id,
                                        frame.reset_index(), prepare_stamp(cfg), info)
    return WorkResult({layout.CATCHMENTS: {**record, **info}}, warnings=warnings)


def _refuse_mixed_sources(store: Store, cfg: Config) -> None:
    """An unfinished prepare must not continue from another data folder: the run would mix two
    datasets. Once prepare has finished, ``data_dir`` may move freely."""
    present = partitions.present_partitions(store, layout.CATCHMENTS)
    if not present:
        return
    key = partitions.locate(store, layout.CATCHMENTS, next(iter(sorted(present))))
    if key is None:
        return
    try:
        source = partitions.read_footer_json(store, key, partitions.INFO_KEY).get("source")
    except Exception:  # noqa: BLE001 - a damaged partition is redone by the runner anyway
        return
    if source and source != data_source(cfg):
        raise ConfigError(
            f"data_dir: this run's unfinished prepare read its catchments from {source}, but "
            f"data_dir is now {data_source(cfg)}; set it back to finish the run, or delete "
            f"{store.uri(layout.CATCHMENTS)} to prepare from the new folder")


def prepare(cfg: Config, store: Store) -> StageResult:
    """Bring the canonical catchment store of ``store``'s run up to date for ``cfg``."""
    stamp = prepare_stamp(cfg)
    manifest = partitions.read_manifest(store, layout.CATCHMENTS)
    finished = manifest is not None and manifest.get("stamp") == stamp \
        and store.exists(layout.ATTRIBUTES)
    if finished:
        gauges = list(manifest["catchments"]) + list(manifest["failed"])
        skipped = dict(manifest["skipped"])
        verdict = partitions.verify(store, layout.CATCHMENTS, gauges, stamp, manifest=manifest)
        if not verdict.todo:
            log.info(f"prepare: already done ({len(verdict.done)} catchments in "
                     f"{store.uri(layout.CATCHMENTS)}, {len(skipped)} skipped)")
            return StageResult("prepare", skipped=skipped, done={
                g: WorkResult({layout.CATCHMENTS: r}) for g, r in verdict.done.items()})
    _refuse_mixed_sources(store, cfg)
    dataset = dataset_for(cfg)
    gauges, skipped = resolve_basins(cfg, dataset)
    attributes, bad_attributes = prepare_attributes(cfg, dataset, gauges)
    skipped.update(bad_attributes)
    todo = [g for g in gauges if g not in skipped]
    log.info(f"prepare: {len(gauges) + len(skipped) - len(bad_attributes)} catchments from "
             f"dataset {cfg.dataset!r}"
             + (f" at {os.path.abspath(cfg.data_dir)}" if cfg.data_dir else "")
             + f" into {store.uri(layout.CATCHMENTS)}")
    stage = CatchmentStage("prepare", layout.CATCHMENTS, _prepare_one, stamp, setup=_setup,
                           verb="read")
    # the threads share the driver's already-open dataset instead of opening their own
    executor = ThreadExecutor(PREPARE_THREADS, state=dataset_state(cfg, dataset, todo))
    result = run_stage(stage, Context.of(store, cfg), todo, executor, write_manifest=False)
    result.skipped.update(skipped)
    usable = [g for g in gauges if g in result.done]
    if not usable:
        first = next(iter(sorted({**result.skipped, **result.failed}.items())), None)
        raise DataError("prepare: no usable catchment"
                        + (f" (catchment {first[0]}: {first[1]})" if first else ""))
    check_train_count(cfg, len(usable))
    store.write_if_changed(layout.ATTRIBUTES,
                           table_bytes(attributes[attributes.gauge_id.isin(usable)]))
    warnings = {g: v.warnings for g, v in result.done.items() if v.warnings}
    partitions.write_manifest(
        store, layout.CATCHMENTS, "prepare", stamp, result.records(layout.CATCHMENTS),
        result.skipped, result.failed, dataset=cfg.dataset,
        dynamic_inputs=list(cfg.dynamic_inputs), static_attributes=list(cfg.static_attributes),
        target=cfg.target, warnings=warnings)
    log.info(f"prepare: {len(usable)} catchments ready, {len(result.skipped)} skipped, "
             f"{len(result.failed)} failed")
    return result
