"""Any dataset's series as the canonical catchment table: the inputs and target, float32,
one row per calendar day, bad numbers turned into missing days with a warning.

``prepare`` writes these tables and ``check`` runs the same functions without writing, so what
``check`` passes is what ``prepare`` accepts; ``predict`` uses them again to re-read a dataset.
"""

from __future__ import annotations

import datetime as dt
import os

import numpy as np
import pandas as pd

from hybrid.config import Config, selected_basins
from hybrid.data.catalog import check_train_count
from hybrid.data.datasets import Dataset, get_dataset
from hybrid.data.derived import add_derived, site_attributes
from hybrid.errors import ConfigError, DataError, SkipCatchment
from hybrid.logs import logger
from hybrid.store import layout

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


def _in_date_order(gauge_id: str, raw: pd.DataFrame) -> pd.DataFrame:
    """Rows sorted by date, no date twice, whatever the loader did: periods are sliced by
    date, and unsorted rows would turn a moved year into missing days without a word."""
    repeated = raw.index.duplicated()
    if repeated.any():
        day = pd.Timestamp(raw.index[int(repeated.argmax())]).date()
        raise DataError(f"catchment {gauge_id}: date {day} repeats in its time series")
    return raw if raw.index.is_monotonic_increasing else raw.sort_index()


def canonical_frame(cfg: Config, gauge_id: str, raw: pd.DataFrame
                    ) -> tuple[pd.DataFrame, list[str]]:
    """Select, clean, check and trim one catchment's series; ``SkipCatchment`` if unusable."""
    if raw.empty:  # an empty file, or a header without rows
        raise SkipCatchment(gauge_id, "its time series file has no data rows")
    raw = _in_date_order(gauge_id, raw)
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


def dataset_state(cfg: Config, dataset: Dataset, gauges: list[str] | None = None) -> dict:
    """What a worker reading the dataset needs: the dataset, and the attributes the derived
    inputs read per catchment (``hybrid.data.derived``; nothing when there are none)."""
    names = site_attributes(cfg.derived_inputs)
    if not names:
        return {"dataset": dataset, "sites": {}}
    table = dataset.load_attributes(gauges)
    for name in names:
        if name not in table.columns:
            raise ConfigError(f"derived_inputs: {name!r} is not an attribute of dataset "
                              f"{cfg.dataset!r}")
    values = table[names].apply(pd.to_numeric, errors="coerce")
    return {"dataset": dataset, "sites": values.to_dict("index")}


def read_series(cfg: Config, state: dict, gauge_id: str) -> pd.DataFrame:
    """A catchment's series as the dataset has it, plus the config's derived inputs."""
    raw = state["dataset"].load_timeseries(gauge_id)
    return add_derived(cfg.derived_inputs, gauge_id, raw, state["sites"].get(gauge_id))


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
    check_train_count(cfg, len(wanted))
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


def data_source(cfg: Config) -> str:
    return os.path.abspath(cfg.data_dir) if cfg.data_dir else f"{cfg.dataset}:generated"
