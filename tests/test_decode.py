"""Per-catchment decoders (hybrid.decoder.regressors), the decode unit (hybrid.stages.decode)
and scoring
(hybrid.stages.score), without Ray.

A tiny synthetic run is prepared, pre-trained and encoded once for the module; every test decodes
from its encoded partitions into a scratch copy. Expected metrics are recomputed from the written
predictions files with ``hybrid.evaluation.metrics``, never taken from the code under test.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from hybrid.data.catalog import catchment_split
from hybrid.decoder.fit import load_decoder
from hybrid.decoder.regressors import check_decoder, decoder_names, make_decoder
from hybrid.encoder.checkpoints import model_sha
from hybrid.encoder.trainer import train_regional
from hybrid.errors import ConfigError, SkipCatchment
from hybrid.evaluation.metrics import METRICS as METRIC_FUNCTIONS
from hybrid.evaluation.metrics import kge_2012, nse
from hybrid.evaluation.scoring import score_catchment, score_stamp, scoring_stage
from hybrid.execution.context import Context
from hybrid.execution.executors import SerialExecutor
from hybrid.execution.runner import run_stage
from hybrid.stages.decode import decode_catchment, decode_one, decode_stamp
from hybrid.stages.encode import encode_stage
from hybrid.stages.prepare import prepare
from hybrid.store import layout, partitions
from hybrid.store.runs import open_run
from hybrid.store.storage import Store

HIDDEN = 8
SMALL = {"rf": {"n_estimators": 10}, "extra_trees": {"n_estimators": 10},
         "hist_gradient_boosting": {"max_iter": 20}}


def encoded_key(gauge: str) -> str:
    return layout.partition_key(layout.ENCODED, gauge)


def predictions_key(gauge: str) -> str:
    return layout.partition_key(layout.PREDICTIONS, gauge)


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_config):
    """(store, cfg, split): 4 synthetic catchments, 3 in training, encoded with a 1-epoch LSTM."""
    cfg = tiny_config(str(tmp_path_factory.mktemp("dec")), epochs=1, hidden_size=HIDDEN)
    store = open_run(cfg)
    prepare(cfg, store)
    train_regional(store, cfg)
    gauges = sorted(partitions.read_manifest(store, layout.CATCHMENTS)["catchments"])
    result = run_stage(encode_stage(cfg, model_sha(store)), Context.of(store, cfg), gauges,
                       SerialExecutor())
    assert sorted(result.done) == gauges
    return store, cfg, catchment_split(store, cfg)


def _copy(store: Store, gauge: str, tmp_path, name: str = "copy") -> Store:
    out = Store(str(tmp_path / name))
    out.write_bytes(encoded_key(gauge), store.read_bytes(encoded_key(gauge)))
    return out


def _context(store: Store, cfg, split: dict) -> Context:
    sha = "m" * 64
    return Context.of(store, cfg, in_training=frozenset(split["train"]),
                      stamps={"decode": decode_stamp(cfg, sha), "score": score_stamp(cfg, sha)})


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


# ---------------------------------------------------------------------------- decode + score


@pytest.mark.parametrize("group", ["in", "out"])
def test_decode_writes_test_predictions_and_score_one_row_per_model(run, group, tmp_path):
    store, cfg, split = run
    gauge = _one(split, group)
    out = _copy(store, gauge, tmp_path)
    result = decode_one(_context(out, cfg, split), {"node_id": "here"}, gauge)

    pred = out.read_frame(predictions_key(gauge))
    assert list(pred.columns) == ["gauge_id", "date", "observed", "regional", "hybrid"]
    encoded = out.read_frame(encoded_key(gauge))
    test = encoded[encoded["split"] == "test"].reset_index(drop=True)
    assert len(pred) == len(test) > 300
    assert (pred["date"] >= pd.Timestamp(cfg.test_start_date)).all()
    assert (pred["date"] <= pd.Timestamp(cfg.test_end_date)).all()
    np.testing.assert_array_equal(pred["date"].to_numpy(), test["date"].to_numpy())
    np.testing.assert_array_equal(pred["observed"].to_numpy(), test["observed"].to_numpy())
    np.testing.assert_array_equal(pred["regional"].to_numpy(), test["regional"].to_numpy())
    assert pred["hybrid"].dtype == np.float32 and np.isfinite(pred["hybrid"]).all()

    metrics = out.read_frame(layout.partition_key(layout.METRICS, gauge))
    assert (metrics["gauge_id"] == gauge).all()  # the file names its catchment
    rows = pd.DataFrame(result.rows)
    assert (rows["gauge_id"] == gauge).all()
    pd.testing.assert_frame_equal(metrics.drop(columns="gauge_id"), rows.drop(columns="gauge_id"))
    assert sorted(metrics["model"]) == ["hybrid", "regional"]
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
    n_train = int(np.isfinite(encoded.loc[encoded["split"] == "train", "observed"]).sum())
    assert (metrics["n_train"] == n_train).all() and n_train > 500
    assert (metrics["n_test"] == int(np.isfinite(obs).sum())).all()
    for model in ("hybrid", "regional"):
        assert by_model.loc[model, "n_negative"] == int((pred[model] < 0).sum())
    assert by_model.loc["hybrid", "fit_seconds"] > 0
    assert np.isnan(by_model.loc["regional", "fit_seconds"])  # the LSTM is not fitted here
    assert (metrics["node_id"] == "here").all()
    records = result.records
    assert records[layout.PREDICTIONS]["rows"] == len(pred)
    assert records[layout.METRICS]["rows"] == 2


def test_hybrid_learns_from_the_features(run, tmp_path) -> None:
    """On the synthetic data a forest on the encoder's states beats the 1-epoch LSTM's head."""
    store, cfg, split = run
    gauge = _one(split, "in")
    out = _copy(store, gauge, tmp_path)
    rows = pd.DataFrame(decode_one(_context(out, cfg, split), {}, gauge).rows)
    metrics = rows.set_index("model")
    assert metrics.loc["hybrid", "nse"] > max(0.3, metrics.loc["regional", "nse"])


def test_rerun_overwrites_the_same_keys_with_the_same_forest(run, tmp_path) -> None:
    store, cfg, split = run
    gauge = _one(split, "out")
    out = _copy(store, gauge, tmp_path)
    context = _context(out, cfg, split)
    decode_catchment(context, gauge)
    first = out.read_bytes(predictions_key(gauge))
    decode_catchment(context, gauge)
    assert out.listdir(f"{layout.PREDICTIONS}/{gauge}") == ["part-0.parquet"]
    again = out.read_frame(predictions_key(gauge))
    pd.testing.assert_frame_equal(again, pd.read_parquet(io.BytesIO(first)))  # seeded


@pytest.mark.parametrize("name", ["extra_trees", "hist_gradient_boosting"])
def test_other_decoders_through_decode(run, name: str, tmp_path) -> None:
    store, cfg, split = run
    gauge = _one(split, "in")
    other = cfg.replace(decoder={"name": name, "params": SMALL[name]},
                        resources={"executor": "local", "decoder_num_cpus": 2})
    out = _copy(store, gauge, tmp_path)
    metrics = pd.DataFrame(decode_one(_context(out, other, split), {}, gauge).rows)
    metrics = metrics.set_index("model")
    pred = out.read_frame(predictions_key(gauge))
    assert metrics.loc["hybrid", "nse"] == pytest.approx(
        nse(pred["observed"].to_numpy(np.float64), pred["hybrid"].to_numpy(np.float64)))
    assert np.isfinite(metrics.loc["hybrid", "nse"])


def test_models_are_kept_unless_told_not_to(run, tmp_path) -> None:
    store, cfg, split = run
    gauge = _one(split, "in")
    off = cfg.replace(decoder={**cfg.to_dict()["decoder"], "keep_models": False})
    out = _copy(store, gauge, tmp_path)
    decode_catchment(_context(out, off, split), gauge)
    assert not out.exists("decoders")

    kept = _copy(store, gauge, tmp_path, "keep")
    decode_catchment(_context(kept, cfg, split), gauge)  # the default keeps them
    assert kept.listdir("decoders") == [f"gauge_id={gauge}"]
    model = load_decoder(kept, gauge)
    assert model.n_estimators == 10
    # the kept model is the one that made the predictions file
    encoded = kept.read_frame(encoded_key(gauge))
    test = encoded[encoded["split"] == "test"]
    pred = kept.read_frame(predictions_key(gauge))
    np.testing.assert_allclose(
        model.predict(test[layout.feature_columns(HIDDEN)].to_numpy(np.float32)),
        pred["hybrid"].to_numpy(), rtol=1e-6)


@pytest.mark.parametrize(("period", "splits"), [("train", ["train"]),
                                                ("train_validation", ["train", "validation"])])
def test_fit_period_decides_the_days_a_forest_sees(run, tmp_path, period, splits) -> None:
    store, cfg, split = run
    gauge = _one(split, "in")
    chosen = cfg.replace(decoder={**cfg.to_dict()["decoder"], "fit_period": period})
    out = _copy(store, gauge, tmp_path)
    rows = pd.DataFrame(decode_one(_context(out, chosen, split), {}, gauge).rows)
    encoded = out.read_frame(encoded_key(gauge))
    fitted = encoded[encoded["split"].isin(splits)]
    assert (rows["n_train"] == int(np.isfinite(fitted["observed"]).sum())).all()


def test_baseline_predictions_join_the_scoring(run, tmp_path) -> None:
    store, cfg, split = run
    gauge = _one(split, "out")
    with_cw = cfg.replace(baselines={"catchment_wise": True})
    out = _copy(store, gauge, tmp_path)
    context = _context(out, with_cw, split)
    decode_catchment(context, gauge)
    encoded = out.read_frame(encoded_key(gauge))
    test = encoded[encoded["split"] == "test"]
    site = pd.DataFrame({"date": test["date"].to_numpy(),
                         "catchment_wise": test["observed"].to_numpy(np.float32) * 0.9})
    partitions.write_partition(out, layout.baseline_predictions("catchment_wise"), gauge, site,
                               {"stage": "catchment_wise"}, {"fit_seconds": 12.5})
    metrics = pd.DataFrame(score_catchment(context, {}, gauge).rows).set_index("model")
    assert sorted(metrics.index) == ["catchment_wise", "hybrid", "regional"]
    assert metrics.loc["catchment_wise", "fit_seconds"] == pytest.approx(12.5)
    obs = test["observed"].to_numpy(np.float64)
    assert metrics.loc["catchment_wise", "nse"] == pytest.approx(nse(obs, obs * 0.9), rel=1e-5)


# ---------------------------------------------------------------------------- negatives


def _below_zero(store: Store, gauge: str, tmp_path, name: str) -> Store:
    """A copy whose LSTM head predicts below zero on some test days and whose observed flow
    (the forest's target) is shifted below zero, so both models predict negative flow."""
    table = store.read_frame(encoded_key(gauge))
    test = (table["split"] == "test").to_numpy()
    regional = table["regional"].to_numpy(np.float32).copy()
    regional[np.flatnonzero(test)[::3]] = -3.0
    regional[np.flatnonzero(test)[1]] = np.nan  # a day without a prediction stays one
    table["regional"] = regional
    table["observed"] = table["observed"] - 50.0
    out = Store(str(tmp_path / name))
    out.write_table(encoded_key(gauge), table)
    return out


@pytest.mark.parametrize("clip", [False, True])
def test_negative_predictions_are_counted_and_clipped_when_asked(run, tmp_path, clip) -> None:
    store, cfg, split = run
    gauge = _one(split, "in")
    chosen = cfg.replace(clip_targets_to_zero=clip)
    out = _below_zero(store, gauge, tmp_path, f"clip-{clip}")
    rows = pd.DataFrame(decode_one(_context(out, chosen, split), {}, gauge).rows)
    pred = out.read_frame(predictions_key(gauge))
    encoded = out.read_frame(encoded_key(gauge))
    regional = encoded.loc[encoded["split"] == "test", "regional"].to_numpy()
    counts = rows.set_index("model")["n_negative"]
    assert np.isnan(pred["regional"].iloc[1])
    if clip:
        np.testing.assert_array_equal(pred["regional"].to_numpy(),
                                      np.where(regional < 0, np.float32(0), regional))
        assert (pred[["regional", "hybrid"]].fillna(0) >= 0).all().all()
        assert (pred["hybrid"] == 0).mean() > 0.9
        assert counts.to_dict() == {"hybrid": 0, "regional": 0}
    else:
        np.testing.assert_array_equal(pred["regional"].to_numpy(), regional)
        assert counts["regional"] == int((regional < 0).sum()) > 100
        assert counts["hybrid"] == int((pred["hybrid"] < 0).sum()) > 100
    obs = pred["observed"].to_numpy(np.float64)
    assert rows.set_index("model").loc["regional", "nse"] == pytest.approx(
        nse(obs, pred["regional"].to_numpy(np.float64)), rel=1e-12)


def test_a_metrics_partition_without_the_negative_count_is_scored_again(run, tmp_path) -> None:
    """Partitions written before ``n_negative`` existed carry an older scoring stamp: the next
    pass re-scores them from the predictions instead of reading them back without it."""
    import hashlib

    store, cfg, split = run
    gauge = _one(split, "out")
    out = _copy(store, gauge, tmp_path)
    context = _context(out, cfg, split)
    decode_one(context, {}, gauge)
    key = layout.partition_key(layout.METRICS, gauge)
    old = out.read_frame(key).drop(columns="n_negative")
    before = {**context.stamps["score"],
              "metrics": hashlib.sha256(",".join(METRIC_FUNCTIONS).encode()).hexdigest()[:12]}
    partitions.write_partition(out, layout.METRICS, gauge, old, before)
    scored = run_stage(scoring_stage(cfg, "m" * 64), context, [gauge], SerialExecutor())
    assert scored.ran == [gauge]
    assert "n_negative" in out.read_frame(key)


# ---------------------------------------------------------------------------- failures


def test_no_observed_training_day_raises_and_writes_nothing(run, tmp_path) -> None:
    store, cfg, split = run
    gauge = _one(split, "in")
    table = store.read_frame(encoded_key(gauge))
    table.loc[table["split"] == "train", "observed"] = np.nan
    broken = Store(str(tmp_path / "broken"))
    broken.write_table(encoded_key(gauge), table)
    with pytest.raises(ValueError, match="only 0 observed training days"):
        decode_one(_context(broken, cfg, split), {}, gauge)
    assert not broken.exists(layout.PREDICTIONS) and not broken.exists(layout.METRICS)

    no_test = store.read_frame(encoded_key(gauge))
    broken.write_table(encoded_key(gauge), no_test[no_test["split"] != "test"])
    with pytest.raises(SkipCatchment, match="no encoded day in the test period"):
        decode_one(_context(broken, cfg, split), {}, gauge)


def test_bad_decoder_params_stop_a_run_before_any_work(tmp_path, tiny_config) -> None:
    """Refused when the config is loaded, before an hour of pre-training."""
    with pytest.raises(ConfigError, match=r"decoder\.params: .*min_samples_leaf"):
        tiny_config(str(tmp_path / "store"),
                    decoder={"name": "rf", "params": {"min_samples_leaf": 0}})
    assert not (tmp_path / "store").exists()
