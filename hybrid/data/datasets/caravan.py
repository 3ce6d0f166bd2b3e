"""Caravan (Kratzert et al. 2023): one CSV (or netCDF) per catchment, attribute tables per region.

The region is the part of the gauge id before the first ``_`` (``camels_01022500`` lives in
``camels/``), so any region of a full download — or an extension such as CAMELS-DE in Caravan
form — works without a list of regions in the code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from hybrid.data.datasets import register_dataset
from hybrid.data.datasets._csv import (
    one_line,
    open_folder,
    read_attribute_tables,
    read_daily_csv,
    select_gauges,
)
from hybrid.data.datasets.base import Dataset
from hybrid.errors import DataError


@register_dataset("caravan")
class CaravanDataset(Dataset):
    """``<data_dir>/timeseries/csv/<region>/<gauge_id>.csv`` and ``attributes/<region>/``."""

    def __init__(self, data_dir: str | None = None, **options: Any) -> None:
        super().__init__(data_dir, **options)
        self.root = open_folder(self, data_dir, options)
        self._attributes: dict[str, pd.DataFrame] = {}

    def gauge_ids(self) -> list[str]:
        found = {p.stem for p in self.root.glob("timeseries/csv/*/*.csv")}
        found |= {p.stem for p in self.root.glob("timeseries/netcdf/*/*.nc")}
        return sorted(found)

    def load_timeseries(self, gauge_id: str) -> pd.DataFrame:
        region = _region(gauge_id)
        csv = self.root / "timeseries" / "csv" / region / f"{gauge_id}.csv"
        if csv.is_file():
            return read_daily_csv(csv)
        netcdf = self.root / "timeseries" / "netcdf" / region / f"{gauge_id}.nc"
        if netcdf.is_file():
            return _read_netcdf(netcdf)
        raise DataError(f"catchment {gauge_id}: no time series file at {csv}")

    def load_attributes(self, gauge_ids: list[str] | None = None) -> pd.DataFrame:
        wanted = self.gauge_ids() if gauge_ids is None else list(gauge_ids)
        regions = sorted({_region(g) for g in wanted})
        tables = [self._region_attributes(r) for r in regions]
        merged = pd.concat(tables, axis=0) if tables else pd.DataFrame()
        merged.index.name = "gauge_id"
        return select_gauges(merged, wanted, str(self.root / "attributes"))

    def _region_attributes(self, region: str) -> pd.DataFrame:
        # Cached: every catchment of a region shares the same few tables.
        if region not in self._attributes:
            folder = self.root / "attributes" / region
            paths = sorted(folder.glob(f"attributes_*_{region}.csv"))
            if not paths:
                raise DataError(f"{folder}: no attributes_*_{region}.csv tables")
            self._attributes[region] = read_attribute_tables(paths)
        return self._attributes[region]


def _region(gauge_id: str) -> str:
    region, sep, rest = gauge_id.partition("_")
    if not sep or not region or not rest:
        raise DataError(f"catchment {gauge_id}: Caravan gauge ids look like <region>_<id>")
    return region


def _read_netcdf(path: Path) -> pd.DataFrame:
    """Caravan also ships netCDF; xarray is an optional dependency, so only needed here."""
    try:
        import xarray
    except ImportError:
        raise DataError(
            f"{path}: reading netCDF needs xarray; install it (pip install 'hybrid[netcdf]')"
        ) from None
    try:
        with xarray.open_dataset(path) as ds:
            frame = ds.to_dataframe()
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as exc:  # backend errors
        raise DataError(f"{path}: cannot read netCDF ({one_line(exc)})") from None
    if frame.index.name != "date":
        raise DataError(f"{path}: expected a 'date' dimension, found {frame.index.names}")
    try:
        frame = frame.astype("float64")
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: non-numeric variable ({one_line(exc)})") from None
    frame.index = pd.DatetimeIndex(frame.index, name="date")
    repeated = frame.index.duplicated()
    if repeated.any():
        raise DataError(f"{path}: date {frame.index[int(repeated.argmax())].date()} repeats")
    return frame.sort_index()
