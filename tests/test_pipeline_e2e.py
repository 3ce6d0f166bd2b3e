"""``hybrid run`` end to end on local Ray: prepare -> pretrain -> encode -> decode -> report.

On synthetic data with the store on a folder and on a real S3 endpoint (moto server), and on four
real Caravan catchments on a folder. Failures are made real (an encoded partition without one
observed training day), never mocked, and resumption is checked on the objects in the store.
"""

from __future__ import annotations

import io
import math

import matplotlib.image as mpimg
import numpy as np
import pytest
from conftest import caravan_config, tiny_config

from hybrid import checkpoints as ckpt
from hybrid.decode import METRICS, PREDICTIONS
from hybrid.encoding import MANIFEST as ENCODED_MANIFEST
from hybrid.encoding import encoded_key
from hybrid.metrics import nse
from hybrid.pipeline import stage_decode, stage_report, stage_run
from hybrid.prepare import partition_key
from hybrid.runs import TIMINGS, run_store
from hybrid.storage import Store
from hybrid.summary import AGGREGATE, SUMMARY

pytestmark = pytest.mark.slow

REAL = ["camels_01022500", "camels_01031500", "camels_01047000", "camels_01052500"]
FIGURES = ("report/nse_cdf.png", "report/nse_scatter.png", "report/hydrographs.png")
FAST = {"epochs": 1}


def _stamps(store: Store, keys: list[str]) -> dict[str, tuple]:
    """(contents, modification time) of each object: both stay put when nothing rewrote it."""
    store.invalidate()
    out = {}
    for key in keys:
        info = store.fs.info(store.path(key))
        out[key] = (store.read_bytes(key), info.get("mtime", info.get("LastModified")))
    return out


def _keys(store: Store, stage: str) -> list[str]:
    return [partition_key(stage, g) for g in store.partitions(stage)]


def check_outputs(store: Store, gauges: list[str], split: dict) -> None:
    """What every finished run holds: summary, aggregates and a report with decodable plots."""
    store.invalidate()
    summary = store.read_frame(SUMMARY)
    assert sorted(summary.gauge_id.unique()) == sorted(gauges)
    core = summary[summary.model.isin(["regional", "hybrid"])]
    assert len(core) == 2 * len(gauges)
    assert core.groupby("gauge_id").model.apply(sorted).tolist() == [["hybrid", "regional"]] \
        * len(gauges)
    assert (summary.status == "done").all() and (summary.error == "").all()
    assert np.isfinite(core["nse"]).all() and np.isfinite(core["kge_2012"]).all()
    assert (summary.in_training == summary.gauge_id.isin(split["train"])).all()
    assert (core.n_test > 300).all() and (core.n_train > 300).all()

    # the hybrid's NSE is the NSE of its own predictions file
    for gauge in gauges:
        pred = store.read_frame(partition_key(PREDICTIONS, gauge))
        row = core[(core.gauge_id == gauge)].set_index("model")
        for model in ("hybrid", "regional"):
            assert row.loc[model, "nse"] == pytest.approx(
                nse(pred["observed"].to_numpy(np.float64), pred[model].to_numpy(np.float64)),
                rel=1e-12, abs=1e-12)

    agg = store.read_frame(AGGREGATE)
    med = agg[agg.metric == "nse"].set_index(["group", "model"])
    groups = {"all": core, "in_training": core[core.in_training],
              "out_of_training": core[~core.in_training]}
    for group, part in groups.items():
        for model in ("regional", "hybrid"):
            values = part.loc[part.model == model, "nse"]
            assert med.loc[(group, model), "median"] == pytest.approx(values.median())
            assert med.loc[(group, model), "n"] == len(values)

    report = store.read_text("report/report.md")
    assert "## Median skill" in report and "median NSE" in report
    for key in FIGURES:
        assert store.exists(key)
        assert f"]({key.split('/')[-1]})" in report
    image = mpimg.imread(io.BytesIO(store.read_bytes(FIGURES[0])), format="png")
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 400
    assert image.std() > 0  # not a blank canvas


# ---------------------------------------------------------------------------- synthetic


def test_synthetic_run_and_resume(ray_local, any_store, capsys) -> None:
    url, options = any_store
    cfg = tiny_config(url, options, **FAST)
    report = stage_run(cfg)
    store = run_store(cfg)
    assert report == store.uri("report/report.md")
    gauges = sorted(store.read_json(ENCODED_MANIFEST)["catchments"])
    assert len(gauges) == 4
    split = store.read_json(ckpt.SPLIT)
    check_outputs(store, gauges, split)
    timings = store.read_json(TIMINGS)
    assert {"prepare", "pretrain", "encode", "decode"} <= set(timings)
    assert timings["decode"]["catchments"] == 4 and timings["decode"]["failed"] == 0
    assert store.read_json("metrics/_manifest.json")["status"] == {"done": 4}

    # delete one catchment's outputs: a rerun of decode recomputes that one only
    lost = gauges[1]
    kept = [g for g in gauges if g != lost]
    before = _stamps(store, [partition_key(s, g) for s in (METRICS, PREDICTIONS)
                             for g in kept])
    store.delete(f"{METRICS}/gauge_id={lost}", recursive=True)
    store.delete(f"{PREDICTIONS}/gauge_id={lost}", recursive=True)
    capsys.readouterr()
    stage_decode(cfg)
    assert "decode: 1 of 4 catchments to fit (3 already done)" in capsys.readouterr().err
    assert _stamps(store, list(before)) == before
    assert store.read_json(TIMINGS)["decode"]["catchments"] == 1
    assert store.partitions(METRICS) == store.partitions(PREDICTIONS) == gauges
    check_outputs(store, gauges, split)

    # the whole pipeline again: nothing is retrained, re-encoded or refitted
    ckpts = _stamps(store, [f"checkpoints/{n}" for n in store.listdir("checkpoints")])
    outputs = _stamps(store, _keys(store, "encoded") + _keys(store, METRICS)
                      + _keys(store, PREDICTIONS) + ["catchments/_manifest.json"])
    timings = store.read_json(TIMINGS)
    stage_run(cfg)
    err = capsys.readouterr().err
    assert "decode: 0 of 4 catchments to fit (4 already done)" in err
    assert "pretrain:" not in err and "encode:" not in err
    assert _stamps(store, list(ckpts)) == ckpts
    assert _stamps(store, list(outputs)) == outputs
    assert store.read_json(TIMINGS) == timings
    check_outputs(store, gauges, split)


@pytest.fixture(scope="module")
def synthetic_run(ray_local, tmp_path_factory):
    """A finished synthetic run on a folder, with two catchment-wise LSTMs."""
    cfg = tiny_config(str(tmp_path_factory.mktemp("e2e")), run_id="cw", **FAST,
                      baselines={"catchment_wise": True, "catchment_wise_epochs": 1,
                                 "catchment_wise_hidden_size": 8,
                                 "catchment_wise_max_basins": 2})
    stage_run(cfg)
    return cfg, run_store(cfg)


def test_catchment_wise_baseline(synthetic_run) -> None:
    cfg, store = synthetic_run
    gauges = store.read_json(ENCODED_MANIFEST)["catchments"]
    summary = store.read_frame(SUMMARY)
    site = summary[summary.model == "catchment_wise"]
    assert sorted(site.gauge_id) == sorted(gauges[:2])
    assert np.isfinite(site["nse"]).all() and (site["fit_seconds"] > 0).all()
    assert (site.status == "done").all()
    for g in site.gauge_id:
        pred = store.read_frame(partition_key(PREDICTIONS, g))
        assert np.isfinite(pred["catchment_wise"]).all()
        assert site.set_index("gauge_id").loc[g, "nse"] == pytest.approx(
            nse(pred["observed"].to_numpy(np.float64),
                pred["catchment_wise"].to_numpy(np.float64)))
    for g in gauges[2:]:
        assert "catchment_wise" not in store.read_frame(partition_key(PREDICTIONS, g))
    assert summary.groupby("model").gauge_id.nunique().to_dict() == {
        "catchment_wise": 2, "hybrid": 4, "regional": 4}
    timing = store.read_json(TIMINGS)["catchment_wise"]
    assert timing["catchments"] == 2 and timing["task_seconds"] > 0
    agg = store.read_frame(AGGREGATE)
    assert "catchment_wise" in set(agg.model)
    assert "catchment_wise" in store.read_text("report/report.md")


def test_failing_catchment_is_recorded_and_retried(synthetic_run, capsys) -> None:
    cfg, store = synthetic_run
    gauges = store.read_json(ENCODED_MANIFEST)["catchments"]
    bad = gauges[-1]
    good = _stamps(store, [partition_key(METRICS, g) for g in gauges if g != bad])
    original = store.read_bytes(encoded_key(bad))
    table = store.read_frame(encoded_key(bad))
    table.loc[table["split"] == "train", "observed"] = np.nan
    try:
        store.write_table(encoded_key(bad), table)
        store.delete(f"{METRICS}/gauge_id={bad}", recursive=True)
        capsys.readouterr()
        summary = stage_decode(cfg)
        err = capsys.readouterr().err
        assert f"decode: catchment {bad} failed: ValueError: only 0 observed training days" \
            in err
        failed = summary[summary.gauge_id == bad]
        assert failed.to_dict("records")[0]["status"] == "failed"
        assert failed.error.tolist() == ["ValueError: only 0 observed training days"]
        assert (summary[summary.gauge_id != bad].status == "done").all()
        assert store.read_frame(SUMMARY).equals(summary)
        assert store.read_json("metrics/_manifest.json")["status"] == {"done": 3, "failed": 1}
        assert store.read_json(TIMINGS)["decode"] == {
            **store.read_json(TIMINGS)["decode"], "catchments": 1, "failed": 1}
        assert _stamps(store, list(good)) == good
        stage_report(cfg)
        report = store.read_text("report/report.md")
        assert "## Failed catchments (1)" in report and f"- {bad}: ValueError" in report
    finally:
        store.write_bytes(encoded_key(bad), original)

    # with a valid partition again, a rerun fits only the failed catchment
    summary = stage_decode(cfg)
    assert "decode: 1 of 4 catchments to fit (3 already done)" in capsys.readouterr().err
    assert (summary.status == "done").all() and set(summary.gauge_id) == set(gauges)
    assert np.isfinite(summary.loc[summary.gauge_id == bad, "nse"]).all()
    assert _stamps(store, list(good)) == good


# ---------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_real_catchments_end_to_end(ray_local, caravan_dir, tmp_path) -> None:
    cfg = caravan_config(str(tmp_path / "store"), caravan_dir, REAL, hidden_size=8,
                         max_train_samples_per_epoch=1000, **FAST)
    stage_run(cfg)
    store = run_store(cfg)
    assert sorted(store.read_json(ENCODED_MANIFEST)["catchments"]) == REAL
    split = store.read_json(ckpt.SPLIT)
    assert len(split["train"]) == 3 and len(split["out_of_training"]) == 1
    check_outputs(store, REAL, split)
    summary = store.read_frame(SUMMARY)
    hybrid = summary[summary.model == "hybrid"]
    # 2007-10..2009-09, daily: both years of the test period, minus unobserved days
    assert (hybrid.n_test > 600).all() and (hybrid.n_test <= 731).all()
    assert math.isfinite(hybrid["nse"].median())
