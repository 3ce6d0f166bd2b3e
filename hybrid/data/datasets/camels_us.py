"""CAMELS-US in the original NCAR layout (Newman et al. 2015; Addor et al. 2017).

Column names are kept exactly as each forcing file spells them (``PRCP(mm/day)`` in NLDAS and
Maurer, ``prcp(mm/day)`` in Daymet) and discharge becomes ``QObs(mm/d)``, as in NeuralHydrology,
so configs written for it work unchanged.

Rows are sorted by date as they are read (later stages slice periods by date, and a year moved
to a file's end must not become a year of missing days), a repeated date is refused naming file
and line, and a streamflow file whose gauge column names another gauge is refused: the files are
found by name, and a copied or renamed file would otherwise score one catchment against another's
flow. ``-999`` and flag ``M`` are USGS's missing-value codes; any other negative discharge is
left for ``prepare`` to count and warn about, as for every dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hybrid.data.datasets import register_dataset
from hybrid.data.datasets._csv import (
    WHITESPACE,
    Table,
    daily_index,
    float_columns,
    open_folder,
    read_attribute_tables,
    read_table,
    select_gauges,
)
from hybrid.data.datasets.base import Dataset
from hybrid.errors import ConfigError, DataError

FORCINGS = ("daymet", "maurer", "maurer_extended", "nldas")
ATTRIBUTE_TABLES = ("clim", "geol", "hydro", "name", "soil", "topo", "vege")
#: one cubic foot per second as millimetres per day over one square metre
CFS_TO_MM_DAY_M2 = 0.3048**3 * 86400 * 1000
_STREAMFLOW_COLUMNS = ("gauge_id", "Year", "Mnth", "Day", "QObs", "flag")
#: USGS's code for a day without a measurement
MISSING = -999.0


@register_dataset("camels_us")
class CamelsUSDataset(Dataset):
    """``basin_mean_forcing/<forcings>/<huc2>/``, ``usgs_streamflow/<huc2>/``, attributes v2.0."""

    def __init__(self, data_dir: str | None = None, **options: Any) -> None:
        super().__init__(data_dir, **options)
        self.root = open_folder(self, data_dir, options, allowed=("forcings",))
        self.forcings = options.get("forcings") or "nldas"
        if self.forcings not in FORCINGS:
            raise ConfigError(
                f"forcings: unknown CAMELS-US forcing product {self.forcings!r}; "
                f"choose one of {', '.join(FORCINGS)}"
            )
        self._attributes: pd.DataFrame | None = None

    @property
    def _forcing_dir(self) -> Path:
        return self.root / "basin_mean_forcing" / self.forcings

    def gauge_ids(self) -> list[str]:
        if not self._forcing_dir.is_dir():
            raise DataError(f"camels_us: no forcing folder {self._forcing_dir}")
        files = self._forcing_dir.glob("*/*_lump_*_forcing_leap.txt")
        return sorted({p.name.split("_", 1)[0] for p in files})

    def load_timeseries(self, gauge_id: str) -> pd.DataFrame:
        pattern = f"{gauge_id}_lump_*_forcing_leap.txt"
        forcings, area_m2 = _read_forcings(self._find(self._forcing_dir, pattern, gauge_id))
        flow_dir = self.root / "usgs_streamflow"
        flow_file = self._find(flow_dir, f"{gauge_id}_streamflow_qc.txt", gauge_id)
        flow = _read_streamflow(flow_file, area_m2, gauge_id)
        forcings["QObs(mm/d)"] = flow.reindex(forcings.index)
        return forcings

    def load_attributes(self, gauge_ids: list[str] | None = None) -> pd.DataFrame:
        folder = self.root / "camels_attributes_v2.0"
        if self._attributes is None:
            paths = [folder / f"camels_{name}.txt" for name in ATTRIBUTE_TABLES]
            for path in paths:
                if not path.is_file():
                    raise DataError(f"{path}: attribute table missing")
            self._attributes = read_attribute_tables(paths, sep=";")
        wanted = self.gauge_ids() if gauge_ids is None else gauge_ids
        return select_gauges(self._attributes, wanted, str(folder))

    @staticmethod
    def _find(folder: Path, pattern: str, gauge_id: str) -> Path:
        # The HUC2 sub-folder is not part of the gauge id, so search one level down.
        matches = sorted(folder.glob(f"*/{pattern}"))
        if not matches:
            raise DataError(f"catchment {gauge_id}: no time series file at {folder}/*/{pattern}")
        if len(matches) > 1:
            raise DataError(f"catchment {gauge_id}: several files match {folder}/*/{pattern}")
        return matches[0]


def _read_forcings(path: Path) -> tuple[pd.DataFrame, float]:
    """Forcing table plus the catchment area (m2) from line 3 of the header."""
    with path.open("rb") as handle:
        header = [handle.readline() for _ in range(3)]
    try:
        area_m2 = float(header[2])
    except ValueError:
        raise DataError(
            f"{path}: line 3 should be the catchment area in m2, got {header[2]!r}") from None
    if not area_m2 > 0:
        raise DataError(f"{path}: line 3: catchment area {area_m2} m2 is not positive")
    table = read_table(path, sep=WHITESPACE, skiprows=3)
    missing = [c for c in ("Year", "Mnth", "Day") if c not in table.frame.columns]
    if missing:
        raise DataError(f"{path}: no {missing[0]!r} column in the header on line 4")
    data = float_columns(table, list(table.frame.columns))
    data.index = _dates(table, data)
    data = data.drop(columns=["Year", "Mnth", "Day", "Hr"], errors="ignore")
    return data.sort_index(), area_m2


def _read_streamflow(path: Path, area_m2: float, gauge_id: str) -> pd.Series:
    """Discharge in mm/day; -999 and flag ``M`` mean missing, other negatives are kept (and
    warned about by ``prepare``)."""
    table = read_table(
        path, sep=WHITESPACE, names=_STREAMFLOW_COLUMNS, dtype={"gauge_id": str, "flag": str}
    )
    other = (table.frame["gauge_id"].str.strip() != gauge_id).to_numpy()
    if other.any():
        row = int(other.argmax())
        raise DataError(f"{path}: {table.where(row)}: gauge {table.frame['gauge_id'].iloc[row]} "
                        f"in column 1, not {gauge_id}: the file holds another gauge's flow")
    data = float_columns(table, ["Year", "Mnth", "Day", "QObs"])
    data.index = _dates(table, data)
    missing = (data["QObs"] == MISSING) | (table.frame["flag"] == "M").to_numpy()
    cfs = data["QObs"].where(~missing, np.nan)
    return (cfs * CFS_TO_MM_DAY_M2 / area_m2).rename("QObs(mm/d)").sort_index()


def _dates(table: Table, data: pd.DataFrame) -> pd.DatetimeIndex:
    parts = {"year": data["Year"], "month": data["Mnth"], "day": data["Day"]}
    dates = pd.to_datetime(pd.DataFrame(parts), errors="coerce")
    return daily_index(table, dates, ("Year", "Mnth", "Day"))
