"""The CAMELS-DE v1 loader on a tiny dataset built in ``tmp_path`` in the v1 layout.

CAMELS-DE is not part of the shared real data, so the fixture mirrors its layout and column
names (two gauges, thirty days, an empty discharge cell, a German gauge name).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hybrid.data.datasets import get_dataset
from hybrid.data.datasets.camels_de import CamelsDEDataset
from hybrid.errors import DataError

COLUMNS = [
    "date",
    "discharge_vol_obs",
    "discharge_spec_obs",
    "precipitation_mean",
    "precipitation_stdev",
    "radiation_global_mean",
    "temperature_mean",
    "temperature_min",
    "temperature_max",
]
GAUGES = ["DE110000", "DE110010"]


def timeseries_path(root: Path, gauge: str) -> Path:
    return root / "timeseries" / f"CAMELS_DE_hydromet_timeseries_{gauge}.csv"


@pytest.fixture
def camels_de_dir(tmp_path: Path) -> Path:
    (tmp_path / "timeseries").mkdir()
    dates = pd.date_range("2000-01-01", periods=30)
    for k, gauge in enumerate(GAUGES):
        lines = [",".join(COLUMNS)]
        for i, day in enumerate(dates):
            q = "" if (k == 0 and i == 5) else f"{1.5 + i + k:.2f}"
            values = [q, q, f"{0.1 * i:.1f}", "0.3", "50.0", f"{i - 2.5}", "-1.0", "8.0"]
            lines.append(",".join([day.strftime("%Y-%m-%d"), *values]))
        timeseries_path(tmp_path, gauge).write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "CAMELS_DE_topographic_attributes.csv").write_text(
        "gauge_id,gauge_name,area,elev_mean\n"
        "DE110000,Wördern,402.1,512.3\n"
        "DE110010,Rheinfelden,34523.0,1020.5\n",
        encoding="utf-8",
    )
    (tmp_path / "CAMELS_DE_climatic_attributes.csv").write_text(
        "gauge_id,p_mean,aridity\nDE110010,3.1,0.55\nDE110000,2.4,0.81\n", encoding="utf-8"
    )
    return tmp_path


def test_gauge_ids_and_timeseries(camels_de_dir: Path) -> None:
    ds = get_dataset("camels_de", str(camels_de_dir))
    assert isinstance(ds, CamelsDEDataset)
    assert ds.gauge_ids() == GAUGES
    df = ds.load_timeseries("DE110000")
    assert list(df.columns) == COLUMNS[1:]
    assert df.index.name == "date" and len(df) == 30
    assert df.index[0] == pd.Timestamp("2000-01-01") and df.index[-1] == pd.Timestamp("2000-01-30")
    assert all(dtype == np.float64 for dtype in df.dtypes)
    assert df.loc["2000-01-01", "discharge_spec_obs"] == 1.5
    assert df.loc["2000-01-01", "temperature_mean"] == -2.5
    assert np.isnan(df.loc["2000-01-06", "discharge_spec_obs"])
    assert ds.load_timeseries("DE110010").loc["2000-01-06", "discharge_spec_obs"] == 7.5


def test_attributes_merged_on_gauge_id(camels_de_dir: Path) -> None:
    ds = CamelsDEDataset(str(camels_de_dir))
    attrs = ds.load_attributes()
    assert list(attrs.index) == GAUGES and attrs.index.name == "gauge_id"
    assert set(attrs.columns) == {"gauge_name", "area", "elev_mean", "p_mean", "aridity"}
    assert attrs.loc["DE110000", "gauge_name"] == "Wördern"
    assert attrs.loc["DE110000", "p_mean"] == 2.4  # rows matched by id, not by position
    assert attrs.loc["DE110010", "area"] == 34523.0
    assert list(ds.load_attributes(["DE110010"]).index) == ["DE110010"]


def test_unknown_gauge(camels_de_dir: Path) -> None:
    ds = CamelsDEDataset(str(camels_de_dir))
    with pytest.raises(DataError) as excinfo:
        ds.load_timeseries("DE999999")
    message = str(excinfo.value)
    assert "\n" not in message and "catchment DE999999" in message
    assert str(timeseries_path(camels_de_dir, "DE999999")) in message
    with pytest.raises(DataError, match="catchment DE999999: no attributes"):
        ds.load_attributes(["DE999999"])


def test_malformed_row_names_file_and_line(camels_de_dir: Path) -> None:
    path = timeseries_path(camels_de_dir, "DE110010")
    lines = path.read_text().splitlines()
    lines[4] = lines[4].replace(",50.0,", ",5O.0,")
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as excinfo:
        CamelsDEDataset(str(camels_de_dir)).load_timeseries("DE110010")
    message = str(excinfo.value)
    assert "\n" not in message
    assert str(path) in message and "line 5" in message and "radiation_global_mean" in message


def test_missing_attribute_tables(tmp_path: Path) -> None:
    (tmp_path / "timeseries").mkdir()
    with pytest.raises(DataError, match="CAMELS_DE_\\*_attributes.csv"):
        CamelsDEDataset(str(tmp_path)).load_attributes()
