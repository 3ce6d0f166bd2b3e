"""The Caravan and CAMELS-US (NCAR) loaders on the real files, plus their error messages.

Expected values were read off the files by hand (``head``/``grep``), so a loader that shifts a
row, drops a leading zero or mis-converts units fails here. Error cases build tiny files in
``tmp_path`` and check that the ``DataError`` is one line naming the file or catchment, because
that line is all a CLI user sees.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hybrid.data.datasets import get_dataset
from hybrid.data.datasets.camels_us import CamelsUSDataset
from hybrid.data.datasets.caravan import CaravanDataset
from hybrid.errors import ConfigError, DataError

CARAVAN_VARS = [
    "total_precipitation_sum",
    "temperature_2m_mean",
    "potential_evaporation_sum",
    "streamflow",
]
NLDAS_VARS = ["Dayl(s)", "PRCP(mm/day)", "SRAD(W/m2)", "SWE(mm)", "Tmax(C)", "Tmin(C)", "Vp(Pa)"]


def one_line_error(excinfo: pytest.ExceptionInfo[BaseException], *names: object) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    for name in names:
        assert str(name) in message, f"{name!s} not in {message!r}"
    return message


# --- Caravan, real data -----------------------------------------------------------------------


@pytest.mark.realdata
def test_caravan_first_row_and_extent(caravan_dir: Path) -> None:
    ds = get_dataset("caravan", str(caravan_dir))
    assert isinstance(ds, CaravanDataset)
    df = ds.load_timeseries("camels_01022500")
    assert list(df.columns) == CARAVAN_VARS
    assert df.index.name == "date"
    assert isinstance(df.index, pd.DatetimeIndex)
    assert all(dtype == np.float64 for dtype in df.dtypes)
    assert len(df) == 12418
    assert df.index[0] == pd.Timestamp("1981-01-01")
    assert df.index[-1] == pd.Timestamp("2014-12-31")
    assert df.iloc[0].tolist() == [0.0, -16.5, 1.6, 1.27]


@pytest.mark.realdata
def test_caravan_empty_streamflow_cell_is_nan(caravan_dir: Path) -> None:
    # camels_01022500.csv line 12328: "2014-10-01,0.21,12.98,11.6," (line 12327 has 0.19)
    df = CaravanDataset(str(caravan_dir)).load_timeseries("camels_01022500")
    assert np.isnan(df.loc["2014-10-01", "streamflow"])
    assert df.loc["2014-10-01", "potential_evaporation_sum"] == 11.6
    assert df.loc["2014-09-30", "streamflow"] == 0.19


@pytest.mark.realdata
def test_caravan_gauge_ids_and_attributes(caravan_dir: Path) -> None:
    ds = CaravanDataset(str(caravan_dir))
    ids = ds.gauge_ids()
    assert len(ids) == 421
    assert ids == sorted(ids) and ids[0] == "camels_01022500"
    attrs = ds.load_attributes()
    assert attrs.shape[0] == 421
    assert attrs.index.name == "gauge_id"
    assert list(attrs.index) == ids
    for column in ("p_mean", "aridity", "area", "pet_mean", "frac_snow"):
        assert attrs[column].dtype == np.float64
    assert attrs.loc["camels_01022500", "gauge_name"] == "Narraguagus River at Cherryfield, Maine"
    assert attrs.loc["camels_01022500", "area"] == pytest.approx(619.1025954030504)
    subset = ds.load_attributes(["camels_01031500", "camels_01022500"])
    assert list(subset.index) == ["camels_01031500", "camels_01022500"]


@pytest.mark.realdata
def test_caravan_unknown_gauge(caravan_dir: Path) -> None:
    ds = CaravanDataset(str(caravan_dir))
    with pytest.raises(DataError) as excinfo:
        ds.load_timeseries("camels_99999999")
    one_line_error(excinfo, "catchment camels_99999999", caravan_dir / "timeseries")
    with pytest.raises(DataError) as excinfo:
        ds.load_attributes(["camels_99999999"])
    one_line_error(excinfo, "catchment camels_99999999")


# --- CAMELS-US (NCAR), real data --------------------------------------------------------------


@pytest.mark.realdata
def test_camels_us_first_nldas_row_and_unit_conversion(camels_us_dir: Path) -> None:
    ds = get_dataset("camels_us", str(camels_us_dir))
    assert isinstance(ds, CamelsUSDataset) and ds.forcings == "nldas"
    df = ds.load_timeseries("02064000")
    assert list(df.columns) == [*NLDAS_VARS, "QObs(mm/d)"]
    assert df.index.name == "date" and len(df) == 1096
    # nldas/03/02064000_lump_nldas_forcing_leap.txt line 5: 2000 01 01 12 34214.40 0.00 240.48 ...
    first = df.loc["2000-01-01"]
    assert first[NLDAS_VARS].tolist() == [34214.40, 0.0, 240.48, 0.0, 8.01, 8.01, 710.71]
    # usgs_streamflow/03/02064000_streamflow_qc.txt: "02064000 2000 01 01    79.00 A", and the
    # forcing header says the area is 427165365 m2. 1 ft = 0.3048 m, so 79 cfs is
    # 79 * 0.3048**3 = 2.2370 m3/s = 193279.5 m3/day, spread over the area: 0.45247 mm/day.
    m3_per_day = 79 * 0.3048**3 * 86400
    assert m3_per_day == pytest.approx(193279.5, abs=0.1)
    assert first["QObs(mm/d)"] == pytest.approx(m3_per_day / 427165365 * 1000, rel=1e-12)
    assert first["QObs(mm/d)"] == pytest.approx(0.45247, abs=1e-5)
    # "02064000 2000 01 23    78.00 A:e": estimated values are kept
    assert df.loc["2000-01-23", "QObs(mm/d)"] == pytest.approx(78 / 79 * first["QObs(mm/d)"])


@pytest.mark.realdata
def test_camels_us_streamflow_reindexed_onto_forcing_dates(camels_us_dir: Path) -> None:
    # 06221400: NLDAS runs 1993-09-29..2013-10-03, the gauge record only starts on 2002-06-30
    # ("06221400 2002 06 30   495.00 A"; area 228339304 m2) and its -999/M rows are in 2014.
    df = CamelsUSDataset(str(camels_us_dir)).load_timeseries("06221400")
    q = df["QObs(mm/d)"]
    assert df.index[0] == pd.Timestamp("1993-09-29") and df.index[-1] == pd.Timestamp("2013-10-03")
    assert q.first_valid_index() == pd.Timestamp("2002-06-30")
    assert q["2002-06-30"] == pytest.approx(495 * 0.3048**3 * 86400 * 1000 / 228339304)
    assert q[:"2002-06-29"].isna().all()


@pytest.mark.realdata
def test_camels_us_gauge_ids_keep_leading_zeros(camels_us_dir: Path) -> None:
    ds = CamelsUSDataset(str(camels_us_dir))
    ids = ds.gauge_ids()
    assert len(ids) == 22
    assert all(len(g) == 8 and g.isdigit() for g in ids)
    assert ids[:2] == ["01013500", "01022500"]
    attrs = ds.load_attributes()
    assert list(attrs.index) == ids
    row = attrs.loc["01022500"]
    assert row["gauge_name"] == "Narraguagus River at Cherryfield, Maine"
    assert row["huc_02"] == 1
    assert attrs.loc["01013500", "dom_land_cover"] == "Mixed Forests"  # padded in the file
    for column in ("p_mean", "aridity", "area_gages2", "frac_forest", "soil_porosity"):
        assert attrs[column].dtype == np.float64


@pytest.mark.realdata
def test_camels_us_forcings_option_switches_product(camels_us_dir: Path) -> None:
    daymet = CamelsUSDataset(str(camels_us_dir), forcings="daymet")
    assert daymet.gauge_ids() == ["01022500", "01547700", "02064000", "03015500"]
    df = daymet.load_timeseries("01022500")  # daymet/01/01022500_lump_cida_forcing_leap.txt
    assert df.index[0] == pd.Timestamp("2000-01-01") and df.index[-1] == pd.Timestamp("2003-12-31")
    # Daymet spells its columns in lower case; they are kept as in the file (NeuralHydrology too)
    assert df.loc["2000-01-01", ["prcp(mm/day)", "tmax(C)", "tmin(C)", "vp(Pa)"]].tolist() == [
        0.0,
        -2.36,
        -14.36,
        202.51,
    ]
    nldas = CamelsUSDataset(str(camels_us_dir)).load_timeseries("01022500")
    assert nldas.loc["2000-01-01", "Tmax(C)"] == -6.44
    assert nldas.index[-1] == pd.Timestamp("2002-12-31")
    # the same gauge record either way, only reindexed onto each product's dates
    both = df.index.intersection(nldas.index)
    pd.testing.assert_series_equal(df.loc[both, "QObs(mm/d)"], nldas.loc[both, "QObs(mm/d)"])
    extended = CamelsUSDataset(str(camels_us_dir), forcings="maurer_extended")
    assert extended.load_timeseries("01022500").loc["2000-01-01", "tmax(C)"] == -2.09


def test_camels_us_bad_forcings_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as excinfo:
        CamelsUSDataset(str(tmp_path), forcings="era5")
    one_line_error(excinfo, "forcings", "era5", "nldas")
    with pytest.raises(ConfigError) as excinfo:
        CamelsUSDataset(str(tmp_path), forcing="daymet")
    one_line_error(excinfo, "forcing")


# --- CAMELS-US (NCAR) layout in tmp_path: missing values -------------------------------------

FORCING_HEADER = "Year Mnth Day Hr\t" + "\t".join(NLDAS_VARS)


def write_camels_us(root: Path, gauge: str, area: int, days: list[str], flow: list[str]) -> None:
    forcing = root / "basin_mean_forcing" / "nldas" / "10" / f"{gauge}_lump_nldas_forcing_leap.txt"
    forcing.parent.mkdir(parents=True)
    values = "41817.60\t0.34\t386.54\t0.00\t5.78\t5.78\t323.48"
    rows = [f"{d.replace('-', ' ')} 12\t{values}" for d in days]
    forcing.write_text("\n".join(["  43.14", "3521.00", f" {area}", FORCING_HEADER, *rows]) + "\n")
    streamflow = root / "usgs_streamflow" / "10" / f"{gauge}_streamflow_qc.txt"
    streamflow.parent.mkdir(parents=True)
    streamflow.write_text("\n".join(flow) + "\n")


def test_camels_us_missing_flow_is_nan(tmp_path: Path) -> None:
    days = ["2014-10-25", "2014-10-26", "2014-10-27", "2014-10-28", "2014-10-29", "2014-10-30"]
    flow = [  # the first three are real rows of 06221400_streamflow_qc.txt
        "06221400 2014 10 25    36.00 A",
        "06221400 2014 10 26    36.00 A",
        "06221400 2014 10 27  -999.00 M",
        "06221400 2014 10 28    12.00 M",
        "06221400 2014 10 29    -5.00 A:e",
    ]  # 2014-10-30 has no row at all
    write_camels_us(tmp_path, "06221400", 228339304, days, flow)
    df = CamelsUSDataset(str(tmp_path)).load_timeseries("06221400")
    q = df["QObs(mm/d)"]
    assert list(df.index.strftime("%Y-%m-%d")) == days
    assert q["2014-10-25"] == pytest.approx(36 * 0.3048**3 * 86400 * 1000 / 228339304)
    assert q[["2014-10-27", "2014-10-28", "2014-10-30"]].isna().all()
    # -999 and flag M are USGS's missing codes; another negative is data that prepare counts
    # and warns about (tests/FAULTS.md #28), never a silent gap
    assert q["2014-10-29"] == pytest.approx(-5 * 0.3048**3 * 86400 * 1000 / 228339304)


def test_camels_us_negative_flow_is_counted_and_warned_about(tmp_path: Path, caplog) -> None:
    from hybrid.config import config_from_dict
    from hybrid.data.canonical import clean_values

    days = ["2014-10-25", "2014-10-26", "2014-10-27"]
    flow = ["06221400 2014 10 25    -3.00 A", "06221400 2014 10 26    -4.00 A",
            "06221400 2014 10 27  -999.00 M"]
    write_camels_us(tmp_path, "06221400", 228339304, days, flow)
    raw = CamelsUSDataset(str(tmp_path)).load_timeseries("06221400")
    cfg = config_from_dict({"run_id": "x", "dataset": "camels_us", "data_dir": str(tmp_path),
                            "dynamic_inputs": ["PRCP(mm/day)"], "target_variables": ["QObs(mm/d)"],
                            "static_attributes": []})
    frame, warnings = clean_values(cfg, "06221400", raw[["PRCP(mm/day)", "QObs(mm/d)"]])
    assert warnings == ["2 negative value(s) of target 'QObs(mm/d)' (first on 2014-10-25) "
                        "treated as missing"]
    assert frame["QObs(mm/d)"].isna().all()


def _days(start: str, n: int) -> list[str]:
    import pandas as pd

    return [str(d.date()) for d in pd.date_range(start, periods=n)]


def _flow(gauge: str, days: list[str]) -> list[str]:
    return [f"{gauge} {d.replace('-', ' ')}    {10 + i % 7}.00 A" for i, d in enumerate(days)]


@pytest.mark.parametrize("order", ["year_moved_to_the_end", "shuffled"])
def test_camels_us_rows_out_of_order_are_sorted(tmp_path: Path, order: str) -> None:
    """Periods are sliced by date: rows out of order must read back in date order, with every
    day's values (they used to become a year of missing days, or a skipped catchment)."""
    import numpy as np

    days = _days("2000-01-01", 800)
    write_camels_us(tmp_path / "sorted", "06221400", 228339304, days, _flow("06221400", days))
    expected = CamelsUSDataset(str(tmp_path / "sorted")).load_timeseries("06221400")
    moved = days[366:] + days[:366] if order == "year_moved_to_the_end" \
        else list(np.random.default_rng(0).permutation(days))
    flow = _flow("06221400", days)
    flow = [flow[days.index(d)] for d in moved]
    write_camels_us(tmp_path / "moved", "06221400", 228339304, moved, flow)
    got = CamelsUSDataset(str(tmp_path / "moved")).load_timeseries("06221400")
    import pandas as pd

    pd.testing.assert_frame_equal(got, expected)


def test_camels_us_repeated_date_names_file_and_date(tmp_path: Path) -> None:
    days = ["2014-10-25", "2014-10-26", "2014-10-25"]
    write_camels_us(tmp_path, "06221400", 228339304, days, _flow("06221400", days[:2]))
    with pytest.raises(DataError) as excinfo:
        CamelsUSDataset(str(tmp_path)).load_timeseries("06221400")
    one_line_error(excinfo, "06221400_lump_nldas_forcing_leap.txt", "2014-10-25", "repeats")


def test_camels_us_streamflow_of_another_gauge_is_refused(tmp_path: Path) -> None:
    days = ["2014-10-25", "2014-10-26"]
    write_camels_us(tmp_path, "06221400", 228339304, days, _flow("01013500", days))
    with pytest.raises(DataError) as excinfo:
        CamelsUSDataset(str(tmp_path)).load_timeseries("06221400")
    one_line_error(excinfo, "06221400_streamflow_qc.txt", "01013500", "not 06221400")


def test_camels_us_malformed_streamflow_names_line(tmp_path: Path) -> None:
    flow = ["06221400 2014 10 25    36.00 A", "06221400 2014 10 26    3G.00 A"]
    write_camels_us(tmp_path, "06221400", 228339304, ["2014-10-25", "2014-10-26"], flow)
    with pytest.raises(DataError) as excinfo:
        CamelsUSDataset(str(tmp_path)).load_timeseries("06221400")
    one_line_error(excinfo, "06221400_streamflow_qc.txt", "line 2", "3G.00")


def test_camels_us_missing_streamflow_file(tmp_path: Path) -> None:
    write_camels_us(tmp_path, "06221400", 228339304, ["2014-10-25"], ["x"])
    (tmp_path / "usgs_streamflow" / "10" / "06221400_streamflow_qc.txt").unlink()
    with pytest.raises(DataError) as excinfo:
        CamelsUSDataset(str(tmp_path)).load_timeseries("06221400")
    one_line_error(excinfo, "catchment 06221400", "streamflow")


# --- bad input, Caravan layout in tmp_path ----------------------------------------------------

HEADER = "date,total_precipitation_sum,temperature_2m_mean,potential_evaporation_sum,streamflow"


def write_caravan(root: Path, gauge: str, lines: list[str]) -> Path:
    region = gauge.split("_")[0]
    path = root / "timeseries" / "csv" / region / f"{gauge}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_missing_dataset_root(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_folder"
    for name in ("caravan", "camels_us", "camels_de"):
        with pytest.raises(DataError) as excinfo:
            get_dataset(name, str(missing))
        one_line_error(excinfo, name, missing)
    with pytest.raises(DataError) as excinfo:
        CaravanDataset(None)
    one_line_error(excinfo, "data_dir")


def test_unknown_gauge(tmp_path: Path) -> None:
    write_caravan(tmp_path, "lamah_1", [HEADER, "1981-01-01,0.0,-16.5,1.6,1.27"])
    ds = CaravanDataset(str(tmp_path))
    assert ds.gauge_ids() == ["lamah_1"]
    expected = tmp_path / "timeseries" / "csv" / "lamah" / "lamah_2.csv"
    with pytest.raises(DataError) as excinfo:
        ds.load_timeseries("lamah_2")
    one_line_error(excinfo, "catchment lamah_2", expected)
    with pytest.raises(DataError) as excinfo:
        ds.load_timeseries("nounderscore")
    one_line_error(excinfo, "catchment nounderscore")


@pytest.mark.parametrize(
    ("bad_row", "words"),
    [
        ("1981-01-02,7.69,abc,2.45,1.2", ["line 3", "temperature_2m_mean", "'abc'"]),
        ("1981-13-45,7.69,-7.92,2.45,1.2", ["line 3", "unparsable date", "1981-13-45"]),
        ("1981-01-02,7.69,-7.92,2.45,1.2,9", ["line 3", "6 fields, expected 5"]),
        ("1981-01-02,7.69,-7.92,2.45", ["line 3", "4 fields, expected 5"]),
        ("1981-01-01,7.69,-7.92,2.45,1.2", ["line 3", "1981-01-01 repeats"]),
    ],
    ids=["non-numeric", "bad-date", "too-many-fields", "too-few-fields", "duplicate-date"],
)
def test_malformed_row(tmp_path: Path, bad_row: str, words: list[str]) -> None:
    lines = [HEADER, "1981-01-01,0.0,-16.5,1.6,1.27", bad_row, "1981-01-03,0.0,-1.0,1.0,1.0"]
    path = write_caravan(tmp_path, "camels_00000001", lines)
    with pytest.raises(DataError) as excinfo:
        CaravanDataset(str(tmp_path)).load_timeseries("camels_00000001")
    one_line_error(excinfo, path, *words)


def test_attributes_from_several_regions(tmp_path: Path) -> None:
    write_caravan(tmp_path, "lamah_1", [HEADER, "1981-01-01,0.0,-16.5,1.6,1.27"])
    write_caravan(tmp_path, "camelsgb_7", [HEADER, "1981-01-01,0.0,-16.5,1.6,1.27"])
    tables = {
        "lamah": {
            "caravan": "gauge_id,p_mean\nlamah_1,2.5\n",
            "other": "gauge_id,area\nlamah_1,10\n",
        },
        "camelsgb": {"caravan": "gauge_id,p_mean\ncamelsgb_7,3.5\n"},
    }
    for region, by_kind in tables.items():
        (tmp_path / "attributes" / region).mkdir(parents=True)
        for kind, text in by_kind.items():
            (tmp_path / "attributes" / region / f"attributes_{kind}_{region}.csv").write_text(text)
    attrs = CaravanDataset(str(tmp_path)).load_attributes()
    assert list(attrs.index) == ["camelsgb_7", "lamah_1"]
    assert attrs["p_mean"].tolist() == [3.5, 2.5]
    assert np.isnan(attrs.loc["camelsgb_7", "area"]) and attrs.loc["lamah_1", "area"] == 10


def test_missing_date_column(tmp_path: Path) -> None:
    path = write_caravan(tmp_path, "camels_00000001", ["day,streamflow", "1981-01-01,1.27"])
    with pytest.raises(DataError) as excinfo:
        CaravanDataset(str(tmp_path)).load_timeseries("camels_00000001")
    one_line_error(excinfo, path, "'date'")


def test_valid_tmp_file_with_gaps_and_blank_cells(tmp_path: Path) -> None:
    lines = [HEADER, "1981-01-01,0.0,-16.5,1.6,1.27", "1981-01-02,,-7.92,2.45,", ""]
    write_caravan(tmp_path, "camels_00000001", lines)
    df = CaravanDataset(str(tmp_path)).load_timeseries("camels_00000001")
    assert len(df) == 2
    assert df["total_precipitation_sum"].isna().tolist() == [False, True]
    assert df["streamflow"].isna().tolist() == [False, True]


def test_netcdf_without_xarray(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "timeseries" / "netcdf" / "camels" / "camels_00000001.nc"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"CDF\x01")
    monkeypatch.setitem(sys.modules, "xarray", None)  # makes "import xarray" fail
    ds = CaravanDataset(str(tmp_path))
    assert ds.gauge_ids() == ["camels_00000001"]
    with pytest.raises(DataError) as excinfo:
        ds.load_timeseries("camels_00000001")
    one_line_error(excinfo, path, "xarray")


def test_netcdf_roundtrip(tmp_path: Path) -> None:
    xarray = pytest.importorskip("xarray")
    pytest.importorskip("scipy")
    dates = pd.date_range("1981-01-01", periods=3, name="date")
    frame = pd.DataFrame({"streamflow": [1.0, np.nan, 2.0]}, index=dates)
    path = tmp_path / "timeseries" / "netcdf" / "camels" / "camels_00000001.nc"
    path.parent.mkdir(parents=True)
    xarray.Dataset.from_dataframe(frame).to_netcdf(path)
    df = CaravanDataset(str(tmp_path)).load_timeseries("camels_00000001")
    pd.testing.assert_frame_equal(df, frame, check_freq=False, check_index_type=False)


def test_caravan_rejects_options(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as excinfo:
        CaravanDataset(str(tmp_path), forcings="nldas")
    one_line_error(excinfo, "forcings", "caravan")
