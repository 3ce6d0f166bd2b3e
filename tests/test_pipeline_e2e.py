"""``hybrid run`` end to end: prepare -> pretrain -> encode -> decode + score -> report.

On synthetic data on local Ray with the store on a folder and on a real S3 endpoint (moto
server), in this process without Ray, and on four real Caravan catchments. Failures are made
real (an encoded partition without one observed training day), never mocked, and resumption is
checked on the objects in the store.
"""

from __future__ import annotations

import io
import math

import matplotlib.image as mpimg
import numpy as np
import pytest

from hybrid.evaluation.metrics import nse
from hybrid.execution.session import Session
from hybrid.stages import decode, run_all
from hybrid.stages import report as report_stage
from hybrid.store import layout, partitions
from hybrid.store.runs import read_timings, run_store
from hybrid.store.storage import Store

pytestmark = pytest.mark.slow

REAL = ["camels_01022500", "camels_01031500", "camels_01047000", "camels_01052500"]
FIGURES = ("report/nse_cdf.png", "report/nse_scatter.png", "report/hydrographs.png",
           "report/training.png")
FAST = {"epochs": 1}


def _stamps(store: Store, keys: list[str]) -> dict[str, tuple]:
    """(contents, modification time) of each object: both stay put when nothing rewrote it."""
    store.invalidate()
    out = {}
    for key in keys:
        info = store.fs.info(store.path(key))
        out[key] = (store.read_bytes(key), info.get("mtime", info.get("LastModified")))
    return out


def _keys(store: Store, folder: str) -> list[str]:
    return [layout.partition_key(folder, g) for g in partitions.present_partitions(store, folder)]


def check_outputs(store: Store, gauges: list[str], split: dict) -> None:
    """What every finished run holds: summary, aggregates and a report with decodable plots."""
    store.invalidate()
    summary = store.read_frame(layout.SUMMARY)
    assert sorted(summary.gauge_id.unique()) == sorted(gauges)
    core = summary[summary.model.isin(["regional", "hybrid"])]
    assert len(core) == 2 * len(gauges)
    assert core.groupby("gauge_id").model.apply(sorted).tolist() == [["hybrid", "regional"]] \
        * len(gauges)
    assert (summary.status == "done").all() and (summary.error == "").all()
    assert np.isfinite(core["nse"]).all() and np.isfinite(core["kge_2012"]).all()
    assert (summary.in_training == summary.gauge_id.isin(split["train"])).all()
    assert (core.n_test > 300).all() and (core.n_train > 300).all()

    # each NSE is the NSE of the catchment's own predictions file
    for gauge in gauges:
        pred = partitions.read_partition(store, layout.PREDICTIONS, gauge).to_pandas()
        row = core[(core.gauge_id == gauge)].set_index("model")
        for model in ("hybrid", "regional"):
            assert row.loc[model, "nse"] == pytest.approx(
                nse(pred["observed"].to_numpy(np.float64), pred[model].to_numpy(np.float64)),
                rel=1e-12, abs=1e-12)
            assert row.loc[model, "n_negative"] == int((pred[model] < 0).sum())

    agg = store.read_frame(layout.AGGREGATE)
    med = agg[agg.metric == "nse"].set_index(["group", "model"])
    groups = {"all": core, "in_training": core[core.in_training],
              "out_of_training": core[~core.in_training]}
    for group, part in groups.items():
        for model in ("regional", "hybrid"):
            values = part.loc[part.model == model, "nse"]
            assert med.loc[(group, model), "median"] == pytest.approx(values.median())
            assert med.loc[(group, model), "n"] == len(values)

    report = store.read_text(layout.REPORT)
    assert "## Median skill" in report and "median NSE" in report
    for key in FIGURES:
        assert store.exists(key)
        assert f"]({key.split('/')[-1]})" in report
    assert "- total:" in report and "](../summary/summary.parquet)" in report
    image = mpimg.imread(io.BytesIO(store.read_bytes(FIGURES[0])), format="png")
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 400
    assert image.std() > 0  # not a blank canvas


# ---------------------------------------------------------------------------- synthetic


def test_synthetic_run_on_ray_and_resume(ray_local, any_store, tiny_config, capsys) -> None:
    url, options = any_store
    cfg = tiny_config(url, options, resources={"executor": "ray"}, **FAST)
    outcome = run_all(cfg)
    store = run_store(cfg)
    assert outcome.path == store.uri(layout.REPORT) and outcome.exit_code == 0
    gauges = sorted(partitions.read_manifest(store, layout.ENCODED)["catchments"])
    assert len(gauges) == 4
    split = store.read_json(layout.SPLIT)
    check_outputs(store, gauges, split)
    timings = read_timings(store)
    assert {"prepare", "pretrain", "encode", "decode"} <= set(timings)
    assert timings["decode"]["catchments"] == 4 and timings["decode"]["failed"] == 0
    assert store.read_json("summary/_manifest.json")["status"] == {"done": 4}
    # the actor's training lines are recapped in the run's own log
    assert "pretrain: epoch 1 train loss" in store.read_text(layout.RUN_LOG)

    # delete one catchment's outputs: a rerun of decode recomputes that one only
    lost = gauges[1]
    kept = [g for g in gauges if g != lost]
    before = _stamps(store, [layout.partition_key(f, g)
                             for f in (layout.METRICS, layout.PREDICTIONS) for g in kept])
    store.delete(layout.partition_dir(layout.METRICS, lost), recursive=True)
    store.delete(layout.partition_dir(layout.PREDICTIONS, lost), recursive=True)
    capsys.readouterr()
    session = Session.open(cfg)
    try:
        decode.run(cfg, session)
    finally:
        session.close()
    err = capsys.readouterr().err
    assert f"decode: redoing catchment {lost}: its partition is missing" in err
    assert "decode: 1 of 4 catchments to fit (3 already done)" in err
    assert _stamps(store, list(before)) == before
    assert read_timings(store)["decode"]["catchments"] == 1
    report_stage.run(cfg)  # the summary changed (a new fit time): the report follows it
    check_outputs(store, gauges, split)

    # the whole pipeline again: nothing is retrained, re-encoded, refitted or rewritten
    ckpts = _stamps(store, [f"checkpoints/{n}" for n in store.listdir("checkpoints")])
    outputs = _stamps(store, _keys(store, layout.ENCODED) + _keys(store, layout.METRICS)
                      + _keys(store, layout.PREDICTIONS) + [layout.SUMMARY, layout.REPORT,
                                                            layout.CONFIG]
                      + [layout.manifest_key(f) for f in (layout.CATCHMENTS, layout.ENCODED,
                                                          layout.PREDICTIONS, layout.METRICS)])
    timings = read_timings(store)
    run_all(cfg)
    err = capsys.readouterr().err
    assert "pretrain: already done" in err
    assert "decode: 0 of 4 catchments to fit (4 already done)" in err
    assert _stamps(store, list(ckpts)) == ckpts
    assert _stamps(store, list(outputs)) == outputs
    assert read_timings(store) == timings
    check_outputs(store, gauges, split)


def test_the_same_run_without_ray_gives_the_same_numbers(tiny_config, tmp_path) -> None:
    """Serial (no Ray) and Ray execute the same plain functions, seeded the same way."""
    local = tiny_config(str(tmp_path / "local"), **FAST)
    run_all(local)
    store = run_store(local)
    assert not store.exists("ray")  # nothing Ray-specific in the run folder either way
    summary = store.read_frame(layout.SUMMARY)
    assert (summary.node_id == "local").all()
    check_outputs(store, sorted(summary.gauge_id.unique()), store.read_json(layout.SPLIT))


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory, tiny_config):
    """A finished synthetic run on a folder (no Ray), with two catchment-wise LSTMs."""
    cfg = tiny_config(str(tmp_path_factory.mktemp("e2e")), run_id="cw", **FAST,
                      baselines={"catchment_wise": True, "catchment_wise_epochs": 1,
                                 "catchment_wise_hidden_size": 8,
                                 "catchment_wise_max_basins": 2})
    run_all(cfg)
    return cfg, run_store(cfg)


def test_catchment_wise_baseline(synthetic_run) -> None:
    cfg, store = synthetic_run
    gauges = sorted(partitions.read_manifest(store, layout.ENCODED)["catchments"])
    summary = store.read_frame(layout.SUMMARY)
    site = summary[summary.model == "catchment_wise"]
    assert sorted(site.gauge_id) == sorted(gauges[:2])
    assert np.isfinite(site["nse"]).all() and (site["fit_seconds"] > 0).all()
    assert (site.status == "done").all()
    folder = layout.baseline_predictions("catchment_wise")
    for g in site.gauge_id:
        pred = partitions.read_partition(store, layout.PREDICTIONS, g).to_pandas()
        cw = partitions.read_partition(store, folder, g).to_pandas()
        merged = pred.merge(cw, on="date", how="left")
        assert np.isfinite(merged["catchment_wise"]).all()
        assert site.set_index("gauge_id").loc[g, "nse"] == pytest.approx(
            nse(merged["observed"].to_numpy(np.float64),
                merged["catchment_wise"].to_numpy(np.float64)))
    assert sorted(partitions.present_partitions(store, folder)) == gauges[:2]
    assert summary.groupby("model").gauge_id.nunique().to_dict() == {
        "catchment_wise": 2, "hybrid": 4, "regional": 4}
    timing = read_timings(store)["catchment_wise"]
    assert timing["catchments"] == 2 and timing["task_seconds"] > 0
    agg = store.read_frame(layout.AGGREGATE)
    assert "catchment_wise" in set(agg.model)
    assert "catchment_wise" in store.read_text(layout.REPORT)


def test_failing_catchment_is_recorded_and_retried(synthetic_run, capsys) -> None:
    """A decoder that raises is one failed row with its error, the rest finish, the report
    names it, and a rerun fits only that catchment."""
    cfg, store = synthetic_run
    gauges = sorted(partitions.read_manifest(store, layout.ENCODED)["catchments"])
    bad = gauges[-1]
    good = _stamps(store, [layout.partition_key(layout.METRICS, g) for g in gauges if g != bad])
    key = layout.partition_key(layout.ENCODED, bad)
    original = store.read_bytes(key)
    table = store.read_frame(key)
    table.loc[table["split"] == "train", "observed"] = np.nan
    stamp = partitions.read_footer_json(store, key)
    session = Session.open(cfg)
    try:
        # decode alone: a rerun of encode would heal the altered partition first
        partitions.write_partition(store, layout.ENCODED, bad, table, stamp)
        store.delete(layout.partition_dir(layout.PREDICTIONS, bad), recursive=True)
        capsys.readouterr()
        summary = decode.run(cfg, session).summary
        err = capsys.readouterr().err
        assert f"decode: catchment {bad} failed: ValueError: only 0 observed training days" \
            in err
        assert "summary: 1 catchment(s) failed" in err
        failed = summary[summary.gauge_id == bad]
        assert set(failed.status) == {"failed"} and set(failed.stage) == {"decode"}
        assert set(failed.model) == {"regional", "hybrid", "catchment_wise"} - (
            set() if bad in gauges[:2] else {"catchment_wise"})
        assert set(failed.error) == {"ValueError: only 0 observed training days"}
        assert (summary[summary.gauge_id != bad].status == "done").all()
        assert store.read_json("summary/_manifest.json")["status"] == {"done": 3, "failed": 1}
        assert read_timings(store)["decode"] == {
            **read_timings(store)["decode"], "catchments": 1, "failed": 1}
        assert _stamps(store, list(good)) == good
        report_stage.run(cfg, session)
        report = store.read_text(layout.REPORT)
        assert "## Failed catchments (1)" in report
        assert f"- {bad} at decode (hybrid, regional): ValueError: only 0 observed" in report
    finally:
        store.write_bytes(key, original)
        session.close()

    # with a valid partition again, a rerun fits only the failed catchment
    outcome = run_all(cfg)
    assert "decode: 1 of 4 catchments to fit (3 already done)" in capsys.readouterr().err
    assert outcome.exit_code == 0
    assert (outcome.summary.status == "done").all()
    assert np.isfinite(outcome.summary.loc[outcome.summary.gauge_id == bad, "nse"]).all()
    assert _stamps(store, list(good)) == good


# ---------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_real_catchments_end_to_end(caravan_dir, caravan_config, tmp_path) -> None:
    cfg = caravan_config(caravan_dir, REAL, store=str(tmp_path / "store"), hidden_size=8,
                         max_train_samples_per_epoch=1000, **FAST)
    assert run_all(cfg).exit_code == 0
    store = run_store(cfg)
    assert sorted(partitions.read_manifest(store, layout.ENCODED)["catchments"]) == REAL
    split = store.read_json(layout.SPLIT)
    assert len(split["train"]) == 3 and len(split["out_of_training"]) == 1
    check_outputs(store, REAL, split)
    summary = store.read_frame(layout.SUMMARY)
    hybrid = summary[summary.model == "hybrid"]
    # 2007-10..2009-09, daily: both years of the test period, minus unobserved days
    assert (hybrid.n_test > 600).all() and (hybrid.n_test <= 731).all()
    assert math.isfinite(hybrid["nse"].median())


def test_report_of_a_finished_run_writes_nothing(synthetic_run) -> None:
    cfg, store = synthetic_run
    before = _stamps(store, [layout.REPORT, *FIGURES])
    assert report_stage.run(cfg).path == store.uri(layout.REPORT)
    assert _stamps(store, list(before)) == before
