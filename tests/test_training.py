"""Pre-training of the regional LSTM (hybrid.encoder.trainer) and its checkpoints.

The learning test runs on four real Caravan catchments; everything about checkpoints, resuming
and reproducibility runs on the tiny synthetic dataset, whose runs take a fraction of a second.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import hybrid.encoder.trainer as training
from hybrid.data.catalog import load_attributes, load_catchment, split_catchments
from hybrid.data.windows import CatchmentArrays, Scaler, WindowSampler
from hybrid.encoder import checkpoints as ckpt
from hybrid.encoder.losses import MaskedMSE, NSELoss, nse_weights
from hybrid.encoder.trainer import Trainer, train_regional
from hybrid.errors import ConfigError
from hybrid.stages.prepare import prepare
from hybrid.store import layout
from hybrid.store.runs import open_run
from hybrid.store.storage import Store

REAL_GAUGES = ["camels_01022500", "camels_01031500", "camels_01047000", "camels_01052500"]


def _prepared(cfg) -> Store:
    store = open_run(cfg)
    prepare(cfg, store)
    return store


@pytest.fixture
def tiny(tiny_config):
    """(store, cfg) of a prepared tiny synthetic run in a folder of its own."""
    def make(path: Path, **overrides):
        cfg = tiny_config(str(path), **overrides)
        return _prepared(cfg), cfg

    return make


def _validation_losses(monkeypatch, losses: list[float]) -> None:
    """Let the trainer see a chosen validation loss per epoch."""
    values = iter(losses)
    monkeypatch.setattr(Trainer, "validate",
                        lambda self: {"validation_loss": next(values), "validation_nse": 0.0})


def _latest_epoch(store: Store) -> int:
    return ckpt.epochs(store)[-1]


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key].cpu(), b[key].cpu()), key


def differ(a: dict, b: dict) -> bool:
    return any(not torch.equal(a[k].cpu(), b[k].cpu()) for k in a)


def _batch(store: Store, trained: ckpt.TrainedModel, cfg, n: int = 64):
    """A real batch of validation windows, normalised with the run's own scaler."""
    attributes = load_attributes(store)
    arrays = [CatchmentArrays.build(g, load_catchment(store, g),
                                    attributes.loc[g, trained.scaler.static_attributes]
                                    .to_numpy(), trained.scaler)
              for g in trained.split["train"] + trained.split["out_of_training"]]
    sampler = WindowSampler(arrays, cfg.seq_length, 1, cfg.validation_start_date,
                            cfg.validation_end_date)
    x_d, x_s, _ = sampler.batch(np.linspace(0, len(sampler) - 1, n).astype(np.int64))
    return x_d, x_s


# --- real data: it learns --------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_run(caravan_dir, caravan_config):
    cfg = caravan_config(caravan_dir, REAL_GAUGES, epochs=4, hidden_size=16, seq_length=90)
    store = _prepared(cfg)
    return store, cfg, train_regional(store, cfg)


@pytest.mark.realdata
def test_training_on_real_catchments_lowers_the_validation_loss(real_run) -> None:
    store, cfg, trained = real_run
    history = trained.history
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    first = history[0]["validation_loss"]
    best = history[trained.best_epoch - 1]["validation_loss"]
    assert trained.best_epoch > 1
    assert best == min(h["validation_loss"] for h in history)
    assert best < 0.9 * first, history
    assert all(np.isfinite(h["train_loss"]) and h["samples"] == 3000 for h in history)
    # validation NSE per epoch, over the training catchments' validation windows
    assert all(-10 < h["validation_nse"] < 1 for h in history)
    assert history[trained.best_epoch - 1]["validation_nse"] > history[0]["validation_nse"]
    # the history is also a Parquet table any tool can read
    table = store.read_frame(layout.HISTORY)
    assert table["validation_loss"].tolist() == [h["validation_loss"] for h in history]


@pytest.mark.realdata
def test_checkpoint_reloads_to_identical_outputs(real_run) -> None:
    store, cfg, trained = real_run
    loaded = ckpt.load_trained(store)
    assert loaded.scaler == trained.scaler
    assert loaded.split == trained.split and loaded.best_epoch == trained.best_epoch
    assert_same_weights(_state(loaded.model), _state(trained.model))
    assert not loaded.model.training
    x_d, x_s = _batch(store, trained, cfg)
    trained.model.eval()
    with torch.no_grad():
        a, b = trained.model(x_d, x_s), loaded.model(x_d, x_s)
    assert torch.equal(a["y_hat"], b["y_hat"]) and torch.equal(a["hidden"], b["hidden"])


@pytest.mark.realdata
def test_split_and_scaler_come_from_the_training_catchments(real_run) -> None:
    store, cfg, trained = real_run
    split = store.read_json(layout.SPLIT)
    assert split == trained.split == split_catchments(REAL_GAUGES, cfg)
    assert len(split["train"]) == 3  # train_basin_fraction 0.75 of 4
    assert sorted(split["train"] + split["out_of_training"]) == sorted(REAL_GAUGES)
    assert not set(split["train"]) & set(split["out_of_training"])
    frames = {g: load_catchment(store, g) for g in split["train"]}
    expected = Scaler.fit(frames, load_attributes(store), cfg.dynamic_inputs,
                          cfg.static_attributes, cfg.target, cfg.train_start_date,
                          cfg.train_end_date)
    assert trained.scaler == expected
    everything = {g: load_catchment(store, g) for g in REAL_GAUGES}
    assert Scaler.fit(everything, load_attributes(store), cfg.dynamic_inputs,
                      cfg.static_attributes, cfg.target, cfg.train_start_date,
                      cfg.train_end_date) != trained.scaler


# --- the split --------------------------------------------------------------------------------


def test_split_is_drawn_by_seed(tmp_path: Path, tiny_config) -> None:
    gauges = [f"g{i:02d}" for i in range(20)]
    cfg = tiny_config(str(tmp_path), n_train_basins=None, train_basin_fraction=0.8)
    a = split_catchments(gauges, cfg)
    assert len(a["train"]) == 16 and len(a["out_of_training"]) == 4
    assert sorted(a["train"] + a["out_of_training"]) == gauges
    assert a == split_catchments(list(reversed(gauges)), cfg)  # not the listing order
    others = [split_catchments(gauges, cfg.replace(seed=s)) for s in (1, 2, 3)]
    assert any(o != a for o in others)
    assert split_catchments(gauges, cfg.replace(n_train_basins=5))["train"].__len__() == 5
    with pytest.raises(ConfigError, match="n_train_basins: 21 .* only 20"):
        split_catchments(gauges, cfg.replace(n_train_basins=21))  # refused, not clamped


def test_split_recorded_in_the_run(tmp_path: Path, tiny) -> None:
    store, cfg = tiny(tmp_path, epochs=1)
    trained = train_regional(store, cfg)
    split = store.read_json(layout.SPLIT)
    gauges = sorted(store.read_json("catchments/_manifest.json")["catchments"])
    assert len(split["train"]) == cfg.n_train_basins == 3
    assert sorted(split["train"] + split["out_of_training"]) == gauges
    assert not set(split["train"]) & set(split["out_of_training"])
    assert trained.split == split == ckpt.load_object(store, layout.FINAL)["split"]


# --- checkpoints, resuming, reproducibility ---------------------------------------------------


def test_best_weights_are_kept_not_the_last(tmp_path: Path, monkeypatch, tiny) -> None:
    """Epoch 2 is the best, epoch 3 is worse: the final model must be epoch 2's weights."""
    _validation_losses(monkeypatch, [1.0, 0.5, 0.9])
    store, cfg = tiny(tmp_path, epochs=3)
    trained = train_regional(store, cfg)
    assert trained.best_epoch == 2
    assert [h["validation_loss"] for h in trained.history] == [1.0, 0.5, 0.9]
    epoch2 = ckpt.load_object(store, layout.epoch_key(2))
    epoch3 = ckpt.load_object(store, layout.epoch_key(3))
    assert differ(epoch2["model"], epoch3["model"])  # epoch 3 did change the weights
    final = ckpt.load_object(store, layout.FINAL)
    assert final["best_epoch"] == 2
    assert_same_weights(final["state_dict"], epoch2["model"])
    assert_same_weights(_state(trained.model), epoch2["model"])
    # the best state carried in epoch 3's checkpoint is a copy, not the live weights
    assert_same_weights(epoch3["state"]["best_state"], epoch2["model"])
    assert_same_weights(_state(ckpt.load_trained(store).model), epoch2["model"])


def test_rerun_with_a_final_checkpoint_does_not_retrain(tmp_path: Path, monkeypatch,
                                                        tiny) -> None:
    store, cfg = tiny(tmp_path, epochs=2)
    first = train_regional(store, cfg)
    files = {name: store.read_bytes(f"checkpoints/{name}") for name in store.listdir("checkpoints")}

    def refuse(*args, **kwargs):
        raise AssertionError("retrained although final.pt exists")

    monkeypatch.setattr(training, "WindowSampler", refuse)
    again = train_regional(store, cfg.replace(epochs=5))
    assert {n: store.read_bytes(f"checkpoints/{n}")
            for n in store.listdir("checkpoints")} == files
    assert_same_weights(_state(again.model), _state(first.model))
    assert again.history == first.history


def _without_seconds(history: list[dict]) -> list[dict]:
    timing = ("seconds", "cpu_seconds", "samples_per_second", "target_days_per_second")
    return [{k: v for k, v in h.items() if k not in timing} for h in history]


def test_interrupted_run_resumes_from_its_last_epoch(tmp_path: Path, capsys, tiny) -> None:
    store, cfg = tiny(tmp_path / "a", epochs=2)
    train_regional(store, cfg)
    kept = {k: store.read_bytes(layout.epoch_key(k)) for k in (1, 2)}
    # the crash: epoch checkpoints written, final model and history not
    store.delete(layout.FINAL)
    store.delete(layout.HISTORY)
    capsys.readouterr()
    resumed = train_regional(store, cfg.replace(epochs=3))
    log = capsys.readouterr().err
    assert "resuming after epoch 2" in log
    assert "epoch 1 train loss" not in log and "epoch 2 train loss" not in log
    assert "epoch 3 train loss" in log
    assert {k: store.read_bytes(layout.epoch_key(k)) for k in (1, 2)} == kept  # not retrained
    assert _latest_epoch(store) == 3
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]

    other, cfg3 = tiny(tmp_path / "b", epochs=3)
    straight = train_regional(other, cfg3)
    assert resumed.best_epoch == straight.best_epoch
    assert _without_seconds(resumed.history) == _without_seconds(straight.history)
    assert_same_weights(_state(resumed.model), _state(straight.model))
    assert_same_weights(ckpt.load_object(store, layout.epoch_key(3))["model"],
                        ckpt.load_object(other, layout.epoch_key(3))["model"])


def test_resume_after_early_stopping_trains_nothing_more(tmp_path: Path, monkeypatch,
                                                         tiny) -> None:
    _validation_losses(monkeypatch, [1.0, 2.0, 3.0, 4.0])
    store, cfg = tiny(tmp_path, epochs=4, patience=1)
    first = train_regional(store, cfg)
    assert [h["epoch"] for h in first.history] == [1, 2]  # stopped early after epoch 2
    store.delete(layout.FINAL)  # interrupted between the last epoch checkpoint and final.pt
    resumed = train_regional(store, cfg)
    assert _latest_epoch(store) == 2
    assert [h["epoch"] for h in resumed.history] == [1, 2]


def test_same_seed_gives_identical_weights_in_different_stores(tmp_path: Path, tiny) -> None:
    a = train_regional(*tiny(tmp_path / "a", epochs=2))
    b = train_regional(*tiny(tmp_path / "b", epochs=2))
    assert_same_weights(_state(a.model), _state(b.model))
    assert _without_seconds(a.history) == _without_seconds(b.history)
    c = train_regional(*tiny(tmp_path / "c", epochs=2, seed=7))
    assert differ(_state(a.model), _state(c.model))


def test_predict_last_n_trains(tmp_path: Path, tiny) -> None:
    store, cfg = tiny(tmp_path / "n", epochs=2, predict_last_n=10, learning_rate=0.005)
    trained = train_regional(store, cfg)
    history = trained.history
    assert all(np.isfinite(h["train_loss"]) and np.isfinite(h["validation_loss"])
               for h in history)
    assert history[-1]["validation_loss"] < history[0]["validation_loss"]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    one = train_regional(*tiny(tmp_path / "one", epochs=2, learning_rate=0.005))
    assert differ(_state(trained.model), _state(one.model))  # the loss really covers n steps


def test_no_training_window_is_a_clear_error(tmp_path: Path, tiny) -> None:
    store, cfg = tiny(tmp_path, epochs=1)
    cfg = cfg.replace(train_start_date=dt.date(1995, 1, 1), train_end_date=dt.date(1995, 1, 10))
    with pytest.raises(training.HybridError, match="no valid training window"):
        train_regional(store, cfg)


def test_truncated_epoch_checkpoint_falls_back_to_the_one_before(tmp_path: Path, capsys,
                                                                tiny) -> None:
    """An interrupted copy of epoch-002.pt must not stop the run: it resumes after epoch 1
    and ends with the weights of an uninterrupted run."""
    store, cfg = tiny(tmp_path / "a", epochs=2)
    train_regional(store, cfg)
    store.delete(layout.FINAL)
    data = store.read_bytes(layout.epoch_key(2))
    store.write_bytes(layout.epoch_key(2), data[: len(data) // 3])
    capsys.readouterr()
    resumed = train_regional(store, cfg)
    log = capsys.readouterr().err
    assert "epoch-002.pt: not a readable checkpoint" in log
    assert "resuming after epoch 1" in log and "epoch 2 train loss" in log
    straight = train_regional(*tiny(tmp_path / "b", epochs=2))
    assert_same_weights(_state(resumed.model), _state(straight.model))


def test_damaged_final_checkpoint_is_one_line_that_says_what_to_do(tmp_path: Path,
                                                                  tiny) -> None:
    from hybrid.errors import StoreError

    store, cfg = tiny(tmp_path, epochs=1)
    train_regional(store, cfg)
    store.write_bytes(layout.FINAL, store.read_bytes(layout.FINAL)[:100])
    with pytest.raises(StoreError) as excinfo:
        ckpt.load_trained(store)
    message = str(excinfo.value)
    assert "\n" not in message and "final.pt" in message and "hybrid pretrain" in message


def test_one_masked_loss_for_training_and_validation() -> None:
    loss = MaskedMSE()
    y_hat = torch.tensor([[1.0, 2.0, 3.0]])
    y = torch.tensor([[2.0, math.nan, 5.0]])
    total, count = loss(y_hat, y)
    assert float(total) == 1.0 + 4.0 and int(count) == 2
    assert float(loss.mean(y_hat, y)) == 2.5
    assert float(loss.mean(y_hat, torch.full_like(y, math.nan))) == 0.0  # nothing observed


def test_nse_loss_weighs_each_catchment_by_its_spread() -> None:
    weights = np.array([1.0, 4.0])
    loss = NSELoss(weights)
    y_hat = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    y = torch.tensor([[0.0, 0.0], [0.0, math.nan]])
    total, count = loss(y_hat, y, torch.tensor([0, 1]))
    assert float(total) == 1.0 + 1.0 + 4.0 and int(count) == 3
    assert float(loss(y_hat, y)[0]) == 3.0  # unweighted without owners
    assert float(MaskedMSE()(y_hat, y, torch.tensor([0, 1]))[0]) == 3.0  # MSE weighs nothing


def test_nse_weights_follow_the_training_spread(tiny) -> None:
    y_flat = np.zeros(10, np.float32)
    y_wide = np.linspace(-2, 2, 10).astype(np.float32)
    dates = pd.date_range("2000-01-01", periods=10)
    arrays = [CatchmentArrays("a", dates, np.zeros((10, 1), np.float32), y, np.zeros(1))
              for y in (y_flat, y_wide)]
    w = nse_weights(arrays, dt.date(2000, 1, 1), dt.date(2000, 1, 10))
    assert w[0] == pytest.approx(1 / 0.1 ** 2)
    assert w[1] == pytest.approx(1 / (y_wide.std() + 0.1) ** 2)


def test_validation_windows_tile_the_period_of_whole_catchments(tmp_path: Path, tiny) -> None:
    store, cfg = tiny(tmp_path, epochs=1, predict_last_n=30, max_validation_samples=30)
    trainer = Trainer(store, store, cfg, training.catchment_split(store, cfg), device="cpu")
    windows = trainer.valid_windows
    per_owner = np.bincount(windows.owners)
    chosen = np.unique(windows.owners[trainer.val_idx])
    # whole catchments only, as many as fit in the budget of 30 windows
    assert per_owner[chosen].sum() == len(trainer.val_idx) <= 30 or len(chosen) == 1
    for owner in chosen:
        ends = windows.ends[windows.owners == owner]
        assert (np.diff(ends) == 30).all()  # blocks of predict_last_n days, no overlap
    row = trainer.validate()
    assert np.isfinite(row["validation_loss"]) and np.isfinite(row["validation_nse"])
