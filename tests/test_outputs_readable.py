"""A finished run read the way its users read it: with pandas, pyarrow, DuckDB and Ray Data,
never through this package, and with no argument beyond the folder.

The run is on the NCAR CAMELS-US sample, whose ids are digits with leading zeros
(``01022500``): the case where partition-type inference drops the zero and a join on
``gauge_id`` silently returns nothing. Every partitioned folder (the stages', the baselines',
and a ``hybrid predict`` period's) must read as one table with text ids and join the summary
row for row. A copy of the run rewritten in the layout of older versions (``gauge_id=<id>/``
folders, no id inside the files) must still be read, and a rerun must move it into the current
layout without recomputing anything.
"""

from __future__ import annotations

import datetime as dt
import shutil

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from hybrid.config import config_from_dict
from hybrid.stages import predict, report, run_all
from hybrid.store import layout, partitions
from hybrid.store.runs import run_store

pytestmark = [pytest.mark.slow, pytest.mark.realdata]

GAUGES = ["01013500", "01022500", "02046000", "03010655"]
PERIOD = (dt.date(2001, 6, 1), dt.date(2002, 6, 30))
PREDICTED = f"{layout.PREDICT}/{PERIOD[0]}_{PERIOD[1]}/{layout.PREDICTIONS}"
#: every partitioned folder of the run -> the summary model its rows belong to
FOLDERS = {layout.CATCHMENTS: "hybrid", layout.ENCODED: "hybrid", layout.PREDICTIONS: "hybrid",
           layout.METRICS: None,
           layout.baseline_predictions(layout.CATCHMENT_WISE): layout.CATCHMENT_WISE,
           layout.baseline_predictions(layout.FINETUNED): layout.FINETUNED,
           PREDICTED: "hybrid"}


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
        "baselines": {"catchment_wise": True, "catchment_wise_epochs": 1,
                      "catchment_wise_hidden_size": 8, "finetune": True, "finetune_epochs": 1},
        "resources": {"executor": "local"},
    })
    assert run_all(cfg).exit_code == 0
    assert predict.run(cfg, *PERIOD).exit_code == 0
    store = run_store(cfg)
    manifests = {f: store.read_json(layout.manifest_key(f)) for f in FOLDERS}
    return cfg, store, manifests


def _rows(manifest: dict) -> int:
    return sum(r["rows"] for r in manifest["catchments"].values())


def _summary(store) -> pd.DataFrame:
    return pd.read_parquet(store.path(layout.SUMMARY))


def _merge_with_summary(frame: pd.DataFrame, store, folder: str) -> pd.DataFrame:
    """The join a user writes: on gauge_id (and model, for the per-model metrics)."""
    summary = _summary(store)
    model = FOLDERS[folder]
    if model is None:
        return frame.merge(summary, on=["gauge_id", "model"])
    return frame.merge(summary[summary.model == model], on="gauge_id")


def test_every_partitioned_folder_holds_only_partitions_and_its_manifest(run) -> None:
    _, store, _ = run
    for folder in FOLDERS:
        names = set(store.listdir(folder))
        assert names == {layout.MANIFEST_NAME} | set(GAUGES), folder
        for gauge in GAUGES:
            assert store.listdir(f"{folder}/{gauge}") == ["part-0.parquet"]
            table = store.read_table(layout.partition_key(folder, gauge))
            assert table.schema.field("gauge_id").type == pa.string()  # the file names itself
            assert set(table.column("gauge_id").to_pylist()) == {gauge}
    assert set(store.listdir(layout.SUMMARY_DIR)) == {"summary.parquet", "aggregate.parquet",
                                                      layout.MANIFEST_NAME}
    assert store.exists(layout.ATTRIBUTES) and store.exists(layout.REPORT)


@pytest.mark.parametrize("folder", list(FOLDERS))
def test_plain_pandas_reads_text_ids_and_joins_the_summary(run, folder) -> None:
    _, store, manifests = run
    frame = pd.read_parquet(store.path(folder))  # no argument: what nobody reads a README for
    assert len(frame) == _rows(manifests[folder])
    assert sorted(frame["gauge_id"].unique()) == GAUGES  # leading zeros kept
    assert set(map(type, frame["gauge_id"].astype(object))) == {str}
    assert len(_merge_with_summary(frame, store, folder)) == len(frame)


@pytest.mark.parametrize("folder", list(FOLDERS))
def test_pyarrow_reads_one_table_with_no_partitioning(run, folder) -> None:
    _, store, manifests = run
    table = pq.read_table(store.path(folder))
    assert table.num_rows == _rows(manifests[folder])
    assert table.schema.field("gauge_id").type == pa.string()
    dataset = ds.dataset(store.path(folder), format="parquet")
    one = dataset.to_table(filter=ds.field("gauge_id") == "01022500")
    assert one.num_rows == manifests[folder]["catchments"]["01022500"]["rows"]
    joined = _merge_with_summary(dataset.to_table().to_pandas(), store, folder)
    assert len(joined) == table.num_rows


@pytest.mark.parametrize("folder", list(FOLDERS))
@pytest.mark.parametrize("hive", ["", ", hive_partitioning = true"])
def test_duckdb_reads_text_ids_and_joins_the_summary(run, folder, hive) -> None:
    duckdb = pytest.importorskip("duckdb")
    _, store, manifests = run
    source = f"read_parquet('{store.path(folder)}/**/*.parquet'{hive})"
    rows = duckdb.sql(f"SELECT gauge_id, typeof(gauge_id), count(*) FROM {source} "
                      "GROUP BY ALL ORDER BY gauge_id").fetchall()
    assert [(r[0], r[1]) for r in rows] == [(g, "VARCHAR") for g in GAUGES]
    assert {r[0]: r[2] for r in rows} == {g: r["rows"]
                                          for g, r in manifests[folder]["catchments"].items()}
    model = FOLDERS[folder]
    on = "USING (gauge_id, model)" if model is None else "USING (gauge_id)"
    where = "" if model is None else f"WHERE s.model = '{model}'"
    joined = duckdb.sql(f"SELECT count(*) FROM {source} p JOIN "
                        f"read_parquet('{store.path(layout.SUMMARY)}') s {on} {where}").fetchall()
    assert joined == [(_rows(manifests[folder]),)]


def test_ray_data_reads_text_ids_and_joins_the_summary(run, ray_local) -> None:
    import ray.data

    _, store, manifests = run
    for folder in FOLDERS:
        frame = ray.data.read_parquet(store.path(folder)).to_pandas()
        assert len(frame) == _rows(manifests[folder]), folder
        assert sorted(frame["gauge_id"].unique()) == GAUGES, folder
        frame["gauge_id"] = frame["gauge_id"].astype(str)  # an Arrow-backed dtype, same text
        assert len(_merge_with_summary(frame, store, folder)) == len(frame), folder


def test_predictions_join_the_summary_in_one_duckdb_statement(run) -> None:
    """The README's query: median hybrid NSE, and days per catchment, in one statement."""
    duckdb = pytest.importorskip("duckdb")
    _, store, manifests = run
    hybrid = _summary(store).query("model == 'hybrid'").sort_values("gauge_id")
    got = duckdb.sql(
        f"SELECT s.gauge_id, count(*) AS days, any_value(s.nse) AS nse "
        f"FROM read_parquet('{store.path(layout.PREDICTIONS)}/*/*.parquet') p "
        f"JOIN read_parquet('{store.path(layout.SUMMARY)}') s USING (gauge_id) "
        "WHERE s.model = 'hybrid' GROUP BY s.gauge_id ORDER BY s.gauge_id").fetchall()
    assert [r[0] for r in got] == GAUGES
    assert sum(r[1] for r in got) == _rows(manifests[layout.PREDICTIONS])
    assert [r[2] for r in got] == pytest.approx(hybrid["nse"].tolist())


# ------------------------------------------------------------------- run folders of before
def _to_old_layout(store, folder: str) -> None:
    """Rewrite ``folder`` the way versions before the id moved into the files wrote it."""
    manifest = store.read_json(layout.manifest_key(folder))
    for gauge in GAUGES:
        table = pq.read_table(store.path(layout.partition_key(folder, gauge)))
        size = store.write_table(layout.legacy_partition_key(folder, gauge),
                                 table.drop_columns(["gauge_id"]))
        store.delete(layout.partition_dir(folder, gauge), recursive=True)
        manifest["catchments"][gauge]["bytes"] = size
    store.write_json(layout.manifest_key(folder), manifest)


@pytest.fixture
def old_run(run, tmp_path):
    cfg, store, _ = run
    shutil.copytree(store.path(), tmp_path / "ncar")
    old = cfg.replace(store=str(tmp_path))
    old_store = run_store(old)
    for folder in FOLDERS:
        _to_old_layout(old_store, folder)
    return old, old_store


def _stamps(store) -> dict[str, dict]:
    return {(folder, gauge): partitions.read_footer_json(
        store, partitions.locate(store, folder, gauge)) for folder in FOLDERS for gauge in GAUGES}


def test_an_old_run_folder_is_read_as_it_is(old_run, capsys) -> None:
    cfg, store = old_run
    assert set(store.listdir(layout.PREDICTIONS)) == \
        {layout.MANIFEST_NAME} | {f"gauge_id={g}" for g in GAUGES}
    frame = partitions.read_partition(store, layout.PREDICTIONS, "01013500").to_pandas()
    assert "gauge_id" not in frame and len(frame) > 0
    metrics = partitions.read_folder(store, layout.METRICS).to_pandas()
    assert sorted(metrics["gauge_id"].unique()) == GAUGES  # text, through the old partitioning
    assert report.run(cfg).exit_code == 0  # a read-only command moves nothing
    assert "moving" not in capsys.readouterr().err
    assert set(store.listdir(layout.PREDICTIONS)) == \
        {layout.MANIFEST_NAME} | {f"gauge_id={g}" for g in GAUGES}


def test_a_rerun_moves_an_old_run_folder_once_and_recomputes_nothing(old_run, capsys) -> None:
    cfg, store = old_run
    summary = _summary(store)
    stamps = _stamps(store)
    capsys.readouterr()
    assert run_all(cfg).exit_code == 0
    assert predict.run(cfg, *PERIOD).exit_code == 0
    err = capsys.readouterr().err.splitlines()
    moved = [line for line in err if "partition(s) from the old layout gauge_id=<id>/" in line]
    assert len(moved) == len(FOLDERS) and all("moving 4 partition(s)" in m for m in moved)
    assert not [line for line in err if "redoing" in line or "to predict (" in line
                and "0 already done" in line]
    assert _stamps(store) == stamps  # every partition kept its stamp: nothing was recomputed
    pd.testing.assert_frame_equal(_summary(store), summary)
    for folder in FOLDERS:  # and now plain readers get every row right
        assert set(store.listdir(folder)) == {layout.MANIFEST_NAME} | set(GAUGES), folder
        frame = pd.read_parquet(store.path(folder))
        assert len(_merge_with_summary(frame, store, folder)) == len(frame), folder
    capsys.readouterr()
    assert run_all(cfg).exit_code == 0  # once: the next rerun has nothing to move
    assert "old layout" not in capsys.readouterr().err
