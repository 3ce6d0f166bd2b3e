"""Per-catchment decoders (hybrid.decoders) and the decode unit of work (hybrid.decode), no Ray.

A tiny synthetic run is prepared, pre-trained and encoded once for the module with the plain
functions the Ray actor hosts; every test decodes from its encoded partitions. Expected metrics
are recomputed from the written predictions files with ``hybrid.metrics``, never taken from the
code under test.
"""

from __future__ import annotations

import io

import joblib
import numpy as np
import pandas as pd
import pytest
from conftest import tiny_config

from hybrid import checkpoints as ckpt
from hybrid.decode import (
    BASELINE_KEY,
    METRICS,
    PREDICTIONS,
    decode_catchment,
    failure_rows,
    metrics_key,
)
from hybrid.decoders import check_decoder, decoder_names, make_decoder
from hybrid.encode import CatchmentEncoder, write_encoded_manifest
from hybrid.encoding import encoded_key, feature_columns
from hybrid.errors import ConfigError
from hybrid.metrics import METRICS as METRIC_FUNCTIONS
from hybrid.metrics import kge_2012, nse
from hybrid.pipeline import stage_prepare
from hybrid.prepare import partition_key
from hybrid.runs import run_store
from hybrid.storage import Store
from hybrid.summary import aggregate, collect
from hybrid.training import train_regional

HIDDEN = 8
SMALL = {"rf": {"n_estimators": 10}, "extra_trees": {"n_estimators": 10},
         "hist_gradient_boosting": {"max_iter": 20}}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(store, cfg, split): 4 synthetic catchments, 3 in training, encoded with a 1-epoch LSTM."""
    cfg = tiny_config(str(tmp_path_factory.mktemp("dec")), epochs=1, seq_length=60,
                      hidden_size=HIDDEN, num_threads=1)
    stage_prepare(cfg)
    store = run_store(cfg)
    trained = train_regional(store, cfg)
    encoder = CatchmentEncoder(store, cfg, trained, "cpu")
    gauges = sorted(store.read_json("catchments/_manifest.json")["catchments"])
    results = [encoder(g) for g in gauges]
    assert all(r["status"] == "done" for r in results)
    write_encoded_manifest(store, cfg, results)
    return store, cfg, store.read_json(ckpt.SPLIT)


def _one(split: dict, group: str) -> str:
    return split["train" if group == "in" else "out_of_training"][0]


# ---------------------------------------------------------------------------- decoders


@pytest.mark.parametrize("name", ["rf", "extra_trees", "hist_gradient_boosting"])
def test_each_decoder_fits_and_predicts(name: str) -> None:
    assert name in decoder_names()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 6)).astype(np.float32)
    y = np.tanh(x[:, 0]) + np.tanh(x[:, 1]) + 0.5 * x[:, 2] + 0.05 * rng.normal(size=1000)
    model = make_decoder(name, SMALL[name], n_jobs=1, seed=3)
    model.fit(x[:800], y[:800])
    pred = model.predict(x[800:])
    assert pred.shape == (200,) and np.isfinite(pred).all()
    assert nse(y[800:], pred) > 0.3  # it learnt the signal, not a constant
    again = make_decoder(name, SMALL[name], n_jobs=1, seed=3).fit(x[:800], y[:800])
    np.testing.assert_array_equal(again.predict(x[800:]), pred)  # seeded


def test_decoder_params_reach_the_estimator() -> None:
    model = make_decoder("rf", {"n_estimators": 7, "min_samples_leaf": 2}, n_jobs=2, seed=5)
    assert (model.n_estimators, model.min_samples_leaf, model.n_jobs, model.random_state) \
        == (7, 2, 2, 5)
    assert model.max_features == 0.33  # the project's default kept beside the override


@pytest.mark.parametrize("name, params", [
    ("rf", {"n_trees": 10}),                       # unknown keyword
    ("extra_trees", {"n_estimators": -1}),          # bad value (sklearn checks it in fit)
    ("hist_gradient_boosting", {"max_iter": 0}),
    ("hist_gradient_boosting", {"n_estimators": 5}),
    ("rf", {"max_features": "most"}),
])
def test_bad_decoder_params_are_config_errors(name: str, params: dict) -> None:
    with pytest.raises(ConfigError, match=r"^decoder\.params: ") as err:
        make_decoder(name, params)
    assert str(next(iter(params))) in str(err.value)
    with pytest.raises(ConfigError, match=r"decoder\.params"):
        check_decoder(name, params)


def test_unknown_decoder_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"decoder\.name: unknown decoder 'xgboost'"):
        make_decoder("xgboost", {})


# ---------------------------------------------------------------------------- decode_catchment


@pytest.mark.parametrize("group", ["in", "out"])
def test_decode_writes_test_predictions_and_one_row_per_model(run, group: str) -> None:
    store, cfg, split = run
    gauge = _one(split, group)
    rows = decode_catchment(store, cfg, gauge, gauge in split["train"])

    pred = store.read_frame(partition_key(PREDICTIONS, gauge))
    assert list(pred.columns) == ["date", "observed", "regional", "hybrid"]
    encoded = store.read_frame(encoded_key(gauge))
    test = encoded[encoded["split"] == "test"].reset_index(drop=True)
    assert len(pred) == len(test) > 300
    assert (pred["date"] >= pd.Timestamp(cfg.test_start_date)).all()
    assert (pred["date"] <= pd.Timestamp(cfg.test_end_date)).all()
    np.testing.assert_array_equal(pred["date"].to_numpy(), test["date"].to_numpy())
    np.testing.assert_array_equal(pred["observed"].to_numpy(), test["observed"].to_numpy())
    np.testing.assert_array_equal(pred["regional"].to_numpy(), test["regional"].to_numpy())
    assert pred["hybrid"].dtype == np.float32 and np.isfinite(pred["hybrid"]).all()

    metrics = store.read_frame(metrics_key(gauge))
    pd.testing.assert_frame_equal(metrics, rows)
    assert sorted(metrics["model"]) == ["hybrid", "regional"]
    assert (metrics["gauge_id"] == gauge).all() and (metrics["status"] == "done").all()
    assert set(METRIC_FUNCTIONS) <= set(metrics.columns)
    # the flag is the split the LSTM was trained with, as recorded in the run
    assert (metrics["in_training"] == (gauge in split["train"])).all()
    assert metrics["in_training"].dtype == bool
    by_model = metrics.set_index("model")
    obs = pred["observed"].to_numpy(np.float64)
    for model in ("hybrid", "regional"):
        sim = pred[model].to_numpy(np.float64)
        assert by_model.loc[model, "nse"] == pytest.approx(nse(obs, sim), rel=1e-12, abs=1e-12)
        assert by_model.loc[model, "kge_2012"] == pytest.approx(kge_2012(obs, sim), abs=1e-12)
    assert np.isfinite(by_model.loc["hybrid", "nse"])
    n_train = int(np.isfinite(encoded.loc[encoded["split"] == "train", "observed"]).sum())
    assert (metrics["n_train"] == n_train).all() and n_train > 500
    assert (metrics["n_test"] == int(np.isfinite(obs).sum())).all()
    assert by_model.loc["hybrid", "fit_seconds"] > 0
    assert np.isnan(by_model.loc["regional", "fit_seconds"])  # the LSTM is not fitted here


def test_hybrid_learns_from_the_features(run) -> None:
    """On the synthetic data a forest on the encoder's states beats the 1-epoch LSTM's head."""
    store, cfg, split = run
    gauge = _one(split, "in")
    metrics = decode_catchment(store, cfg, gauge, True).set_index("model")
    assert metrics.loc["hybrid", "nse"] > max(0.3, metrics.loc["regional", "nse"])


def test_rerun_overwrites_the_same_keys(run) -> None:
    store, cfg, split = run
    gauge = _one(split, "out")
    first = decode_catchment(store, cfg, gauge, False)
    pred = store.read_bytes(partition_key(PREDICTIONS, gauge))
    second = decode_catchment(store, cfg, gauge, False)
    assert store.listdir(f"{PREDICTIONS}/gauge_id={gauge}") == ["part-0.parquet"]
    assert store.listdir(f"{METRICS}/gauge_id={gauge}") == ["part-0.parquet"]
    assert store.read_bytes(partition_key(PREDICTIONS, gauge)) == pred  # seeded: same forest
    pd.testing.assert_frame_equal(first.drop(columns="fit_seconds"),
                                  second.drop(columns="fit_seconds"))


@pytest.mark.parametrize("name", ["extra_trees", "hist_gradient_boosting"])
def test_other_decoders_through_decode_catchment(run, name: str) -> None:
    store, cfg, split = run
    gauge = _one(split, "in")
    other = cfg.replace(decoder={"name": name, "params": SMALL[name]})
    out = store.child(f"alt-{name}")
    out.write_bytes(encoded_key(gauge), store.read_bytes(encoded_key(gauge)))
    metrics = decode_catchment(out, other, gauge, True, n_jobs=2).set_index("model")
    pred = out.read_frame(partition_key(PREDICTIONS, gauge))
    assert metrics.loc["hybrid", "nse"] == pytest.approx(
        nse(pred["observed"].to_numpy(np.float64), pred["hybrid"].to_numpy(np.float64)))
    assert np.isfinite(metrics.loc["hybrid", "nse"])


def test_models_are_kept_only_when_asked(run) -> None:
    store, cfg, split = run
    gauge = _one(split, "in")
    decode_catchment(store, cfg, gauge, True)
    assert not store.exists("decoders")

    keep = cfg.replace(decoder={**cfg.to_dict()["decoder"], "keep_models": True})
    out = store.child("keep")
    out.write_bytes(encoded_key(gauge), store.read_bytes(encoded_key(gauge)))
    decode_catchment(out, keep, gauge, True)
    key = f"decoders/gauge_id={gauge}/model.joblib"
    assert out.listdir("decoders") == [f"gauge_id={gauge}"]
    model = joblib.load(io.BytesIO(out.read_bytes(key)))
    assert model.n_estimators == 10
    # the kept model is the one that made the predictions file
    encoded = out.read_frame(encoded_key(gauge))
    test = encoded[encoded["split"] == "test"]
    pred = out.read_frame(partition_key(PREDICTIONS, gauge))
    np.testing.assert_allclose(
        model.predict(test[feature_columns(HIDDEN)].to_numpy(np.float32)),
        pred["hybrid"].to_numpy(), rtol=1e-6)


def test_catchment_wise_predictions_join_when_present(run) -> None:
    store, cfg, split = run
    gauge = _one(split, "out")
    with_cw = cfg.replace(baselines={"catchment_wise": True})
    out = store.child("cw")
    out.write_bytes(encoded_key(gauge), store.read_bytes(encoded_key(gauge)))
    encoded = out.read_frame(encoded_key(gauge))
    test = encoded[encoded["split"] == "test"]
    site = pd.DataFrame({"date": test["date"].to_numpy(),
                         "catchment_wise": test["observed"].to_numpy(np.float32) * 0.9,
                         "train_seconds": np.full(len(test), 12.5, np.float32)})
    out.write_table(partition_key(BASELINE_KEY, gauge), site)
    metrics = decode_catchment(out, with_cw, gauge, False).set_index("model")
    pred = out.read_frame(partition_key(PREDICTIONS, gauge))
    assert list(pred.columns) == ["date", "observed", "regional", "hybrid", "catchment_wise"]
    assert sorted(metrics.index) == ["catchment_wise", "hybrid", "regional"]
    assert metrics.loc["catchment_wise", "fit_seconds"] == pytest.approx(12.5)
    assert metrics.loc["catchment_wise", "nse"] == pytest.approx(
        nse(pred["observed"].to_numpy(np.float64), pred["catchment_wise"].to_numpy(np.float64)))


# ---------------------------------------------------------------------------- failures


def test_no_observed_training_day_raises_and_writes_nothing(run, tmp_path) -> None:
    store, cfg, split = run
    gauge = _one(split, "in")
    table = store.read_frame(encoded_key(gauge))
    table.loc[table["split"] == "train", "observed"] = np.nan
    broken = Store(str(tmp_path / "broken"))
    broken.write_table(encoded_key(gauge), table)
    with pytest.raises(ValueError, match="only 0 observed training days"):
        decode_catchment(broken, cfg, gauge, True)
    assert broken.partitions(METRICS) == [] and broken.partitions(PREDICTIONS) == []

    no_test = store.read_frame(encoded_key(gauge))
    broken.write_table(encoded_key(gauge), no_test[no_test["split"] != "test"])
    with pytest.raises(ValueError, match="no encoded day in the test period"):
        decode_catchment(broken, cfg, gauge, True)


def test_failure_rows_and_summary(run, tmp_path) -> None:
    store, cfg, split = run
    out = Store(str(tmp_path / "sum"))
    gauges = split["train"][:2]
    for g in gauges:
        out.write_bytes(encoded_key(g), store.read_bytes(encoded_key(g)))
        decode_catchment(out, cfg, g, True)
    bad = split["out_of_training"][0]
    try:
        raise ValueError("only 0 observed training days\n")
    except ValueError as err:
        failure = failure_rows(bad, False, err)
    assert failure.to_dict("records") == [{
        "gauge_id": bad, "model": "hybrid", "in_training": False, "status": "failed",
        "error": "ValueError: only 0 observed training days"}]
    # a stale failure record for a catchment that has since finished is dropped
    stale = failure_rows(gauges[0], True, RuntimeError("old"))
    summary = collect(out, [failure, stale])
    assert len(summary) == 2 * 2 + 1
    assert summary.loc[summary.gauge_id == bad, "status"].tolist() == ["failed"]
    assert (summary.loc[summary.gauge_id != bad, "status"] == "done").all()
    assert np.isnan(summary.loc[summary.gauge_id == bad, "nse"]).all()
    agg = aggregate(summary)
    nse_all = agg[(agg.metric == "nse") & (agg.group == "all")].set_index("model")
    assert nse_all.loc["hybrid", "n"] == 2  # the failed catchment is not counted
    done = summary[(summary.status == "done") & (summary.model == "hybrid")]
    assert nse_all.loc["hybrid", "median"] == pytest.approx(done["nse"].median())


def test_bad_decoder_params_stop_a_run_before_any_work(tmp_path) -> None:
    """Refused when the config is loaded, before an hour of pre-training."""
    with pytest.raises(ConfigError, match=r"decoder\.params: .*min_samples_leaf"):
        tiny_config(str(tmp_path / "store"),
                    decoder={"name": "rf", "params": {"min_samples_leaf": 0}})
    assert not (tmp_path / "store").exists()


def test_summary_when_every_catchment_failed(tmp_path) -> None:
    """The aggregate keeps its columns and types, and the report still renders."""
    import pyarrow.parquet as pq

    from hybrid.report import write_report
    from hybrid.summary import AGGREGATE, write_summary

    out = Store(str(tmp_path / "failed"))
    summary, agg = write_summary(out, [failure_rows("g1", True, ValueError("boom"))])
    assert summary[["gauge_id", "status", "error"]].to_dict("records") == [
        {"gauge_id": "g1", "status": "failed", "error": "ValueError: boom"}]
    assert agg.empty
    schema = pq.read_schema(out.path(AGGREGATE))
    assert schema.names == ["model", "group", "metric", "n", "median", "mean", "q25", "q75"]
    assert str(schema.field("n").type) == "int64" and str(schema.field("median").type) == "double"
    write_report(out, tiny_config(str(tmp_path)))
    report = out.read_text("report/report.md")
    assert "no finished catchment" in report and "- g1: ValueError: boom" in report
