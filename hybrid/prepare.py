"""Stage 1: turn any dataset into the canonical catchment store.

Every later stage reads only this layout, never a dataset's own files::

    <run>/catchments/gauge_id=<id>/part-0.parquet   date, dynamic inputs, target (float32)
    <run>/catchments/_manifest.json                 written last: what was written and skipped
    <run>/attributes.parquet                        gauge_id + static attributes (float32)

``catchments/`` holds nothing but the hive partitions (``_manifest.json`` is ignored by Parquet
readers), so ``pyarrow.dataset``, DuckDB, Polars or Ray Data read it as one table with a
``gauge_id`` column; the attribute table sits beside it, where it cannot be mistaken for one.

So a dataset's quirks (units, missing-value codes, file layouts) are dealt with exactly once, and
remote workers read small Parquet partitions from object storage instead of raw CSVs.
"""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hybrid.config import Config, selected_basins
from hybrid.datasets import Dataset, get_dataset
from hybrid.errors import ConfigError, DataError, HybridError
from hybrid.progress import Progress, log
from hybrid.storage import Store

STAGE = "catchments"
MANIFEST = f"{STAGE}/_manifest.json"
ATTRIBUTES = "attributes.parquet"


def partition_key(stage: str, gauge_id: str) -> str:
    return f"{stage}/gauge_id={gauge_id}/part-0.parquet"


@dataclass
class Skip(Exception):
    """A catchment that cannot be used; recorded in the manifest instead of stopping the run."""

    gauge_id: str
    reason: str

    def __str__(self) -> str:
        return f"catchment {self.gauge_id}: {self.reason}"


def window_start(cfg: Config) -> dt.date:
    """First day any stage needs: the warm-up of the first training window."""
    first = min(cfg.train_start_date, cfg.validation_start_date, cfg.test_start_date)
    return first - dt.timedelta(days=cfg.seq_length - 1)


def last_day(cfg: Config) -> dt.date:
    return max(cfg.train_end_date, cfg.validation_end_date, cfg.test_end_date)


def canonical_frame(cfg: Config, gauge_id: str, raw: pd.DataFrame) -> pd.DataFrame:
    """Select, check and trim one catchment's series; raises ``Skip`` for unusable catchments."""
    columns = list(cfg.dynamic_inputs) + [cfg.target]
    missing = [c for c in columns if c not in raw.columns]
    if missing:
        key = "target_variables" if missing[0] == cfg.target else "dynamic_inputs"
        raise ConfigError(
            f"{key}: {missing[0]!r} is not a variable of catchment {gauge_id} "
            f"(it has: {', '.join(map(str, raw.columns))})")
    frame = raw[columns].astype("float32")
    frame = frame.loc[pd.Timestamp(window_start(cfg)):pd.Timestamp(last_day(cfg))]
    if len(frame) < cfg.seq_length:
        raise Skip(gauge_id, f"only {len(frame)} days between {window_start(cfg)} and "
                             f"{last_day(cfg)}, shorter than seq_length={cfg.seq_length}")
    full = pd.date_range(frame.index[0], frame.index[-1], freq="D", name="date")
    frame = frame.reindex(full)  # gaps become NaN days, so windows stay calendar windows
    train = frame.loc[pd.Timestamp(cfg.train_start_date):pd.Timestamp(cfg.train_end_date)]
    if train.empty:
        raise Skip(gauge_id, f"no data between train_start_date {cfg.train_start_date} and "
                             f"train_end_date {cfg.train_end_date}")
    if not np.isfinite(train[cfg.target].to_numpy()).any():
        raise Skip(gauge_id, f"target {cfg.target!r} is all NaN in the training period")
    return frame


def dataset_for(cfg: Config) -> Dataset:
    return get_dataset(cfg.dataset, cfg.data_dir, **cfg.dataset_kwargs())


def resolve_basins(cfg: Config, dataset: Dataset) -> list[str]:
    available = dataset.gauge_ids()
    wanted = selected_basins(cfg)
    if wanted is None:
        if not available:
            raise DataError(f"dataset {cfg.dataset!r} at {cfg.data_dir}: no catchments found")
        return available
    known = set(available)
    for gauge_id in wanted:
        if gauge_id not in known:
            raise DataError(f"catchment {gauge_id} not found in dataset {cfg.dataset!r}"
                            + (f" at {cfg.data_dir}" if cfg.data_dir else ""))
    return list(dict.fromkeys(wanted))


def prepare_attributes(cfg: Config, dataset: Dataset, gauges: list[str]) -> pd.DataFrame:
    table = dataset.load_attributes(gauges)
    missing = [a for a in cfg.static_attributes if a not in table.columns]
    if missing:
        raise ConfigError(f"static_attributes: {missing[0]!r} is not an attribute of dataset "
                          f"{cfg.dataset!r}")
    absent = [g for g in gauges if g not in table.index]
    if absent:
        raise DataError(f"catchment {absent[0]}: no row in the attribute table")
    out = table.loc[gauges, cfg.static_attributes].apply(pd.to_numeric, errors="coerce")
    out = out.astype("float32")
    out.index.name = "gauge_id"
    return out.reset_index()


def write_catchment(store: Store, cfg: Config, dataset: Dataset, gauge_id: str) -> dict:
    frame = canonical_frame(cfg, gauge_id, dataset.load_timeseries(gauge_id))
    store.write_table(partition_key(STAGE, gauge_id), frame.reset_index())
    return catchment_summary(cfg, frame)


def catchment_summary(cfg: Config, frame: pd.DataFrame) -> dict:
    train = frame.loc[pd.Timestamp(cfg.train_start_date):pd.Timestamp(cfg.train_end_date)]
    return {
        "start": str(frame.index[0].date()),
        "end": str(frame.index[-1].date()),
        "n_days": int(len(frame)),
        "n_target_train": int(np.isfinite(train[cfg.target].to_numpy()).sum()),
    }


def prepare(cfg: Config, store: Store) -> dict:
    """Write the canonical catchment store for ``cfg`` into the run ``store``; resumable."""
    if store.exists(MANIFEST):
        manifest = store.read_json(MANIFEST)
        log(f"prepare: {len(manifest['catchments'])} catchments already prepared in "
            f"{store.uri(STAGE)}")
        return manifest
    dataset = dataset_for(cfg)
    gauges = resolve_basins(cfg, dataset)
    attributes = prepare_attributes(cfg, dataset, gauges)
    bad_attr = attributes[attributes[cfg.static_attributes].isna().any(axis=1)]
    skipped: dict[str, str] = {
        row.gauge_id: "missing static attribute "
        + repr(next(a for a in cfg.static_attributes if pd.isna(getattr(row, a))))
        for row in bad_attr.itertuples()
    }
    done = set(store.partitions(STAGE))
    todo = [g for g in gauges if g not in done and g not in skipped]
    log(f"prepare: {len(gauges)} catchments from dataset {cfg.dataset!r}, "
        f"{len(done)} already written, {len(todo)} to write to {store.uri(STAGE)}")
    catchments: dict[str, dict] = {}

    def one(gauge_id: str):
        try:
            return gauge_id, write_catchment(store, cfg, dataset, gauge_id), None
        except Skip as skip:
            return gauge_id, None, skip.reason

    with Progress(len(todo), "prepare") as bar, ThreadPoolExecutor(4) as pool:
        for gauge_id, summary, reason in pool.map(one, todo):
            if reason is not None:
                skipped[gauge_id] = reason
                log(f"prepare: skipping catchment {gauge_id}: {reason}")
            else:
                catchments[gauge_id] = summary
            bar.update(failed=int(reason is not None))
    for gauge_id in sorted(done & set(gauges) - set(skipped)):
        frame = store.read_frame(partition_key(STAGE, gauge_id)).set_index("date")
        catchments[gauge_id] = catchment_summary(cfg, frame)
    if not catchments:
        first = next(iter(skipped.items()), None)
        raise HybridError("prepare: no usable catchment"
                          + (f" (catchment {first[0]}: {first[1]})" if first else ""))
    usable = [g for g in gauges if g in catchments]
    store.write_table(ATTRIBUTES, attributes[attributes.gauge_id.isin(usable)])
    manifest = {
        "stage": STAGE,
        "dataset": cfg.dataset,
        "dynamic_inputs": list(cfg.dynamic_inputs),
        "static_attributes": list(cfg.static_attributes),
        "target": cfg.target,
        "catchments": {g: catchments[g] for g in usable},
        "skipped": dict(sorted(skipped.items())),
    }
    store.write_json(MANIFEST, manifest)  # last: its presence means the stage is complete
    log(f"prepare: wrote {len(usable)} catchments, skipped {len(skipped)}")
    return manifest


def load_catchment(store: Store, gauge_id: str) -> pd.DataFrame:
    """One canonical catchment table, indexed by date."""
    return store.read_frame(partition_key(STAGE, gauge_id)).set_index("date")


def load_attributes(store: Store) -> pd.DataFrame:
    return store.read_frame(ATTRIBUTES).set_index("gauge_id")
