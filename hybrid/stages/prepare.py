"""Stage 1: turn any dataset into the canonical catchment store.

Every later stage reads only this layout, never a dataset's own files (``hybrid.store.layout``)::

    <run>/catchments/gauge_id=<id>/part-0.parquet   date, dynamic inputs, target (float32)
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

import datetime as dt
import os

import numpy as np
import pandas as pd

from hybrid.config import Config, selected_basins
from hybrid.data.datasets import Dataset, get_dataset
from hybrid.errors import ConfigError, DataError, SkipCatchment
from hybrid.execution.runner import CatchmentStage, Context, StageResult, ThreadExecutor, run_stage
from hybrid.logs import logger
from hybrid.store import layout, partitions
from hybrid.store.provenance import config_hash
from hybrid.store.storage import Store, table_bytes

log = logger()

#: the largest finite float32; larger values would become inf in the canonical store
FLOAT32_MAX = float(np.finfo(np.float32).max)
#: threads reading the dataset (file parsing releases the GIL in pandas' C parser)
PREPARE_THREADS = min(8, (os.cpu_count() or 2) * 2)


def window_start(cfg: Config) -> dt.date:
    """First day any stage needs: the warm-up of the first window of any period."""
    first = min(cfg.train_start_date, cfg.validation_start_date, cfg.test_start_date)
    return first - dt.timedelta(days=cfg.seq_length - 1)


def last_day(cfg: Config) -> dt.date:
    return max(cfg.train_end_date, cfg.validation_end_date, cfg.test_end_date)


def _period(frame: pd.DataFrame, start: dt.date, end: dt.date) -> pd.DataFrame:
    return frame.loc[pd.Timestamp(start):pd.Timestamp(end)]


def clean_values(cfg: Config, gauge_id: str, frame: pd.DataFrame) -> tuple[pd.DataFrame, list]:
    """Non-finite or out-of-range values and negative streamflow become NaN, with a warning."""
    warnings = []
    values = np.array(frame, dtype=np.float64)  # a copy: pandas' own arrays are read-only
    for j, column in enumerate(frame.columns):
        col = values[:, j]
        bad = ~np.isfinite(col) & ~np.isnan(col) | (np.abs(col) > FLOAT32_MAX)
        if bad.any():
            first = frame.index[int(np.argmax(bad))].date()
            warnings.append(f"{int(bad.sum())} infinite or out-of-range value(s) of {column!r} "
                            f"(first on {first}) treated as missing")
            col[bad] = np.nan
        if column == cfg.target:
            negative = col < 0
            if negative.any():
                first = frame.index[int(np.argmax(negative))].date()
                warnings.append(f"{int(negative.sum())} negative value(s) of target {column!r} "
                                f"(first on {first}) treated as missing")
                col[negative] = np.nan
    for warning in warnings:
        log.info(f"prepare: catchment {gauge_id}: {warning}")
    return pd.DataFrame(values, index=frame.index, columns=frame.columns), warnings


def canonical_frame(cfg: Config, gauge_id: str, raw: pd.DataFrame
                    ) -> tuple[pd.DataFrame, list[str]]:
    """Select, clean, check and trim one catchment's series; ``SkipCatchment`` if unusable."""
    if raw.empty:  # an empty file, or a header without rows
        raise SkipCatchment(gauge_id, "its time series file has no data rows")
    columns = list(cfg.dynamic_inputs) + [cfg.target]
    missing = [c for c in columns if c not in raw.columns]
    if missing:
        key = "target_variables" if missing[0] == cfg.target else "dynamic_inputs"
        raise ConfigError(
            f"{key}: {missing[0]!r} is not a variable of catchment {gauge_id} "
            f"(it has: {', '.join(map(str, raw.columns))})")
    frame, warnings = clean_values(cfg, gauge_id, raw[columns])
    frame = frame.astype("float32")
    frame = _period(frame, window_start(cfg), last_day(cfg))
    if len(frame) < cfg.seq_length:
        raise SkipCatchment(
            gauge_id, f"only {len(frame)} days between {window_start(cfg)} and {last_day(cfg)}, "
                      f"shorter than seq_length={cfg.seq_length}")
    full = pd.date_range(frame.index[0], frame.index[-1], freq="D", name="date")
    frame = frame.reindex(full)  # gaps become NaN days, so windows stay calendar windows
    train = _period(frame, cfg.train_start_date, cfg.train_end_date)
    if train.empty:
        raise SkipCatchment(gauge_id, f"no data between train_start_date {cfg.train_start_date} "
                                      f"and train_end_date {cfg.train_end_date}")
    if not np.isfinite(train[cfg.target].to_numpy()).any():
        raise SkipCatchment(gauge_id, f"target {cfg.target!r} is all missing in the training "
                                      "period")
    test = _period(frame, cfg.test_start_date, cfg.test_end_date)
    if not np.isfinite(test[cfg.dynamic_inputs].to_numpy()).all(axis=1).any():
        span = f"its data run {frame.index[0].date()}..{frame.index[-1].date()}"
        raise SkipCatchment(gauge_id, f"no day with every input in the test period "
                                      f"{cfg.test_start_date}..{cfg.test_end_date} ({span})")
    return frame, warnings


def catchment_info(cfg: Config, frame: pd.DataFrame) -> dict:
    train = _period(frame, cfg.train_start_date, cfg.train_end_date)
    test = _period(frame, cfg.test_start_date, cfg.test_end_date)
    return {
        "start": str(frame.index[0].date()),
        "end": str(frame.index[-1].date()),
        "n_target_train": int(np.isfinite(train[cfg.target].to_numpy()).sum()),
        "n_target_test": int(np.isfinite(test[cfg.target].to_numpy()).sum()),
    }


def dataset_for(cfg: Config) -> Dataset:
    return get_dataset(cfg.dataset, cfg.data_dir, **cfg.dataset_kwargs())


def resolve_basins(cfg: Config, dataset: Dataset) -> tuple[list[str], dict[str, str]]:
    """(catchments to prepare, skipped ids with why) for the config and dataset."""
    available = dataset.gauge_ids()
    wanted = selected_basins(cfg)
    where = f"dataset {cfg.dataset!r}" + (f" at {cfg.data_dir}" if cfg.data_dir else "")
    if wanted is None:
        if not available:
            raise DataError(f"{where}: no catchments found")
        unusable = {g: "its id cannot name a partition (use letters, digits, '_', '.', '+', "
                       "'-')" for g in available if not layout.is_gauge_id(g)}
        for gauge_id, reason in unusable.items():
            log.info(f"prepare: catchment {gauge_id!r} skipped: {reason}")
        return [g for g in available if g not in unusable], unusable
    known = set(available)
    for gauge_id in wanted:
        if gauge_id not in known:
            raise DataError(f"catchment {gauge_id} not found in {where}")
    if cfg.n_train_basins is not None and cfg.n_train_basins > len(wanted):
        raise ConfigError(f"n_train_basins: {cfg.n_train_basins} training catchments asked for, "
                          f"but the run has only {len(wanted)}")
    return list(wanted), {}


def prepare_attributes(cfg: Config, dataset: Dataset, gauges: list[str]
                       ) -> tuple[pd.DataFrame, dict[str, str]]:
    """(gauge_id + float32 attributes, catchments skipped for a missing or non-numeric one)."""
    table = dataset.load_attributes(gauges)
    missing = [a for a in cfg.static_attributes if a not in table.columns]
    if missing:
        raise ConfigError(f"static_attributes: {missing[0]!r} is not an attribute of dataset "
                          f"{cfg.dataset!r}")
    absent = [g for g in gauges if g not in table.index]
    if absent:
        raise DataError(f"catchment {absent[0]}: no row in the attribute table")
    raw = table.loc[gauges, cfg.static_attributes]
    numbers = raw.apply(pd.to_numeric, errors="coerce").astype("float64")
    numbers = numbers.where(np.isfinite(numbers) & (numbers.abs() <= FLOAT32_MAX))
    skipped = {}
    for gauge_id, row in numbers.iterrows():
        bad = [a for a in cfg.static_attributes if pd.isna(row[a])]
        if bad:
            value = raw.loc[gauge_id, bad[0]]
            what = "missing" if pd.isna(value) or str(value).strip() == "" \
                else f"{str(value).strip()!r}, not a finite number"
            skipped[gauge_id] = f"static attribute {bad[0]!r} is {what}"
            log.info(f"prepare: catchment {gauge_id} skipped: {skipped[gauge_id]}")
    out = numbers.astype("float32")
    out.index.name = layout.PARTITION_KEY
    return out.reset_index(), skipped


def prepare_stamp(cfg: Config) -> dict[str, str]:
    return {"stage": "prepare", "config": config_hash(cfg.to_dict())}


def _data_source(cfg: Config) -> str:
    return os.path.abspath(cfg.data_dir) if cfg.data_dir else f"{cfg.dataset}:generated"


def _setup(context: Context) -> dict:
    return {"dataset": dataset_for(context.cfg)}


def _prepare_one(context: Context, state: dict, gauge_id: str) -> dict:
    cfg = context.cfg
    frame, warnings = canonical_frame(cfg, gauge_id, state["dataset"].load_timeseries(gauge_id))
    info = {**catchment_info(cfg, frame), "source": _data_source(cfg)}
    record = partitions.write_partition(context.store, layout.CATCHMENTS, gauge_id,
                                        frame.reset_index(), prepare_stamp(cfg), info)
    return {"records": {layout.CATCHMENTS: {**record, **info}}, "warnings": warnings}


def _refuse_mixed_sources(store: Store, cfg: Config) -> None:
    """An unfinished prepare must not continue from another data folder: the run would mix two
    datasets. Once prepare has finished, ``data_dir`` may move freely."""
    present = partitions.present_partitions(store, layout.CATCHMENTS)
    if not present:
        return
    key = layout.partition_key(layout.CATCHMENTS, next(iter(sorted(present))))
    try:
        source = partitions.read_footer_json(store, key, partitions.INFO_KEY).get("source")
    except Exception:  # noqa: BLE001 - a damaged partition is redone by the runner anyway
        return
    if source and source != _data_source(cfg):
        raise ConfigError(
            f"data_dir: this run's unfinished prepare read its catchments from {source}, but "
            f"data_dir is now {_data_source(cfg)}; set it back to finish the run, or delete "
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
            return StageResult("prepare", done=verdict.done, skipped=skipped)
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
    context = Context.of(store, cfg)
    executor = ThreadExecutor(PREPARE_THREADS)
    executor_state = {"dataset": dataset}
    result = run_stage(stage, context, todo, _SharedDataset(executor, executor_state),
                       write_manifest=False)
    result.skipped.update(skipped)
    usable = [g for g in gauges if g in result.done]
    if not usable:
        first = next(iter(sorted({**result.skipped, **result.failed}.items())), None)
        raise DataError("prepare: no usable catchment"
                        + (f" (catchment {first[0]}: {first[1]})" if first else ""))
    if cfg.n_train_basins is not None and cfg.n_train_basins > len(usable):
        raise ConfigError(f"n_train_basins: {cfg.n_train_basins} training catchments asked for, "
                          f"but only {len(usable)} catchments are usable")
    store.write_if_changed(layout.ATTRIBUTES,
                           table_bytes(attributes[attributes.gauge_id.isin(usable)]))
    warnings = {g: v["warnings"] for g, v in result.done.items()
                if isinstance(v, dict) and v.get("warnings")}
    partitions.write_manifest(
        store, layout.CATCHMENTS, "prepare", stamp, result.records(layout.CATCHMENTS),
        result.skipped, result.failed, dataset=cfg.dataset,
        dynamic_inputs=list(cfg.dynamic_inputs), static_attributes=list(cfg.static_attributes),
        target=cfg.target, warnings=warnings)
    log.info(f"prepare: {len(usable)} catchments ready, {len(result.skipped)} skipped, "
             f"{len(result.failed)} failed")
    return result


class _SharedDataset:
    """Hands the driver's already-open dataset to the thread workers (no second setup)."""

    def __init__(self, executor: ThreadExecutor, state: dict) -> None:
        self.executor, self.state = executor, state

    def map(self, work, setup, context, items, role):
        return self.executor.map(work, lambda _: self.state, context, items, role)

    def call(self, fn, context, role):
        return self.executor.call(fn, context, role)

    def close(self) -> None:
        pass


def load_catchment(store: Store, gauge_id: str) -> pd.DataFrame:
    """One canonical catchment table, indexed by date."""
    table = partitions.read_partition(store, layout.CATCHMENTS, gauge_id)
    return table.to_pandas().set_index("date")


def load_attributes(store: Store) -> pd.DataFrame:
    return store.read_frame(layout.ATTRIBUTES).set_index(layout.PARTITION_KEY)


def usable_catchments(store: Store) -> list[str]:
    """The prepared catchments, as the manifest lists them (ids checked)."""
    manifest = partitions.require_manifest(store, layout.CATCHMENTS, "prepare")
    return sorted(manifest["catchments"])
