"""``prepare``: any dataset -> the canonical catchment store, on file:// and on S3 (moto)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pytest

from hybrid.config import config_from_dict, load_config
from hybrid.data.catalog import load_attributes, load_catchment
from hybrid.errors import ConfigError, DataError
from hybrid.stages.prepare import dataset_for, prepare
from hybrid.store import layout, partitions
from hybrid.store.runs import open_run
from hybrid.store.storage import Store, open_store

INPUTS = ["total_precipitation_sum", "temperature_2m_mean", "potential_evaporation_sum"]
MANIFEST = layout.manifest_key(layout.CATCHMENTS)


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every key written through any Store, in order."""
    keys: list[str] = []
    real = Store.write_bytes

    def recording(self: Store, key: str, data: bytes) -> str:
        keys.append(key)
        return real(self, key, data)

    monkeypatch.setattr(Store, "write_bytes", recording)
    return keys


def _key(gauge: str) -> str:
    return layout.partition_key(layout.CATCHMENTS, gauge)


def _present(store: Store) -> list[str]:
    return sorted(partitions.present_partitions(store, layout.CATCHMENTS))


# --- the store layout, on both backends -------------------------------------------------------


def test_prepare_synthetic(any_store, tiny_config, writes: list[str]) -> None:
    url, options = any_store
    cfg = tiny_config(url, options)
    store = open_run(cfg)
    writes.clear()
    result = prepare(cfg, store)

    gauges = [f"synthetic_00{i}" for i in range(4)]
    manifest = store.read_json(MANIFEST)
    assert sorted(result.done) == sorted(manifest["catchments"]) == gauges
    assert manifest["skipped"] == {} and manifest["failed"] == {}
    assert manifest["target"] == "streamflow"
    assert manifest["dynamic_inputs"] == INPUTS
    assert manifest["static_attributes"] == ["p_mean", "aridity", "frac_snow", "t_mean"]
    assert _present(store) == gauges
    assert writes[-1] == MANIFEST  # written last: its presence means "complete"
    assert sorted(writes[:-1]) == sorted([_key(g) for g in gauges] + [layout.ATTRIBUTES])

    # each partition: its own gauge_id as text, then date + inputs + target, float32, one row
    # per day of the needed window
    table = store.read_table(_key("synthetic_002"))
    assert table.column_names == ["gauge_id", "date"] + INPUTS + ["streamflow"]
    assert table.schema.field("gauge_id").type == pa.string()
    assert set(table.column("gauge_id").to_pylist()) == {"synthetic_002"}
    for name in INPUTS + ["streamflow"]:
        assert table.schema.field(name).type == pa.float32()
    assert pa.types.is_timestamp(table.schema.field("date").type)
    frame = load_catchment(store, "synthetic_002")
    first = cfg.train_start_date - dt.timedelta(days=cfg.seq_length - 1)
    assert frame.index[0].date() == first
    assert frame.index[-1].date() == cfg.test_end_date
    assert (frame.index.to_series().diff().dropna() == pd.Timedelta(days=1)).all()
    record = manifest["catchments"]["synthetic_002"]
    assert record["rows"] == len(frame)
    assert record["bytes"] == store.sizes(layout.CATCHMENTS)[_key("synthetic_002")]
    assert (record["start"], record["end"]) == (str(first), str(cfg.test_end_date))

    # the values are the dataset's own, as float32
    raw = dataset_for(cfg).load_timeseries("synthetic_002").loc[frame.index]
    np.testing.assert_array_equal(frame["streamflow"].to_numpy(),
                                  raw["streamflow"].to_numpy(dtype="float32"))

    attrs = load_attributes(store)
    assert list(attrs.index) == gauges
    assert list(attrs.columns) == ["p_mean", "aridity", "frac_snow", "t_mean"]
    assert (attrs.dtypes == "float32").all()

    # readable without this package, as one dataset with no partitioning argument
    ds = pads.dataset(store.path(layout.CATCHMENTS), filesystem=store.arrow_filesystem(),
                      format="parquet")
    whole = ds.to_table(filter=pads.field("gauge_id") == "synthetic_001").to_pandas()
    assert len(whole) == manifest["catchments"]["synthetic_001"]["rows"]


def test_rerun_is_a_no_op(any_store, tiny_config, writes: list[str]) -> None:
    url, options = any_store
    cfg = tiny_config(url, options, n_train_basins=1, dataset_options={
        "n_catchments": 2, "seed": 1, "start_date": "1995-01-01", "end_date": "1999-12-31"})
    store = open_run(cfg)
    first = prepare(cfg, store)
    writes.clear()
    again = prepare(cfg, store)
    assert sorted(again.done) == sorted(first.done) and again.ran == []
    assert writes == []


def test_rerun_rewrites_only_what_is_missing(any_store, tiny_config, writes) -> None:
    url, options = any_store
    cfg = tiny_config(url, options)
    store = open_run(cfg)
    prepare(cfg, store)
    first = store.read_json(MANIFEST)
    store.delete(MANIFEST)
    store.delete(_key("synthetic_001"))
    before = {g: store.read_bytes(_key(g)) for g in ("synthetic_000", "synthetic_002")}
    writes.clear()
    again = prepare(cfg, store)
    assert again.ran == ["synthetic_001"]
    assert writes == [_key("synthetic_001"), MANIFEST]  # attributes unchanged: not rewritten
    # records of reused partitions are read back from their footers (the rewritten one has a
    # new version in the store: the same bytes written again)
    def unversioned(manifest: dict) -> dict:
        return {g: {k: v for k, v in r.items() if k != "version"}
                for g, r in manifest["catchments"].items()}

    again_manifest = store.read_json(MANIFEST)
    assert unversioned(again_manifest) == unversioned(first)
    assert {g: r["version"] for g, r in again_manifest["catchments"].items()
            if g != "synthetic_001"} == {g: r["version"] for g, r in first["catchments"].items()
                                         if g != "synthetic_001"}
    for gauge, data in before.items():
        assert store.read_bytes(_key(gauge)) == data


# --- real data --------------------------------------------------------------------------------

REAL_GAUGES = ["camels_01022500", "camels_01031500", "camels_01047000"]


@pytest.mark.realdata
def test_prepare_real_caravan(caravan_dir: Path, caravan_config, tmp_path: Path) -> None:
    cfg = caravan_config(caravan_dir, REAL_GAUGES)
    store = open_run(cfg)
    assert sorted(prepare(cfg, store).done) == REAL_GAUGES
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
    early = caravan_config(caravan_dir, ["camels_01022500"], run_id="early",
                           train_start_date="1981-01-01", train_end_date="1981-12-31",
                           validation_start_date="1982-01-01",
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
    assert sorted(prepare(cfg, store).done) == ["01013500", "01022500"]  # leading zeros kept
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


# --- bad input: one-line errors, or a catchment recorded as skipped/failed ----------------------


def _run(cfg):
    store = open_run(cfg)
    return store, prepare(cfg, store)


def test_small_caravan_layout_works(caravan_files, tmp_path: Path) -> None:
    caravan_files.write({"x_1": caravan_files.lines(), "x_2": caravan_files.lines()})
    store, result = _run(caravan_files.config(str(tmp_path / "store")))
    assert sorted(result.done) == ["x_1", "x_2"]
    frame = load_catchment(store, "x_1")
    assert frame.loc["2000-03-01", "temperature_2m_mean"] == -3 + 60 % 20


def test_missing_dataset_root(caravan_files, tmp_path: Path, assert_one_line) -> None:
    cfg = caravan_files.config(str(tmp_path / "store"))  # nothing written: the folder is absent
    store = open_run(cfg)
    with pytest.raises(DataError) as excinfo:
        prepare(cfg, store)
    assert_one_line(str(excinfo.value), "caravan", caravan_files.root)
    assert not store.exists(MANIFEST)


def test_unknown_catchment(caravan_files, tmp_path: Path, assert_one_line) -> None:
    caravan_files.write({"x_1": caravan_files.lines()})
    cfg = caravan_files.config(str(tmp_path / "store"), basins=["x_1", "nope"])
    store = open_run(cfg)
    with pytest.raises(DataError) as excinfo:
        prepare(cfg, store)
    assert_one_line(str(excinfo.value), "catchment nope", "caravan")
    assert not store.exists(MANIFEST)
    assert _present(store) == []  # checked before any catchment is written
    # the typo can be fixed under the same run id: the run holds no outputs yet
    _, result = _run(cfg.replace(basins=["x_1"]))
    assert list(result.done) == ["x_1"]


def test_malformed_row_fails_that_catchment_only(caravan_files, tmp_path: Path) -> None:
    lines = caravan_files.lines()
    lines[100] = lines[100].rsplit(",", 1)[0]  # a row with a field missing
    caravan_files.write({"x_1": caravan_files.lines(), "x_2": lines})
    cfg = caravan_files.config(str(tmp_path / "store"))
    store, result = _run(cfg)
    assert list(result.done) == ["x_1"]
    assert "x_2.csv" in result.failed["x_2"] and "line 101" in result.failed["x_2"]
    assert store.read_json(MANIFEST)["failed"] == result.failed
    assert not store.exists(_key("x_2"))
    # fixed file: the rerun retries the failed catchment and keeps what was written
    kept = store.read_bytes(_key("x_1"))
    caravan_files.write({"x_2": caravan_files.lines()})
    _, again = _run(cfg)
    assert again.ran == ["x_2"] and sorted(again.done) == ["x_1", "x_2"]
    assert store.read_bytes(_key("x_1")) == kept


def test_non_numeric_cell_names_file_line_and_column(caravan_files, tmp_path: Path,
                                                    assert_one_line) -> None:
    lines = caravan_files.lines()
    lines[5] = lines[5].replace(",1.25,", ",abc,")
    caravan_files.write({"x_1": lines, "x_2": caravan_files.lines()})
    _, result = _run(caravan_files.config(str(tmp_path / "store")))
    assert_one_line(result.failed["x_1"], "x_1.csv", "line 6", "potential_evaporation_sum",
                    "'abc'")


def test_missing_column(caravan_files, tmp_path: Path, assert_one_line) -> None:
    # drop temperature_2m_mean (third field) from every row
    lines = [",".join(v for i, v in enumerate(line.split(",")) if i != 2)
             for line in caravan_files.lines()]
    caravan_files.write({"x_1": caravan_files.lines(), "x_2": lines})
    cfg = caravan_files.config(str(tmp_path / "store"))
    store = open_run(cfg)
    with pytest.raises(ConfigError) as excinfo:
        prepare(cfg, store)
    assert_one_line(str(excinfo.value), "dynamic_inputs", "'temperature_2m_mean'",
                    "catchment x_2")
    assert not store.exists(MANIFEST)


def test_missing_target_column(caravan_files, tmp_path: Path, assert_one_line) -> None:
    caravan_files.write({"x_1": [line.rsplit(",", 1)[0] for line in caravan_files.lines()]})
    cfg = caravan_files.config(str(tmp_path / "store"))
    store = open_run(cfg)
    with pytest.raises(ConfigError) as excinfo:
        prepare(cfg, store)
    assert_one_line(str(excinfo.value), "target_variables", "'streamflow'", "catchment x_1")
    assert not store.exists(MANIFEST)


def test_missing_date_column(caravan_files, tmp_path: Path, assert_one_line) -> None:
    lines = ["day" + caravan_files.lines()[0][4:]] + caravan_files.lines()[1:]
    caravan_files.write({"x_1": lines, "x_2": caravan_files.lines()})
    _, result = _run(caravan_files.config(str(tmp_path / "store")))
    assert_one_line(result.failed["x_1"], "x_1.csv", "'date'")


def test_missing_static_attribute(caravan_files, tmp_path: Path, assert_one_line) -> None:
    caravan_files.write({"x_1": caravan_files.lines()})
    cfg = caravan_files.config(str(tmp_path / "store"), static_attributes=["p_mean", "elevation"])
    store = open_run(cfg)
    with pytest.raises(ConfigError) as excinfo:
        prepare(cfg, store)
    assert_one_line(str(excinfo.value), "static_attributes", "'elevation'", "caravan")
    assert not store.exists(MANIFEST)
    assert _present(store) == []


def test_target_all_missing_in_training_is_skipped(caravan_files, tmp_path: Path,
                                                   capsys) -> None:
    def flow(day: pd.Timestamp):
        return None if day <= pd.Timestamp("2000-12-31") else 2.0

    caravan_files.write({"x_1": caravan_files.lines(), "x_2": caravan_files.lines(flow=flow),
                         "x_3": caravan_files.lines()})
    store, result = _run(caravan_files.config(str(tmp_path / "store")))
    assert sorted(result.done) == ["x_1", "x_3"]
    assert list(result.skipped) == ["x_2"]
    assert "all missing in the training period" in result.skipped["x_2"]
    assert "prepare: catchment x_2 skipped:" in capsys.readouterr().err
    assert _present(store) == ["x_1", "x_3"]
    assert list(load_attributes(store).index) == ["x_1", "x_3"]


def test_series_shorter_than_seq_length_is_skipped(caravan_files, tmp_path: Path) -> None:
    caravan_files.write({
        "x_1": caravan_files.lines(),
        "x_2": caravan_files.lines("2001-12-15", "2001-12-31"),  # 17 days
    })
    store, result = _run(caravan_files.config(str(tmp_path / "store")))
    assert list(result.done) == ["x_1"]
    assert "seq_length=30" in result.skipped["x_2"]
    assert _present(store) == ["x_1"]


def test_no_usable_catchment_is_an_error(caravan_files, tmp_path: Path, assert_one_line) -> None:
    caravan_files.write({"x_1": caravan_files.lines("2001-12-15", "2001-12-31")})
    cfg = caravan_files.config(str(tmp_path / "store"))
    store = open_run(cfg)
    with pytest.raises(DataError) as excinfo:
        prepare(cfg, store)
    assert_one_line(str(excinfo.value), "no usable catchment", "x_1", "seq_length")


def test_unknown_config_key_writes_nothing(tmp_path: Path, assert_one_line) -> None:
    path = tmp_path / "run.yml"
    path.write_text(f"run_id: bad\nstore: {tmp_path / 'store'}\ndataset: caravan\n"
                    f"data_dir: {tmp_path}\nseq_lenght: 30\n")
    with pytest.raises(ConfigError) as excinfo:
        load_config(path)
    assert_one_line(str(excinfo.value), "'seq_lenght'", "seq_length")
    assert not (tmp_path / "store").exists()


def test_gaps_become_missing_days(caravan_files, tmp_path: Path) -> None:
    lines = caravan_files.lines()
    del lines[200:210]  # ten days missing from the file
    caravan_files.write({"x_1": lines})
    store, _ = _run(caravan_files.config(str(tmp_path / "store")))
    frame = load_catchment(store, "x_1")
    assert (frame.index.to_series().diff().dropna() == pd.Timedelta(days=1)).all()
    assert int(frame["streamflow"].isna().sum()) == 10


def test_store_url_forms(caravan_files, tmp_path: Path) -> None:
    """A ``file://`` store and the plain path hold the same run."""
    caravan_files.write({"x_1": caravan_files.lines()})
    _run(caravan_files.config(f"file://{tmp_path}/store"))
    assert (tmp_path / "store" / "bad" / "catchments" / "x_1" / "part-0.parquet"
            ).is_file()
    assert open_store(str(tmp_path / "store")).child("bad").exists(MANIFEST)


def test_catchment_without_attribute_value_is_skipped(caravan_files, tmp_path: Path) -> None:
    attributes = "gauge_id,p_mean,aridity\nx_1,2.0,0.5\nx_2,,0.7\n"
    caravan_files.write({"x_1": caravan_files.lines(), "x_2": caravan_files.lines()},
                        attributes=attributes)
    store, result = _run(caravan_files.config(str(tmp_path / "store")))
    assert list(result.done) == ["x_1"]
    assert result.skipped == {"x_2": "static attribute 'p_mean' is missing"}
    assert list(load_attributes(store).index) == ["x_1"]
