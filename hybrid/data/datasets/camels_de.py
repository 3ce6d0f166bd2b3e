"""CAMELS-DE v1 (Loritz et al. 2024): one hydromet CSV per gauge, attribute tables at the root.

Same CSV conventions as Caravan (a ``date`` column, numbers, empty cell = missing), so it goes
through the same parser and checks.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from hybrid.data.datasets import register_dataset
from hybrid.data.datasets._csv import (
    open_folder,
    read_attribute_tables,
    read_daily_csv,
    select_gauges,
)
from hybrid.data.datasets.base import Dataset
from hybrid.errors import DataError

_PREFIX = "CAMELS_DE_hydromet_timeseries_"


@register_dataset("camels_de")
class CamelsDEDataset(Dataset):
    """``timeseries/CAMELS_DE_hydromet_timeseries_<id>.csv`` and ``CAMELS_DE_*_attributes.csv``."""

    def __init__(self, data_dir: str | None = None, **options: Any) -> None:
        super().__init__(data_dir, **options)
        self.root = open_folder(self, data_dir, options)
        self._attributes: pd.DataFrame | None = None

    def gauge_ids(self) -> list[str]:
        files = (self.root / "timeseries").glob(f"{_PREFIX}*.csv")
        return sorted(p.stem[len(_PREFIX) :] for p in files)

    def load_timeseries(self, gauge_id: str) -> pd.DataFrame:
        path = self.root / "timeseries" / f"{_PREFIX}{gauge_id}.csv"
        if not path.is_file():
            raise DataError(f"catchment {gauge_id}: no time series file at {path}")
        return read_daily_csv(path)

    def load_attributes(self, gauge_ids: list[str] | None = None) -> pd.DataFrame:
        if self._attributes is None:
            paths = sorted(self.root.glob("CAMELS_DE_*_attributes.csv"))
            if not paths:
                raise DataError(f"{self.root}: no CAMELS_DE_*_attributes.csv tables")
            self._attributes = read_attribute_tables(paths)
        wanted = self.gauge_ids() if gauge_ids is None else gauge_ids
        return select_gauges(self._attributes, wanted, str(self.root))
