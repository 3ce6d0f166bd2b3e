"""``prepare``: any dataset -> the canonical catchment store, on file:// and on S3 (moto)."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from conftest import caravan_config, tiny_config

from hybrid.config import config_from_dict, load_config
from hybrid.errors import ConfigError, DataError, HybridError
from hybrid.prepare import (
    ATTRIBUTES,
    MANIFEST,
    STAGE,
    load_attributes,
    load_catchment,
    partition_key,
    prepare,
)
from hybrid.runs import open_run
from hybrid.storage import Store, open_store

INPUTS = ["total_precipitation_sum", "temperature_2m_mean", "potential_evaporation_sum"]


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every key written through any Store, in order."""
    keys: list[str] = []
    real = Store.write_bytes

    def recording(self: Store, key: str, data: bytes) -> None:
        keys.append(key)
        real(self, key, data)

    monkeypatch.setattr(Store, "write_bytes", recording)
    return keys


def one_line(excinfo: pytest.ExceptionInfo[BaseException], *names: object) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, message
    for name in names:
        assert str(name) in message, f"{name!s} not in {message!r}"
    return message


# --- the store layout, on both backends -------------------------------------------------------


def test_prepare_synthetic(any_store, writes: list[str]) -> None:
    url, options = any_store
    cfg = tiny_config(url, options)
    store = open_run(cfg)
    writes.clear()
    manifest = prepare(cfg, store)

    gauges = [f"synthetic_00{i}" for i in range(4)]
    assert sorted(manifest["catchments"]) == gauges
    assert manifest["skipped"] == {}
    assert manifest["target"] == "streamflow"
    assert manifest["dynamic_inputs"] == INPUTS
    assert manifest["static_attributes"] == ["p_mean", "aridity", "frac_snow", "t_mean"]
    assert store.partitions(STAGE) == gauges
    assert writes[-1] == MANIFEST  # written last: its presence means "complete"
    assert sorted(writes[:-1]) == sorted([partition_key(STAGE, g) for g in gauges] + [ATTRIBUTES])

    # each partition: date + inputs + target, float32, one row per day of the needed window
    table = store.read_table(partition_key(STAGE, "synthetic_002"))
    assert table.column_names == ["date"] + INPUTS + ["streamflow"]
    for name in INPUTS + ["streamflow"]:
        assert table.schema.field(name).type == pa.float32()
    assert pa.types.is_timestamp(table.schema.field("date").type)
    frame = load_catchment(store, "synthetic_002")
    first = cfg.train_start_date - dt.timedelta(days=cfg.seq_length - 1)
    assert frame.index[0].date() == first
    assert frame.index[-1].date() == cfg.test_end_date
    assert (frame.index.to_series().diff().dropna() == pd.Timedelta(days=1)).all()
    info = manifest["catchments"]["synthetic_002"]
    assert info["n_days"] == len(frame)
    assert (info["start"], info["end"]) == (str(first), str(cfg.test_end_date))

    # the values are the dataset's own, as float32
    from hybrid.prepare import dataset_for

    raw = dataset_for(cfg).load_timeseries("synthetic_002").loc[frame.index]
    np.testing.assert_array_equal(frame["streamflow"].to_numpy(),
                                  raw["streamflow"].to_numpy(dtype="float32"))

    attrs = load_attributes(store)
    assert list(attrs.index) == gauges
    assert list(attrs.columns) == ["p_mean", "aridity", "frac_snow", "t_mean"]
    assert (attrs.dtypes == "float32").all()

    # readable without this package, as a hive-partitioned dataset
    import pyarrow.dataset as pads

    ds = pads.dataset(store.path(STAGE), filesystem=store.arrow_filesystem(), format="parquet",
                      partitioning="hive")
    whole = ds.to_table(filter=pads.field("gauge_id") == "synthetic_001").to_pandas()
    assert len(whole) == manifest["catchments"]["synthetic_001"]["n_days"]


def test_rerun_is_a_no_op(any_store, writes: list[str]) -> None:
    url, options = any_store
    cfg = tiny_config(url, options, dataset_options={
        "n_catchments": 2, "seed": 1, "start_date": "1995-01-01", "end_date": "1999-12-31"})
    store = open_run(cfg)
    first = prepare(cfg, store)
    writes.clear()
    assert prepare(cfg, store) == first
    assert writes == []


def test_rerun_rewrites_only_what_is_missing(any_store, writes: list[str]) -> None:
    url, options = any_store
    cfg = tiny_config(url, options)
    store = open_run(cfg)
    first = prepare(cfg, store)
    store.delete(MANIFEST)
    store.delete(partition_key(STAGE, "synthetic_001"))
    before = {}
    if store.is_local:
        before = {g: Path(store.path(partition_key(STAGE, g))).stat().st_mtime_ns
                  for g in ("synthetic_000", "synthetic_002", "synthetic_003")}
    writes.clear()
    again = prepare(cfg, store)
    assert writes == [partition_key(STAGE, "synthetic_001"), ATTRIBUTES, MANIFEST]
    assert again == first  # summaries of reused partitions are read back from them
    for gauge, mtime in before.items():
        assert Path(store.path(partition_key(STAGE, gauge))).stat().st_mtime_ns == mtime


# --- real data --------------------------------------------------------------------------------

REAL_GAUGES = ["camels_01022500", "camels_01031500", "camels_01047000"]


@pytest.mark.realdata
def test_prepare_real_caravan(caravan_dir: Path, tmp_path: Path) -> None:
    cfg = caravan_config(str(tmp_path / "store"), caravan_dir, REAL_GAUGES)
    store = open_run(cfg)
    manifest = prepare(cfg, store)
    assert sorted(manifest["catchments"]) == REAL_GAUGES
    csv = caravan_dir / "timeseries" / "csv" / "camels"
    first = cfg.train_start_date - dt.timedelta(days=cfg.seq_length - 1)
    for gauge in REAL_GAUGES:
        frame = load_catchment(store, gauge)
        raw = pd.read_csv(csv / f"{gauge}.csv", parse_dates=["date"], index_col="date")
        raw = raw.loc[str(first):str(cfg.test_end_date), INPUTS + ["streamflow"]]
        assert len(frame) == len(raw)
        np.testing.assert_array_equal(frame.to_numpy(), raw.to_numpy(dtype="float32"))
    # a value read from the file by eye: camels_01022500.csv, 2000-10-01
    row = load_catchment(store, "camels_01022500").loc["2000-10-01"]
    assert row.tolist() == pytest.approx([0.0, 12.72, 14.2, 0.21], abs=1e-5)
    # a window that starts before the record: the file's first row is the partition's first
    early = caravan_config(str(tmp_path / "store"), caravan_dir, ["camels_01022500"],
                           run_id="early", train_start_date="1981-01-01",
                           train_end_date="1981-12-31", validation_start_date="1982-01-01",
                           validation_end_date="1982-12-31", test_start_date="1983-01-01",
                           test_end_date="1983-12-31", seq_length=30)
    early_store = open_run(early)
    prepare(early, early_store)
    head = load_catchment(early_store, "camels_01022500").iloc[0]
    assert head.name == pd.Timestamp("1981-01-01")
    assert head.tolist() == pytest.approx([0.0, -16.5, 1.6, 1.27], abs=1e-5)
    attrs = load_attributes(store)
    # attributes_caravan_camels.csv / attributes_other_camels.csv, camels_01022500
    assert attrs.loc["camels_01022500", "p_mean"] == pytest.approx(3.2037128, rel=1e-6)
    assert attrs.loc["camels_01022500", "area"] == pytest.approx(619.1026, rel=1e-6)


@pytest.mark.realdata
def test_prepare_real_camels_us_nldas(camels_us_dir: Path, tmp_path: Path) -> None:
    inputs = ["PRCP(mm/day)", "Tmax(C)", "Tmin(C)"]
    cfg = config_from_dict({
        "run_id": "ncar", "store": str(tmp_path / "store"),
        "dataset": "camels_us", "data_dir": str(camels_us_dir), "forcings": "nldas",
        "basins": ["01022500", "01013500"],
        "dynamic_inputs": inputs, "target_variables": ["QObs(mm/d)"],
        "static_attributes": ["p_mean", "aridity", "area_gages2"],
        "train_start_date": "2000-10-01", "train_end_date": "2001-09-30",
        "validation_start_date": "2001-10-01", "validation_end_date": "2002-03-31",
        "test_start_date": "2002-04-01", "test_end_date": "2002-09-30",
        "seq_length": 10,
    })
    store = open_run(cfg)
    manifest = prepare(cfg, store)
    assert sorted(manifest["catchments"]) == ["01013500", "01022500"]  # leading zeros kept
    frame = load_catchment(store, "01022500")
    assert list(frame.columns) == inputs + ["QObs(mm/d)"]
    assert frame.index[0].date() == dt.date(2000, 9, 22)
    assert frame.index[-1].date() == dt.date(2002, 9, 30)
    # nldas/01/01022500_lump_nldas_forcing_leap.txt: "2000 10 01 12 ... 0.00 ... 11.28 11.28"
    # usgs_streamflow/01/01022500_streamflow_qc.txt: "01022500 2000 10 01 50.00 A"
    # area (header line 3) 587675987 m2; 1 cfs = 0.3048**3 m3/s = 2446575.5 mm m2 / day
    row = frame.loc["2000-10-01"]
    assert row["PRCP(mm/day)"] == 0.0
    assert row["Tmax(C)"] == pytest.approx(11.28) and row["Tmin(C)"] == pytest.approx(11.28)
    assert row["QObs(mm/d)"] == pytest.approx(50 * 2446575.5 / 587675987, rel=1e-6)
    assert row["QObs(mm/d)"] == pytest.approx(0.20816, abs=1e-5)
    # 01013500: "01013500 2000 10 01 107.00 A", area 2260093113 m2
    q = load_catchment(store, "01013500").loc["2000-10-01", "QObs(mm/d)"]
    assert q == pytest.approx(107 * 2446575.5 / 2260093113, rel=1e-6)
    assert q == pytest.approx(0.11583, abs=1e-5)
    attrs = load_attributes(store)
    assert attrs.loc["01022500", "p_mean"] == pytest.approx(3.60812594113621, rel=1e-6)
    assert attrs.loc["01022500", "aridity"] == pytest.approx(0.587356423405076, rel=1e-6)
    assert attrs.loc["01013500", "area_gages2"] == pytest.approx(2252.7, rel=1e-6)


# --- bad input: a one-line error or a recorded skip, never a manifest -------------------------

HEADER = "date," + ",".join(INPUTS) + ",streamflow"


def write_caravan(root: Path, series: dict[str, list[str]],
                  attributes: str | None = None) -> Path:
    """A Caravan layout: ``series`` maps gauge id -> CSV lines (header included)."""
    for gauge, lines in series.items():
        folder = root / "timeseries" / "csv" / gauge.split("_")[0]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{gauge}.csv").write_text("\n".join(lines) + "\n")
    regions = sorted({g.split("_")[0] for g in series})
    for region in regions:
        folder = root / "attributes" / region
        if folder.is_dir() and attributes is None:
            continue  # keep the table of an earlier call
        folder.mkdir(parents=True, exist_ok=True)
        text = attributes or "gauge_id,p_mean,aridity\n" + "".join(
            f"{g},{2.0 + i},{0.5 + i / 10}\n" for i, g in enumerate(sorted(series)))
        (folder / f"attributes_caravan_{region}.csv").write_text(text)
    return root


def good_lines(start: str = "2000-01-01", end: str = "2001-12-31", flow=None) -> list[str]:
    dates = pd.date_range(start, end, freq="D")
    rows = [HEADER]
    for i, day in enumerate(dates):
        q = flow(day) if flow else 1.0 + (i % 7) / 10
        q_text = "" if q is None or (isinstance(q, float) and math.isnan(q)) else f"{q}"
        rows.append(f"{day.date()},{i % 5 * 1.5},{-3 + i % 20},{1.25},{q_text}")
    return rows


def small_config(store: str, data_dir: Path | str, **changes):
    data = {
        "run_id": "bad", "store": store, "dataset": "caravan", "data_dir": str(data_dir),
        "static_attributes": ["p_mean", "aridity"],
        "train_start_date": "2000-03-01", "train_end_date": "2000-12-31",
        "validation_start_date": "2001-01-01", "validation_end_date": "2001-06-30",
        "test_start_date": "2001-07-01", "test_end_date": "2001-12-31",
        "seq_length": 30,
    }
    data.update(changes)
    return config_from_dict(data)


def run(cfg) -> tuple[Store, dict | None]:
    store = open_run(cfg)
    return store, prepare(cfg, store)


def test_small_caravan_layout_works(tmp_path: Path) -> None:
    root = write_caravan(tmp_path / "data", {"x_1": good_lines(), "x_2": good_lines()})
    store, manifest = run(small_config(str(tmp_path / "store"), root))
    assert sorted(manifest["catchments"]) == ["x_1", "x_2"]
    frame = load_catchment(store, "x_1")
    assert frame.loc["2000-03-01", "temperature_2m_mean"] == -3 + 60 % 20


def test_missing_dataset_root(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_dataset"
    cfg = small_config(str(tmp_path / "store"), missing)
    store = open_run(cfg)
    with pytest.raises(DataError) as excinfo:
        prepare(cfg, store)
    one_line(excinfo, "caravan", missing)
    assert not store.exists(MANIFEST)


def test_unknown_catchment(tmp_path: Path) -> None:
    root = write_caravan(tmp_path / "data", {"x_1": good_lines()})
    cfg = small_config(str(tmp_path / "store"), root, basins=["x_1", "nope"])
    store = open_run(cfg)
    with pytest.raises(DataError) as excinfo:
        prepare(cfg, store)
    one_line(excinfo, "catchment nope", "caravan")
    assert not store.exists(MANIFEST)
    assert store.partitions(STAGE) == []  # checked before any catchment is written
    # the typo can be fixed under the same run id: the run holds no outputs yet
    fixed = cfg.replace(basins=["x_1"])
    _, manifest = run(fixed)
    assert list(manifest["catchments"]) == ["x_1"]


def test_malformed_row(tmp_path: Path) -> None:
    lines = good_lines()
    lines[100] = lines[100].rsplit(",", 1)[0]  # a row with a field missing
    root = write_caravan(tmp_path / "data", {"x_1": good_lines(), "x_2": lines})
    cfg = small_config(str(tmp_path / "store"), root)
    store = open_run(cfg)
    with pytest.raises(DataError) as excinfo:
        prepare(cfg, store)
    one_line(excinfo, "x_2.csv", "line 101")
    assert not store.exists(MANIFEST)
    assert not store.exists(partition_key(STAGE, "x_2"))
    # fixed file: the rerun completes and keeps what was already written
    write_caravan(root, {"x_2": good_lines()})
    _, manifest = run(cfg)
    assert sorted(manifest["catchments"]) == ["x_1", "x_2"]


def test_non_numeric_cell(tmp_path: Path) -> None:
    lines = good_lines()
    lines[5] = lines[5].replace(",1.25,", ",abc,")
    root = write_caravan(tmp_path / "data", {"x_1": lines})
    cfg = small_config(str(tmp_path / "store"), root)
    store = open_run(cfg)
    with pytest.raises(DataError) as excinfo:
        prepare(cfg, store)
    one_line(excinfo, "x_1.csv", "line 6", "potential_evaporation_sum", "'abc'")
    assert not store.exists(MANIFEST)


def test_missing_column(tmp_path: Path) -> None:
    # drop temperature_2m_mean (third field) from every row
    lines = [",".join(v for i, v in enumerate(line.split(",")) if i != 2)
             for line in good_lines()]
    root = write_caravan(tmp_path / "data", {"x_1": good_lines(), "x_2": lines})
    cfg = small_config(str(tmp_path / "store"), root)
    store = open_run(cfg)
    with pytest.raises(ConfigError) as excinfo:
        prepare(cfg, store)
    one_line(excinfo, "dynamic_inputs", "'temperature_2m_mean'", "catchment x_2")
    assert not store.exists(MANIFEST)


def test_missing_target_column(tmp_path: Path) -> None:
    lines = [line.rsplit(",", 1)[0] for line in good_lines()]
    root = write_caravan(tmp_path / "data", {"x_1": lines})
    cfg = small_config(str(tmp_path / "store"), root)
    store = open_run(cfg)
    with pytest.raises(ConfigError) as excinfo:
        prepare(cfg, store)
    one_line(excinfo, "target_variables", "'streamflow'", "catchment x_1")
    assert not store.exists(MANIFEST)


def test_missing_date_column(tmp_path: Path) -> None:
    lines = ["day" + good_lines()[0][4:]] + good_lines()[1:]
    root = write_caravan(tmp_path / "data", {"x_1": lines})
    cfg = small_config(str(tmp_path / "store"), root)
    store = open_run(cfg)
    with pytest.raises(DataError) as excinfo:
        prepare(cfg, store)
    one_line(excinfo, "x_1.csv", "'date'")
    assert not store.exists(MANIFEST)


def test_missing_static_attribute(tmp_path: Path) -> None:
    root = write_caravan(tmp_path / "data", {"x_1": good_lines()})
    cfg = small_config(str(tmp_path / "store"), root, static_attributes=["p_mean", "elevation"])
    store = open_run(cfg)
    with pytest.raises(ConfigError) as excinfo:
        prepare(cfg, store)
    one_line(excinfo, "static_attributes", "'elevation'", "caravan")
    assert not store.exists(MANIFEST)
    assert store.partitions(STAGE) == []


def test_catchment_without_attribute_value_is_skipped(tmp_path: Path) -> None:
    attributes = "gauge_id,p_mean,aridity\nx_1,2.0,0.5\nx_2,,0.7\n"
    root = write_caravan(tmp_path / "data", {"x_1": good_lines(), "x_2": good_lines()},
                         attributes=attributes)
    store, manifest = run(small_config(str(tmp_path / "store"), root))
    assert list(manifest["catchments"]) == ["x_1"]
    assert "p_mean" in manifest["skipped"]["x_2"]
    assert list(load_attributes(store).index) == ["x_1"]


def test_target_all_nan_in_training_is_skipped(tmp_path: Path, capsys) -> None:
    def flow(day: pd.Timestamp):
        return None if day <= pd.Timestamp("2000-12-31") else 2.0

    root = write_caravan(tmp_path / "data", {"x_1": good_lines(), "x_2": good_lines(flow=flow),
                                             "x_3": good_lines()})
    store, manifest = run(small_config(str(tmp_path / "store"), root))
    assert sorted(manifest["catchments"]) == ["x_1", "x_3"]
    assert list(manifest["skipped"]) == ["x_2"]
    assert "all NaN" in manifest["skipped"]["x_2"] and "training" in manifest["skipped"]["x_2"]
    assert "skipping catchment x_2" in capsys.readouterr().err
    assert store.partitions(STAGE) == ["x_1", "x_3"]
    assert list(load_attributes(store).index) == ["x_1", "x_3"]


def test_series_shorter_than_seq_length_is_skipped(tmp_path: Path) -> None:
    root = write_caravan(tmp_path / "data", {
        "x_1": good_lines(),
        "x_2": good_lines("2001-12-15", "2001-12-31"),  # 17 days
    })
    store, manifest = run(small_config(str(tmp_path / "store"), root))
    assert list(manifest["catchments"]) == ["x_1"]
    assert "seq_length=30" in manifest["skipped"]["x_2"]
    assert store.partitions(STAGE) == ["x_1"]


def test_no_usable_catchment_is_an_error(tmp_path: Path) -> None:
    root = write_caravan(tmp_path / "data", {"x_1": good_lines("2001-12-15", "2001-12-31")})
    cfg = small_config(str(tmp_path / "store"), root)
    store = open_run(cfg)
    with pytest.raises(HybridError) as excinfo:
        prepare(cfg, store)
    one_line(excinfo, "no usable catchment", "x_1", "seq_length")
    assert not store.exists(MANIFEST)


def test_unknown_config_key_writes_nothing(tmp_path: Path) -> None:
    root = write_caravan(tmp_path / "data", {"x_1": good_lines()})
    path = tmp_path / "run.yml"
    path.write_text(f"run_id: bad\nstore: {tmp_path / 'store'}\ndataset: caravan\n"
                    f"data_dir: {root}\nseq_lenght: 30\n")
    with pytest.raises(ConfigError) as excinfo:
        load_config(path)
    one_line(excinfo, "'seq_lenght'", "seq_length")
    assert not (tmp_path / "store").exists()


def test_gaps_become_nan_days(tmp_path: Path) -> None:
    lines = good_lines()
    del lines[200:210]  # ten days missing from the file
    root = write_caravan(tmp_path / "data", {"x_1": lines})
    store, manifest = run(small_config(str(tmp_path / "store"), root))
    frame = load_catchment(store, "x_1")
    assert (frame.index.to_series().diff().dropna() == pd.Timedelta(days=1)).all()
    assert int(frame["streamflow"].isna().sum()) == 10
    assert manifest["catchments"]["x_1"]["n_days"] == len(frame)


def test_store_url_forms(tmp_path: Path) -> None:
    """A ``file://`` store and the plain path hold the same run."""
    root = write_caravan(tmp_path / "data", {"x_1": good_lines()})
    cfg = small_config(f"file://{tmp_path}/store", root)
    run(cfg)
    assert (tmp_path / "store" / "bad" / "catchments" / "gauge_id=x_1" / "part-0.parquet").is_file()
    plain = open_store(str(tmp_path / "store")).child("bad")
    assert plain.exists(MANIFEST)
