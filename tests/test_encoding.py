"""The encoders (hybrid.encoder.features) and the per-catchment unit of work (hybrid.stages.encode).

A tiny synthetic run is trained once for the module; every expected feature vector is computed
by hand from the catchment's table and the model's own ``encode``, never through the encoders'
window code.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from hybrid.data.catalog import load_attributes, load_catchment
from hybrid.data.windows import CatchmentArrays
from hybrid.encoder import checkpoints as ckpt
from hybrid.encoder.features import encode_catchment, encode_exact, encode_streaming, encoded_days
from hybrid.encoder.trainer import train_regional
from hybrid.errors import ConfigError, SkipCatchment, StoreError
from hybrid.execution.context import Context
from hybrid.execution.executors import SerialExecutor
from hybrid.execution.runner import run_stage
from hybrid.stages.encode import encode_one, encode_stage, setup_encoder
from hybrid.stages.prepare import prepare
from hybrid.store import layout, partitions
from hybrid.store.layout import feature_columns
from hybrid.store.runs import open_run
from hybrid.store.storage import Store

GAUGE = "synthetic_001"
SEQ = 60
HIDDEN = 8


def encoded_key(gauge: str) -> str:
    return layout.partition_key(layout.ENCODED, gauge)


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_config):
    cfg = tiny_config(str(tmp_path_factory.mktemp("enc")), epochs=1, seq_length=SEQ,
                      hidden_size=HIDDEN)
    store = open_run(cfg)
    prepare(cfg, store)
    train_regional(store, cfg)
    return store, cfg, ckpt.load_trained(store)


def _arrays(store: Store, trained: ckpt.TrainedModel, gauge: str = GAUGE):
    frame = load_catchment(store, gauge)
    static = load_attributes(store).loc[gauge, trained.scaler.static_attributes].to_numpy()
    return frame, static, CatchmentArrays.build(gauge, frame, static, trained.scaler)


def _by_hand(trained: ckpt.TrainedModel, frame: pd.DataFrame, static: np.ndarray):
    """(x, x_s): the catchment normalised with the checkpoint's statistics, without Scaler code."""
    s = trained.scaler
    x = (frame[s.dynamic_inputs].to_numpy(np.float64) - np.array(s.input_mean)) \
        / np.array(s.input_std)
    x_s = (np.asarray(static, np.float64) - np.array(s.static_mean)) / np.array(s.static_std)
    return torch.tensor(x, dtype=torch.float32), torch.tensor(x_s, dtype=torch.float32)


def test_exact_features_are_the_models_state_at_the_window_end(run) -> None:
    store, cfg, trained = run
    frame, static, arrays = _arrays(store, trained)
    x, x_s = _by_hand(trained, frame, static)
    days = np.array([SEQ - 1, 400, 1000, len(frame) - 1])
    features = encode_exact(trained.model, arrays, days, SEQ, batch_size=3)
    assert features.shape == (4, HIDDEN) and features.dtype == np.float32
    for k, end in enumerate(days):
        window = x[end - SEQ + 1:end + 1].unsqueeze(0)
        with torch.no_grad():
            hidden, (h_n, _) = trained.model.encode(window, x_s.unsqueeze(0))
            y_hat = trained.model(window, x_s.unsqueeze(0))["y_hat"][0, -1, 0]
        np.testing.assert_allclose(features[k], h_n[-1][0].numpy(), rtol=0, atol=1e-6)
        np.testing.assert_allclose(features[k], hidden[0, -1].numpy(), rtol=0, atol=1e-6)
        # and the head on those features is the model's own prediction for that day
        with torch.no_grad():
            head = trained.model.predict_hidden(torch.from_numpy(features[k]))
        assert float(head[0]) == pytest.approx(float(y_hat), abs=1e-6)


def test_streaming_features_are_the_models_state_along_the_series(run) -> None:
    store, cfg, trained = run
    frame, static, arrays = _arrays(store, trained)
    x, x_s = _by_hand(trained, frame, static)
    assert torch.isfinite(x).all()  # a gap-free series: one pass from day 0
    days, _ = encoded_days(cfg, arrays)
    with torch.no_grad():
        whole = trained.model.encode(x.unsqueeze(0), x_s.unsqueeze(0))[0][0].numpy()
    for chunk_days in (4096, 97):  # the state is carried across chunks
        features = encode_streaming(trained.model, arrays, days, SEQ, chunk_days=chunk_days)
        np.testing.assert_allclose(features, whole[days], rtol=0, atol=1e-5)


def test_exact_and_streaming_agree_on_the_last_window(run) -> None:
    store, cfg, trained = run
    for gauge in ("synthetic_000", GAUGE):
        _, _, arrays = _arrays(store, trained, gauge)
        last = len(arrays.x) - 1
        exact = encode_exact(trained.model, arrays, np.array([last]), SEQ)
        trimmed = CatchmentArrays(gauge, arrays.dates[-SEQ:], arrays.x[-SEQ:], arrays.y[-SEQ:],
                                  arrays.static)
        streaming = encode_streaming(trained.model, trimmed, np.array([SEQ - 1]), SEQ)
        np.testing.assert_allclose(streaming, exact, rtol=0, atol=1e-6)


def test_streaming_restarts_after_an_input_gap(run) -> None:
    store, cfg, trained = run
    _, _, arrays = _arrays(store, trained)
    gap = 700
    holed = replace(arrays, x=arrays.x.copy())
    holed.x[gap, 1] = np.nan
    days, _ = encoded_days(cfg, holed)
    assert not np.isin(np.arange(gap, gap + SEQ), days).any()  # windows covering the gap
    assert np.isin([gap - 1, gap + SEQ], days).all()
    streaming = encode_streaming(trained.model, holed, days, SEQ)
    assert np.isfinite(streaming).all()
    after = int(np.flatnonzero(days == gap + SEQ)[0])
    before = int(np.flatnonzero(days == gap - 1)[0])
    # the first day after the gap: its window starts right after the NaN, from a zero state
    exact = encode_exact(trained.model, holed, np.array([gap + SEQ]), SEQ)
    np.testing.assert_allclose(streaming[after], exact[0], rtol=0, atol=1e-6)
    # before the gap nothing changes
    clean = encode_streaming(trained.model, arrays, np.array([gap - 1]), SEQ)
    np.testing.assert_allclose(streaming[before], clean[0], rtol=0, atol=1e-6)
    # the exact encoder marks the same days and gives finite features on them
    assert np.isfinite(encode_exact(trained.model, holed, days, SEQ)).all()


def test_exact_refuses_a_day_without_a_full_window(run) -> None:
    store, cfg, trained = run
    _, _, arrays = _arrays(store, trained)
    with pytest.raises(ValueError, match="full window"):
        encode_exact(trained.model, arrays, np.array([SEQ - 2]), SEQ)


@pytest.mark.parametrize("encoder", ["exact", "streaming"])
def test_encoded_partition_schema_and_values(run, encoder: str) -> None:
    store, cfg, trained = run
    cfg = cfg.replace(encoder=encoder, encode_batch_size=100)
    frame, static, arrays = _arrays(store, trained)
    context = Context.of(store, cfg)
    result = encode_one(context, setup_encoder(context, trained), GAUGE)
    table = store.read_table(encoded_key(GAUGE))
    record = result.records[layout.ENCODED]
    assert record["rows"] == table.num_rows
    assert record["bytes"] == store.sizes(layout.ENCODED)[encoded_key(GAUGE)]
    # the partition names the model it was made with: another model's features never pass
    stamp = partitions.read_footer_json(store, encoded_key(GAUGE))
    assert stamp["model"] == trained.sha256 and len(trained.sha256) == 64
    assert table.column_names == ["gauge_id", "date", "split", "observed", "regional",
                                  *feature_columns(HIDDEN)]
    assert feature_columns(3) == ["h_0", "h_1", "h_2"]
    assert pa.types.is_timestamp(table.schema.field("date").type)
    assert table.schema.field("split").type == pa.string()
    for name in ["observed", "regional", *feature_columns(HIDDEN)]:
        assert table.schema.field(name).type == pa.float32(), name

    df = table.to_pandas()
    dates = pd.DatetimeIndex(df["date"])
    # every day with a full window inside a period, from the first one to the last
    assert dates[0] == arrays.dates[SEQ - 1] and dates[-1] == arrays.dates[-1]
    assert dates.is_monotonic_increasing and dates.is_unique
    expected_split = np.where(dates >= pd.Timestamp(cfg.test_start_date), "test",
                              np.where(dates >= pd.Timestamp(cfg.validation_start_date),
                                       "validation", "train"))
    assert df["split"].tolist() == expected_split.tolist()
    observed = frame.loc[dates, cfg.target].to_numpy(np.float32)
    np.testing.assert_array_equal(df["observed"].to_numpy(), observed)  # NaN where NaN

    hidden = df[feature_columns(HIDDEN)].to_numpy().copy()
    days = arrays.dates.get_indexer(dates)
    method = encode_exact if encoder == "exact" else encode_streaming
    np.testing.assert_array_equal(hidden, method(trained.model, arrays, days, SEQ))
    # the regional baseline always comes from exact windows; with streaming features it is
    # computed on the test days (where it is scored) and NaN elsewhere
    scored = np.ones(len(df), bool) if encoder == "exact" else (df["split"] == "test").to_numpy()
    exact = encode_exact(trained.model, arrays, days[scored], SEQ)
    with torch.no_grad():
        head = trained.model.head(torch.from_numpy(exact))[:, 0].numpy().astype(np.float64)
    regional = head * trained.scaler.target_std + trained.scaler.target_mean
    np.testing.assert_allclose(df["regional"].to_numpy()[scored], regional, rtol=1e-5,
                               atol=1e-5)
    assert np.isnan(df["regional"].to_numpy()[~scored]).all()
    # the check above tells de-normalised values from z-scores only if the statistics do
    assert trained.scaler.target_std != pytest.approx(1.0)
    assert trained.scaler.target_mean != pytest.approx(0.0)


def test_unknown_encoder_is_a_config_error(run) -> None:
    store, cfg, trained = run
    frame, static, _ = _arrays(store, trained)
    with pytest.raises(ConfigError, match="encoder"):
        encode_catchment(trained, cfg, GAUGE, frame, static, method="fast")


# --- bad input --------------------------------------------------------------------------------


def test_checkpoint_without_scaler_is_refused(run, tmp_path: Path) -> None:
    store, _, _ = run
    final = ckpt.load_object(store, layout.FINAL)
    broken = Store(str(tmp_path / "broken"))
    ckpt.save_object(broken, layout.FINAL, {k: v for k, v in final.items() if k != "scaler"})
    with pytest.raises(StoreError, match="scaler"):
        ckpt.load_trained(broken)
    ckpt.save_object(broken, layout.FINAL, {**final, "scaler": None})
    with pytest.raises(StoreError, match="scaler"):
        ckpt.load_trained(broken)
    ckpt.save_object(broken, layout.FINAL,
                     {k: v for k, v in final.items() if k != "state_dict"})
    with pytest.raises(StoreError, match="state_dict"):
        ckpt.load_trained(broken)
    broken.write_bytes(layout.FINAL, b"not a checkpoint")
    with pytest.raises(StoreError, match="not a readable checkpoint"):
        ckpt.load_trained(broken)
    with pytest.raises(StoreError, match="pretrain"):
        ckpt.load_trained(Store(str(tmp_path / "empty")))


def test_catchment_without_a_valid_window_is_skipped(run, tmp_path: Path) -> None:
    store, cfg, trained = run
    frame, static, _ = _arrays(store, trained)
    bad = frame.copy()
    bad.loc[bad.index[::40], cfg.dynamic_inputs[0]] = np.nan  # a gap every 40 < 60 days
    with pytest.raises(SkipCatchment, match="synthetic_bad: no day of the test period"):
        encode_catchment(trained, cfg, "synthetic_bad", bad, static)

    # through the stage: recorded as skipped with its reason, nothing written, the others done
    copy = Store(str(tmp_path / "copy"))
    for key in (layout.ATTRIBUTES, layout.FINAL, layout.partition_key(layout.CATCHMENTS, GAUGE)):
        copy.write_bytes(key, store.read_bytes(key))
    bad[cfg.dynamic_inputs] = np.nan
    copy.write_table(layout.partition_key(layout.CATCHMENTS, "synthetic_bad"),
                     bad.reset_index().assign(gauge_id="synthetic_bad"))
    attributes = load_attributes(store)
    attributes.loc["synthetic_bad"] = attributes.loc[GAUGE]
    copy.write_table(layout.ATTRIBUTES, attributes.reset_index())
    result = run_stage(encode_stage(cfg, trained.sha256), Context.of(copy, cfg),
                       [GAUGE, "synthetic_bad"], SerialExecutor())
    assert list(result.done) == [GAUGE]
    assert "no day of the test period" in result.skipped["synthetic_bad"]
    assert not copy.exists(encoded_key("synthetic_bad"))
    manifest = copy.read_json(layout.manifest_key(layout.ENCODED))
    assert list(manifest["catchments"]) == [GAUGE] and "synthetic_bad" in manifest["skipped"]


def test_mismatched_input_features_are_refused(run) -> None:
    store, cfg, trained = run
    frame, static, _ = _arrays(store, trained)
    fewer = cfg.replace(dynamic_inputs=cfg.dynamic_inputs[:2])
    with pytest.raises(StoreError, match="dynamic_inputs"):
        setup_encoder(Context.of(store, fewer), trained)
    with pytest.raises(StoreError, match="dynamic_inputs"):
        encode_catchment(trained, fewer, GAUGE, frame, static)
    reordered = cfg.replace(dynamic_inputs=cfg.dynamic_inputs[::-1])
    with pytest.raises(StoreError, match="dynamic_inputs"):
        encode_catchment(trained, reordered, GAUGE, frame, static)
    statics = cfg.replace(static_attributes=cfg.static_attributes[:-1])
    with pytest.raises(StoreError, match="static_attributes"):
        setup_encoder(Context.of(store, statics), trained)


def test_regional_head_reads_blocks_the_way_a_sequence_model_was_trained(run) -> None:
    """With predict_last_n = n the regional prediction of a day comes from the window ending at
    its block's last day; with n = 1 it is the head on the exact state of the day's own window."""
    from hybrid.encoder.features import regional_head

    store, cfg, trained = run
    frame, static, arrays = _arrays(store, trained)
    x, x_s = _by_hand(trained, frame, static)
    days = np.arange(len(frame) - 25, len(frame))  # the last 25 days
    n = 10
    got = regional_head(trained.model, arrays, days, SEQ, n)
    last = int(days[-1])
    for k, day in enumerate(days):
        end = day + (last - day) % n  # the block that scores this day ends here
        window = x[end - SEQ + 1:end + 1].unsqueeze(0)
        with torch.no_grad():
            y_hat = trained.model(window, x_s.unsqueeze(0))["y_hat"][0, :, 0]
        assert got[k] == pytest.approx(float(y_hat[SEQ - 1 - (end - day)]), abs=1e-5)
    one = regional_head(trained.model, arrays, days, SEQ, 1)
    exact = encode_exact(trained.model, arrays, days, SEQ)
    with torch.no_grad():
        head = trained.model.predict_hidden(torch.from_numpy(exact))[:, 0].numpy()
    np.testing.assert_allclose(one, head, rtol=0, atol=1e-6)
    # a gap inside a block's window: those days fall back to their own windows
    holed = replace(arrays, x=arrays.x.copy())
    gap = int(days[-1]) - 3  # inside the last block's window, after days[-10..-4]
    holed.x[gap, 0] = np.nan
    valid_days = days[days < gap]
    fallback = regional_head(trained.model, holed, valid_days, SEQ, n)
    assert np.isfinite(fallback).all()
