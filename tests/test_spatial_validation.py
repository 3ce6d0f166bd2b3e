"""Spatial validation (``validation_basin_fraction``): a seeded share of the training pool is
held out of the gradient steps and picks the best epoch, so an encoder is chosen for places it
never saw. These tests show the held-out catchments never reach training (windows, scaler) and
that the run's other catchments are split exactly as without it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hybrid.data.catalog import load_attributes, load_catchment, split_catchments
from hybrid.data.windows import Scaler
from hybrid.encoder.trainer import Trainer
from hybrid.errors import ConfigError
from hybrid.stages.prepare import prepare
from hybrid.store import layout
from hybrid.store.runs import open_run

GAUGES = [f"g{i:03d}" for i in range(40)]


def test_held_out_catchments_come_from_the_training_pool(tiny_config, tmp_path) -> None:
    plain = tiny_config(str(tmp_path), n_train_basins=30)
    spatial = plain.replace(validation_basin_fraction=0.2)
    before, after = split_catchments(GAUGES, plain), split_catchments(GAUGES, spatial)
    assert after["out_of_training"] == before["out_of_training"]  # new locations unchanged
    assert len(after["validation"]) == 6 and len(after["train"]) == 24
    assert sorted(after["train"] + after["validation"]) == before["train"]
    assert not set(after["train"]) & set(after["validation"])
    assert split_catchments(list(reversed(GAUGES)), spatial) == after  # seeded, not ordered
    assert split_catchments(GAUGES, spatial.replace(seed=7))["validation"] != after["validation"]


def test_a_fraction_that_leaves_nothing_to_train_on_is_refused(tiny_config, tmp_path) -> None:
    with pytest.raises(ConfigError, match="validation_basin_fraction"):
        tiny_config(str(tmp_path), validation_basin_fraction=1.0)
    cfg = tiny_config(str(tmp_path), n_train_basins=1, validation_basin_fraction=0.5)
    with pytest.raises(ConfigError, match="leaves none to train on"):
        split_catchments(GAUGES[:4], cfg)


def _prepared(tiny_config, tmp_path: Path, run_id: str, **keys):
    """(config, store) of a prepared four-catchment synthetic run whose whole pool is training
    catchments, a share of them held out (``validation_basin_fraction`` in ``keys``)."""
    cfg = tiny_config(str(tmp_path), run_id=run_id, n_train_basins=None,
                      train_basin_fraction=1.0,
                      dataset_options={"n_catchments": 4, "seed": 1,
                                       "start_date": "1995-01-01", "end_date": "1999-12-31"},
                      **keys)
    store = open_run(cfg)
    prepare(cfg, store)
    return cfg, store


def test_spatial_validation_never_trains_on_its_catchments(tiny_config, tmp_path: Path) -> None:
    cfg, store = _prepared(tiny_config, tmp_path, "spatial", validation_basin_fraction=0.25)
    split = split_catchments(sorted(layout_gauges(store)), cfg)
    assert len(split["validation"]) == 1 and len(split["train"]) == 3
    trainer = Trainer(store, store, cfg, split, device="cpu", quiet=True)
    # the gradient steps draw windows of the training catchments only
    trained_on = {trainer.train_windows_ids[i] for i in np.unique(trainer.train_windows.owners)}
    assert trained_on == set(split["train"])
    assert [a.gauge_id for a in trainer.spatial_arrays] == split["validation"]
    # the scaler is the one fitted on the training catchments alone
    attributes = load_attributes(store)
    frames = {g: load_catchment(store, g) for g in split["train"]}
    alone = Scaler.fit(frames, attributes, cfg.dynamic_inputs, cfg.static_attributes,
                       cfg.target, cfg.train_start_date, cfg.train_end_date)
    assert alone.to_dict() == trainer.scaler.to_dict()
    trained = trainer.train()
    history = pd.DataFrame(trained.history)
    assert {"spatial_validation_loss", "spatial_validation_nse"} <= set(history.columns)
    assert np.isfinite(history["spatial_validation_loss"]).all()
    best = int(history.loc[history["spatial_validation_loss"].idxmin(), "epoch"])
    assert trained.best_epoch == best  # the held-out catchments pick the epoch
    assert trained.split["validation"] == split["validation"]


def layout_gauges(store) -> list[str]:
    return list(store.read_json(layout.manifest_key(layout.CATCHMENTS))["catchments"])


def test_the_model_card_gives_both_validation_scores() -> None:
    from hybrid.encoder.export import _best_line

    history = pd.DataFrame({"epoch": [1, 2], "validation_nse": [0.41, 0.52],
                            "spatial_validation_nse": [0.33, 0.30]})
    line = _best_line(history, 1)
    assert "held out of training" in line and "0.410" in line and "0.330" in line
    plain = _best_line(history.drop(columns="spatial_validation_nse"), 2)
    assert "training catchments" in plain and "0.520" in plain and "held-out" not in plain


def test_the_model_card_says_what_the_epoch_in_use_was_best_at() -> None:
    """Read from the history, not the config: an epoch exported after training (a snapshot)
    is described by what it is best at, or by nothing."""
    from hybrid.encoder.export import _best_line

    history = pd.DataFrame({"epoch": [1, 2, 3, 4], "validation_loss": [.4, .3, .3, .3],
                            "validation_nse": [.3, .4, .5, .5],
                            "spatial_validation_loss": [.33, .34, .32, .31],
                            "spatial_validation_nse": [.31, .32, .37, .34]})
    assert "(the lowest validation loss of the catchments held out" in _best_line(history, 4)
    assert "(the highest median validation NSE of the catchments held out" in \
        _best_line(history, 3)
    assert _best_line(history, 2).startswith("- Epoch 2 of 4;")


def test_split_seed_keeps_the_split_while_seed_varies_the_weights(tiny_config, tmp_path) -> None:
    base = tiny_config(str(tmp_path), n_train_basins=30, validation_basin_fraction=0.2)
    member = base.replace(seed=7, split_seed=base.seed)
    assert split_catchments(GAUGES, member) == split_catchments(GAUGES, base)
    assert split_catchments(GAUGES, base.replace(seed=7)) != split_catchments(GAUGES, base)
    with pytest.raises(ConfigError, match="split_seed"):
        base.replace(split_seed=-1)


def test_the_recorded_split_keeps_its_held_out_catchments(tiny_config, tmp_path) -> None:
    """A resumed training reads the split back from the run: the held-out catchments must come
    back with it, or the rerun would pick its epoch on the training catchments' later years."""
    from hybrid.data.catalog import catchment_split

    cfg, store = _prepared(tiny_config, tmp_path, "resplit", validation_basin_fraction=0.25)
    drawn = catchment_split(store, cfg)
    assert len(drawn["validation"]) == 1
    again = catchment_split(store, cfg)
    assert again == drawn and list(again) == list(drawn)  # same parts, same order


def test_the_median_held_out_nse_can_pick_the_epoch(tiny_config, tmp_path: Path) -> None:
    """``stopping_metric: median_nse`` keeps the epoch with the highest median NSE of the
    held-out catchments where their mean loss would keep another. The validation scores are
    scripted (a real tiny run's two criteria agree), the training is real."""
    scores = [(0.30, 0.20), (0.25, 0.10), (0.28, 0.30)]  # (loss, median NSE) per epoch
    picked = {}
    for metric in ("loss", "median_nse"):
        cfg, store = _prepared(tiny_config, tmp_path, f"by-{metric}", epochs=3, patience=10,
                               validation_basin_fraction=0.5, stopping_metric=metric)
        split = split_catchments(sorted(layout_gauges(store)), cfg)
        trainer = Trainer(store, store, cfg, split, device="cpu", quiet=True)
        script = iter(scores)

        def scripted(script=script):
            loss, median = next(script)
            return {"validation_loss": 0.5, "validation_nse": 0.0,
                    "spatial_validation_loss": loss, "spatial_validation_nse": median}

        trainer.validate = scripted
        picked[metric] = trainer.train().best_epoch
    assert picked == {"loss": 2, "median_nse": 3}
    with pytest.raises(ConfigError, match="stopping_metric"):
        tiny_config(str(tmp_path), stopping_metric="mean_nse")
