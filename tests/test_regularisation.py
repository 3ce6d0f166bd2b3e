"""Regularisers of the regional LSTM (weight decay, target and input noise): on only when
asked, on training batches only, seeded like the rest of training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hybrid.data.catalog import catchment_split
from hybrid.encoder.trainer import Trainer
from hybrid.errors import ConfigError
from hybrid.stages.prepare import prepare
from hybrid.store.runs import open_run


@pytest.fixture(scope="module")
def prepared(tiny_config, tmp_path_factory):
    cfg = tiny_config(str(tmp_path_factory.mktemp("reg")), run_id="reg", epochs=1)
    store = open_run(cfg)
    prepare(cfg, store)
    return store, cfg


def _trainer(prepared, **keys) -> Trainer:
    store, cfg = prepared
    cfg = cfg.replace(**keys)
    return Trainer(store, store, cfg, catchment_split(store, cfg), device="cpu", quiet=True)


def test_noise_only_when_asked_and_missing_days_stay_missing(prepared) -> None:
    x = torch.zeros(4, 10, 3)
    y = torch.tensor([[1.0, math.nan, 2.0]] * 4)
    plain = _trainer(prepared)
    same_x, same_y = plain._perturb(x, y)
    assert same_x is x and same_y is y
    noisy = _trainer(prepared, target_noise_std=0.1, input_noise_std=0.2)
    torch.manual_seed(0)
    nx, ny = noisy._perturb(x, y)
    assert torch.isnan(ny[:, 1]).all() and not torch.equal(ny[:, [0, 2]], y[:, [0, 2]])
    assert 0.1 < float(nx.std()) < 0.3


def test_weight_decay_reaches_the_optimiser(prepared) -> None:
    assert _trainer(prepared, weight_decay=1e-4).optimizer.param_groups[0]["weight_decay"] \
        == 1e-4
    assert _trainer(prepared).optimizer.param_groups[0]["weight_decay"] == 0.0


def test_noise_changes_training_but_not_validation(prepared) -> None:
    plain, noisy = _trainer(prepared), _trainer(prepared, target_noise_std=0.5)
    before = plain.validate()["validation_loss"]
    assert noisy.validate()["validation_loss"] == before  # same weights: validation unperturbed
    a, b = plain.train_epoch(1), noisy.train_epoch(1)
    assert a["train_loss"] != b["train_loss"]
    again = _trainer(prepared, target_noise_std=0.5).train_epoch(1)
    assert again["train_loss"] == b["train_loss"]  # seeded: a resumed epoch draws the same noise


@pytest.mark.parametrize("key", ["weight_decay", "target_noise_std", "input_noise_std"])
def test_negative_or_infinite_regularisers_are_refused(tiny_config, key) -> None:
    for bad in (-0.1, np.inf):
        with pytest.raises(ConfigError, match=key):
            tiny_config(**{key: bad})
