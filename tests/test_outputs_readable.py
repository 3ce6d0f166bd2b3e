"""A finished run read the way its users read it: with pandas, pyarrow.dataset, DuckDB and Ray
Data, never through this package.

The run is on the NCAR CAMELS-US sample, whose ids are digits with leading zeros
(``01022500``): the case where partition-type inference drops the zero and a join on
``gauge_id`` silently returns nothing. Every partitioned folder must read as one table with text
ids, using the explicit partitioning the README documents, and the predictions must join the
summary row for row.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from hybrid.config import config_from_dict
from hybrid.stages import run_all
from hybrid.store import layout
from hybrid.store.runs import run_store

pytestmark = [pytest.mark.slow, pytest.mark.realdata]

GAUGES = ["01013500", "01022500", "02046000", "03010655"]
FOLDERS = [layout.CATCHMENTS, layout.ENCODED, layout.PREDICTIONS, layout.METRICS]


@pytest.fixture(scope="module")
def run(camels_us_dir, tmp_path_factory):
    cfg = config_from_dict({
        "run_id": "ncar", "store": str(tmp_path_factory.mktemp("readable")),
        "dataset": "camels_us", "data_dir": str(camels_us_dir), "forcings": "nldas",
        "basins": GAUGES, "dynamic_inputs": ["PRCP(mm/day)", "Tmax(C)", "Tmin(C)"],
        "target_variables": ["QObs(mm/d)"], "static_attributes": ["p_mean", "aridity"],
        # 01022500's NLDAS file in the sample covers 2000-2002 only
        "train_start_date": "2000-03-01", "train_end_date": "2001-09-30",
        "validation_start_date": "2001-10-01", "validation_end_date": "2002-03-31",
        "test_start_date": "2002-04-01", "test_end_date": "2002-12-31",
        "seq_length": 60, "hidden_size": 8, "epochs": 1, "batch_size": 128,
        "max_train_samples_per_epoch": 512, "max_validation_samples": 256,
        "n_train_basins": 3, "num_threads": 1,
        "decoder": {"name": "rf", "params": {"n_estimators": 10}},
        "resources": {"executor": "local"},
    })
    assert run_all(cfg).exit_code == 0
    store = run_store(cfg)
    manifests = {f: store.read_json(layout.manifest_key(f)) for f in FOLDERS}
    return store, manifests


def _rows(manifest: dict) -> int:
    return sum(r["rows"] for r in manifest["catchments"].values())


def test_every_partitioned_folder_holds_only_partitions_and_its_manifest(run) -> None:
    store, _ = run
    for folder in FOLDERS:
        names = set(store.listdir(folder))
        assert names == {layout.MANIFEST_NAME} | {f"gauge_id={g}" for g in GAUGES}, folder
        for gauge in GAUGES:
            assert store.listdir(f"{folder}/gauge_id={gauge}") == ["part-0.parquet"]
            key = layout.partition_key(folder, gauge)
            assert "gauge_id" not in store.read_table(key).column_names  # not repeated inside
    assert set(store.listdir(layout.SUMMARY_DIR)) == {"summary.parquet", "aggregate.parquet",
                                                      layout.MANIFEST_NAME}
    assert store.exists(layout.ATTRIBUTES) and store.exists(layout.REPORT)


@pytest.mark.parametrize("folder", FOLDERS)
def test_pandas_reads_text_ids_with_the_documented_partitioning(run, folder) -> None:
    store, manifests = run
    frame = pd.read_parquet(store.path(folder), partitioning=layout.partitioning())
    assert len(frame) == _rows(manifests[folder])
    assert sorted(frame["gauge_id"].astype(str).unique()) == GAUGES  # leading zeros kept
    assert set(map(type, frame["gauge_id"].astype(object))) == {str}


@pytest.mark.parametrize("folder", FOLDERS)
def test_pyarrow_dataset_reads_one_table(run, folder) -> None:
    store, manifests = run
    dataset = ds.dataset(store.path(folder), format="parquet",
                         partitioning=layout.partitioning())
    table = dataset.to_table()
    assert table.num_rows == _rows(manifests[folder])
    assert table.schema.field("gauge_id").type == pa.string()
    assert sorted(set(table.column("gauge_id").to_pylist())) == GAUGES
    one = dataset.to_table(filter=ds.field("gauge_id") == "01022500")
    assert one.num_rows == manifests[folder]["catchments"]["01022500"]["rows"]


@pytest.mark.parametrize("folder", FOLDERS)
def test_duckdb_reads_the_hive_folders(run, folder) -> None:
    duckdb = pytest.importorskip("duckdb")
    store, manifests = run
    query = (f"SELECT gauge_id, count(*) AS n FROM read_parquet('{store.path(folder)}/*/*.parquet',"
             " hive_partitioning = true, hive_types = {'gauge_id': VARCHAR}) GROUP BY gauge_id "
             "ORDER BY gauge_id")
    rows = duckdb.sql(query).fetchall()
    assert [r[0] for r in rows] == GAUGES
    assert {g: n for g, n in rows} == {g: r["rows"]
                                       for g, r in manifests[folder]["catchments"].items()}
    kinds = duckdb.sql(f"SELECT DISTINCT typeof(gauge_id) FROM read_parquet("
                       f"'{store.path(folder)}/*/*.parquet', hive_partitioning = true, "
                       "hive_types = {'gauge_id': VARCHAR})").fetchall()
    assert kinds == [("VARCHAR",)]


def test_ray_data_reads_the_folders_without_duplicates(run, ray_local) -> None:
    import ray.data

    store, manifests = run
    for folder in FOLDERS:
        frame = ray.data.read_parquet(store.path(folder), file_extensions=["parquet"]) \
            .to_pandas()
        assert len(frame) == _rows(manifests[folder]), folder
        assert sorted(frame["gauge_id"].unique()) == GAUGES, folder


def test_predictions_join_the_summary(run) -> None:
    duckdb = pytest.importorskip("duckdb")
    store, manifests = run
    summary = pd.read_parquet(store.path(layout.SUMMARY))
    assert summary["gauge_id"].tolist()[:2] == ["01013500", "01013500"]
    predictions = pd.read_parquet(store.path(layout.PREDICTIONS),
                                  partitioning=layout.partitioning())
    predictions["gauge_id"] = predictions["gauge_id"].astype(str)
    hybrid = summary[summary.model == "hybrid"]
    joined = predictions.merge(hybrid, on="gauge_id")
    assert len(joined) == len(predictions) == _rows(manifests[layout.PREDICTIONS])
    # the README's DuckDB query: median hybrid NSE, and days per catchment, in one statement
    got = duckdb.sql(
        f"SELECT s.gauge_id, count(*) AS days, any_value(s.nse) AS nse "
        f"FROM read_parquet('{store.path(layout.PREDICTIONS)}/*/*.parquet', "
        "hive_partitioning = true, hive_types = {'gauge_id': VARCHAR}) p "
        f"JOIN read_parquet('{store.path(layout.SUMMARY)}') s USING (gauge_id) "
        "WHERE s.model = 'hybrid' GROUP BY s.gauge_id ORDER BY s.gauge_id").fetchall()
    assert [r[0] for r in got] == GAUGES
    assert sum(r[1] for r in got) == len(predictions)
    assert [r[2] for r in got] == pytest.approx(hybrid.sort_values("gauge_id")["nse"].tolist())
