"""Reusing a pre-trained encoder (``base_run``) and serving a finished run (``hybrid predict``).

A tiny synthetic run is the base; a second run over other catchments reuses its encoder without
pre-training, refuses inputs that differ, and records where its model came from. The base run's
kept forests then predict its own test period (the same numbers as the run's predictions) and
periods the run never scored.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from hybrid.encoder.base_run import BASE_RUN
from hybrid.errors import ConfigError, StoreError
from hybrid.execution.session import Session
from hybrid.stages import predict, run_all
from hybrid.store import layout, partitions
from hybrid.store.provenance import sha256
from hybrid.store.runs import run_store

SIX = {"n_catchments": 6, "seed": 1, "start_date": "1995-01-01", "end_date": "1999-12-31"}


@pytest.fixture(scope="module")
def base(tmp_path_factory, tiny_config):
    cfg = tiny_config(str(tmp_path_factory.mktemp("base")), run_id="base", epochs=1,
                      dataset_options=SIX, basins=[f"synthetic_00{i}" for i in range(4)])
    assert run_all(cfg).exit_code == 0
    return cfg, run_store(cfg)


def test_a_run_reuses_the_base_encoder_without_pretraining(base, tiny_config, tmp_path,
                                                           capsys) -> None:
    base_cfg, base_store = base
    gauges = [f"synthetic_00{i}" for i in range(2, 6)]  # two shared with the base, two new
    cfg = tiny_config(str(tmp_path / "new"), run_id="reuse", dataset_options=SIX,
                      basins=gauges, base_run=base_store.uri(), hidden_size=32)
    capsys.readouterr()
    outcome = run_all(cfg)
    err = capsys.readouterr().err
    assert outcome.exit_code == 0
    store = run_store(cfg)
    # no training: the base's checkpoint, byte for byte, and no epoch checkpoints
    assert store.read_bytes(layout.FINAL) == base_store.read_bytes(layout.FINAL)
    assert [n for n in store.listdir(layout.CHECKPOINTS) if n.startswith("epoch-")] == []
    assert "pretrain: reusing the encoder of" in err and "train loss" not in err
    record = json.loads(store.read_text(BASE_RUN))
    assert record["url"] == base_store.uri()
    assert record["sha256"] == sha256(base_store.read_bytes(layout.FINAL))
    # the model's own settings come from the base (hidden_size 8, not the 32 asked for)
    assert "base_run: model settings taken from the base run: hidden_size 8" in err
    stamp = partitions.read_footer_json(store, layout.partition_key(layout.ENCODED, gauges[0]))
    assert stamp["model"] == record["sha256"]
    # in_training means: in the base encoder's training set
    base_train = set(base_store.read_json(layout.SPLIT)["train"])
    summary = outcome.summary
    assert sorted(summary.gauge_id.unique()) == gauges
    assert (summary.in_training == summary.gauge_id.isin(base_train)).all()
    assert not summary[summary.gauge_id.isin(["synthetic_004", "synthetic_005"])] \
        .in_training.any()
    assert (summary.status == "done").all() and np.isfinite(summary.nse).all()
    # the shared catchments get the very features the base run encoded for them
    shared = layout.partition_key(layout.ENCODED, "synthetic_002")
    pd.testing.assert_frame_equal(store.read_frame(shared), base_store.read_frame(shared))


@pytest.mark.parametrize(("key", "value"), [
    ("dynamic_inputs", ["total_precipitation_sum", "temperature_2m_mean"]),
    ("static_attributes", ["p_mean", "aridity"]),
    ("seq_length", 90),
])
def test_mismatched_inputs_are_refused_before_any_work(base, tiny_config, tmp_path, key,
                                                       value) -> None:
    _, base_store = base
    cfg = tiny_config(str(tmp_path / "new"), run_id="bad", base_run=base_store.uri(),
                      **{key: value})
    with pytest.raises(ConfigError) as excinfo:
        run_all(cfg)
    message = str(excinfo.value)
    assert "\n" not in message and message.startswith(f"{key}: ")
    assert "differs from the base run's" in message and base_store.uri() in message
    assert not (tmp_path / "new").exists()


def test_base_run_must_hold_a_model(tiny_config, tmp_path) -> None:
    cfg = tiny_config(str(tmp_path / "new"), base_run=str(tmp_path / "nothing-here"))
    with pytest.raises(StoreError, match="base_run: .*checkpoints/final.pt not found"):
        run_all(cfg)


def test_base_run_in_object_storage(base, tiny_config, s3_bucket, tmp_path) -> None:
    """A base run in a bucket serves a run on another store."""
    _, base_store = base
    url, options = s3_bucket
    from hybrid.store.storage import open_store

    copy = open_store(url, options).child("base")
    for key in (layout.FINAL, layout.CONFIG):
        copy.write_bytes(key, base_store.read_bytes(key))
    cfg = tiny_config(url, options, run_id="from-s3", dataset_options=SIX,
                      basins=["synthetic_004", "synthetic_005"], n_train_basins=1,
                      base_run=copy.uri())
    outcome = run_all(cfg)
    assert outcome.exit_code == 0 and (outcome.summary.status == "done").all()
    assert run_store(cfg).read_bytes(layout.FINAL) == base_store.read_bytes(layout.FINAL)


def test_a_changed_base_model_is_refused(base, tiny_config, tmp_path) -> None:
    _, base_store = base
    cfg = tiny_config(str(tmp_path / "new"), run_id="reuse2", dataset_options=SIX,
                      basins=["synthetic_004", "synthetic_005"], n_train_basins=1,
                      base_run=base_store.uri())
    session = Session.open(cfg)
    try:
        from hybrid.stages import prepare, pretrain

        prepare.run(cfg, session)
        pretrain.run(cfg, session)
        run_store(cfg).write_bytes(layout.FINAL, b"another model")
        with pytest.raises(StoreError, match="now holds another model"):
            pretrain.run(cfg, session)
    finally:
        session.close()


# ------------------------------------------------------------------------------ predict
def test_predicting_the_test_period_reproduces_the_run(base) -> None:
    cfg, store = base
    summary = predict.run(cfg, cfg.test_start_date, cfg.test_end_date).summary
    folder = f"{layout.PREDICT}/{cfg.test_start_date}_{cfg.test_end_date}/{layout.PREDICTIONS}"
    for gauge in sorted(partitions.present_partitions(store, layout.PREDICTIONS)):
        ran = partitions.read_partition(store, layout.PREDICTIONS, gauge).to_pandas()
        served = partitions.read_partition(store, folder, gauge).to_pandas()
        assert not served.pop("in_sample").any()  # the forests were fitted on other days
        pd.testing.assert_frame_equal(served, ran)  # identical, value for value
    run_summary = store.read_frame(layout.SUMMARY).set_index(["gauge_id", "model"])["nse"]
    assert set(summary["days"]) == {"all"}
    again = summary.set_index(["gauge_id", "model"])["nse"]
    assert np.allclose(again.sort_index(), run_summary.loc[again.index].sort_index())


def test_predicting_another_period_without_refitting(base, monkeypatch) -> None:
    cfg, store = base
    import hybrid.stages.decode

    def refuse(*args, **kwargs):
        raise AssertionError("a forest was refitted")

    monkeypatch.setattr(hybrid.stages.decode, "fit_predict", refuse)
    start, end = pd.Timestamp("1997-01-01").date(), pd.Timestamp("1997-12-31").date()
    summary = predict.run(cfg, start, end).summary
    folder = f"{layout.PREDICT}/{start}_{end}/{layout.PREDICTIONS}"
    frame = partitions.read_partition(store, folder, "synthetic_000").to_pandas()
    assert frame["date"].min() == pd.Timestamp(start) and frame["date"].max() == pd.Timestamp(end)
    assert np.isfinite(frame[["regional", "hybrid"]].to_numpy()).all()
    assert sorted(summary.gauge_id.unique()) == [f"synthetic_00{i}" for i in range(4)]


def test_a_moved_start_is_said_and_kept_in_the_manifest(base, capsys) -> None:
    """The data start 1995-01-01 and seq_length is 60: 1995-03-01 is the first day with a full
    window of inputs, whatever day is asked for."""
    cfg, store = base
    start, end = pd.Timestamp("1995-01-01").date(), pd.Timestamp("1995-06-30").date()
    outcome = predict.run(cfg, start, end)
    err = capsys.readouterr().err
    folder = f"{layout.PREDICT}/{start}_{end}/{layout.PREDICTIONS}"
    frame = partitions.read_partition(store, folder, "synthetic_000").to_pandas()
    assert frame["date"].min() == pd.Timestamp("1995-03-01")
    reason = ("no day before 1995-03-01 has 60 days of finite inputs before it (the data start "
              "1995-01-01)")
    assert f"predict: served 1995-03-01..1995-06-30, not the asked 1995-01-01..1995-06-30: " \
           f"{reason}" in err.splitlines()
    manifest = partitions.read_manifest(store, folder)
    assert manifest["asked"] == {"start": "1995-01-01", "end": "1995-06-30"}
    assert manifest["served"] == {"start": "1995-03-01", "end": "1995-06-30"}
    assert manifest["moved"] == reason == outcome.details["moved"]
    assert manifest["catchments"]["synthetic_000"]["first"] == "1995-03-01"


def test_in_sample_days_are_flagged_warned_and_scored_apart(base, capsys) -> None:
    """The base run's forests were fitted on the training period (1995-03-01..1997-12-31)."""
    cfg, store = base
    start, end = pd.Timestamp("1997-07-01").date(), pd.Timestamp("1998-06-30").date()
    summary = predict.run(cfg, start, end).summary
    err = capsys.readouterr().err.splitlines()
    folder = f"{layout.PREDICT}/{start}_{end}/{layout.PREDICTIONS}"
    frame = partitions.read_partition(store, folder, "synthetic_001").to_pandas()
    assert frame["in_sample"].dtype == bool
    assert (frame["in_sample"] == (frame["date"] <= pd.Timestamp("1997-12-31"))).all()
    warning = next(line for line in err if line.startswith("predict: warning: "))
    manifest = partitions.read_manifest(store, folder)
    assert manifest["in_sample_days"] == 4 * 184 and manifest["days"] == 4 * 365
    assert f"{4 * 184} of {4 * 365} predicted days lie in the period the forests were fitted " \
           "on (decoder.fit_period train: 1995-03-01..1997-12-31)" in warning
    assert "in-sample, not a test" in warning
    counts = summary.groupby(["gauge_id", "model"])["days"].apply(sorted)
    assert all(c == ["all", "in_sample", "out_of_sample"] for c in counts)
    rows = summary.set_index(["gauge_id", "model", "days"])["n_days"]
    assert rows[("synthetic_001", "hybrid", "in_sample")] == 184
    assert rows[("synthetic_001", "hybrid", "out_of_sample")] == 181
    assert any("on out-of-sample days" in line for line in err)
    assert any("on in-sample days (the forests' own fit period)" in line for line in err)


def test_a_period_past_the_data_is_an_error_and_writes_nothing(base, tmp_path, capsys) -> None:
    import yaml

    from hybrid.cli import main

    cfg, store = base
    path = tmp_path / "base.yml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    capsys.readouterr()
    code = main(["predict", "--config", str(path), "--start", "2003-01-01",
                 "--end", "2004-12-31"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2
    assert err == ["error: predict: nothing was predicted for 2003-01-01..2004-12-31: the period "
                   "lies outside the data, which span 1995-01-01..1999-12-31 (the first day with "
                   "a full 60-day window of inputs is 1995-03-01 at the earliest); nothing was "
                   "written"]
    assert not store.exists(f"{layout.PREDICT}/2003-01-01_2004-12-31")


def test_a_period_without_observations_gives_predictions_only(caravan_files, tmp_path) -> None:
    """Forcings that run on after the streamflow record (a new forcing file, a forecast)."""
    def flow(day):
        return None if day >= pd.Timestamp("2002-01-01") else 1.0 + day.day_of_year % 9 / 10

    lines = caravan_files.lines("2000-01-01", "2002-06-30", flow=flow)
    caravan_files.write({"x_1": lines, "x_2": lines})
    cfg = caravan_files.config(str(tmp_path / "store"), n_train_basins=1)
    assert run_all(cfg).exit_code == 0
    start, end = pd.Timestamp("2002-02-01").date(), pd.Timestamp("2002-06-30").date()
    summary = predict.run(cfg, start, end).summary
    assert summary.empty  # nothing to score against
    store = run_store(cfg)
    folder = f"{layout.PREDICT}/{start}_{end}"
    frame = partitions.read_partition(store, f"{folder}/{layout.PREDICTIONS}", "x_1").to_pandas()
    assert len(frame) == (end - start).days + 1
    assert frame["observed"].isna().all() and np.isfinite(frame["hybrid"]).all()
    # the run had prepared days up to 2001-12-31 only: the dataset was read again
    assert partitions.present_partitions(store, f"{folder}/inputs")


def test_predict_needs_the_kept_forests(tiny_config, tmp_path) -> None:
    cfg = tiny_config(str(tmp_path / "s"), epochs=1,
                      decoder={"name": "rf", "params": {"n_estimators": 5},
                               "keep_models": False})
    run_all(cfg)
    with pytest.raises(StoreError, match="forests were not kept"):
        predict.run(cfg, cfg.test_start_date, cfg.test_end_date)


def test_export_writes_a_model_folder_a_run_can_reuse(base, tiny_config, tmp_path) -> None:
    import io

    import torch

    from hybrid.encoder.export import export_model

    cfg, store = base
    folder = tmp_path / "models" / "tiny"
    export_model(cfg, str(folder), "hybrid run --config base.yml")
    assert sorted(p.name for p in folder.iterdir()) == [
        "MODEL_CARD.md", "checkpoints", "config.yml", "training_catchments.txt"]
    # weights and scaler load without unpickling code
    final = torch.load(io.BytesIO((folder / "checkpoints" / "final.pt").read_bytes()),
                       weights_only=True)
    assert {"state_dict", "scaler", "hparams", "split", "history"} <= set(final)
    card = (folder / "MODEL_CARD.md").read_text()
    summary = store.read_frame(layout.SUMMARY)
    hybrid_median = summary[summary.model == "hybrid"].nse.median()
    assert f"{hybrid_median:.3f}" in card and "hybrid run --config base.yml" in card
    assert (folder / "training_catchments.txt").read_text().split() == \
        store.read_json(layout.SPLIT)["train"]
    reuse = tiny_config(str(tmp_path / "new"), run_id="from-folder", dataset_options=SIX,
                        basins=["synthetic_004", "synthetic_005"], n_train_basins=1,
                        base_run=str(folder))
    assert run_all(reuse).exit_code == 0


def test_export_refuses_a_folder_that_is_not_empty_unless_forced(base, tmp_path, capsys,
                                                                 assert_one_line) -> None:
    """It used to write over whatever was there, another model's card and weights included."""
    import yaml

    from hybrid.cli import main

    cfg, store = base
    config = tmp_path / "base.yml"
    config.write_text(yaml.safe_dump(cfg.to_dict()))
    folder = tmp_path / "models" / "taken"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "final.pt").write_bytes(b"another model's weights")
    capsys.readouterr()
    assert main(["export", "--config", str(config), "--out", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert_one_line(err, str(folder), "--force")
    assert err.startswith("error: ") and "is not empty" in err
    assert (folder / "checkpoints" / "final.pt").read_bytes() == b"another model's weights"
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoints"]

    assert main(["export", "--config", str(config), "--out", str(folder), "--force"]) == 0
    assert capsys.readouterr().out.strip() == f"model: {folder}"
    assert (folder / "checkpoints" / "final.pt").read_bytes() == store.read_bytes(layout.FINAL)
    assert (folder / "MODEL_CARD.md").exists()
    # an empty folder (made beforehand, as a user might) needs no --force
    empty = tmp_path / "models" / "empty"
    empty.mkdir()
    assert main(["export", "--config", str(config), "--out", str(empty)]) == 0
    assert (empty / "checkpoints" / "final.pt").exists()
