"""The shipped CAMELS-US encoder (``models/camels-us-s2s-h128``), as a user meets it.

The folder must stay small, load without unpickling code, say what it is, and fine-tune a few
real Caravan catchments through ``configs/finetune_caravan.yml`` (the README's third command)
with skill that only a trained encoder gives; a config whose inputs differ is refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from hybrid.config import load_config
from hybrid.errors import ConfigError
from hybrid.stages import run_all
from hybrid.store import layout
from hybrid.store.runs import run_store

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "finetune_caravan.yml"
#: the encoder the fine-tuning config ships with, and every model folder kept in the repository
MODEL = (CONFIG.parent / yaml.safe_load(CONFIG.read_text())["base_run"]).resolve()
FOLDERS = sorted(p for p in (REPO / "models").iterdir() if p.is_dir())
#: two catchments of the encoder's training set and two it never saw; periods shortened so the
#: test takes seconds (the encoder streams over each whole record either way)
IN_TRAINING = ["camels_01022500", "camels_02479155"]
SHORT = {"train_start_date": "1995-10-01", "train_end_date": "2001-09-30",
         "validation_start_date": "2001-10-01", "validation_end_date": "2003-09-30",
         "test_start_date": "2003-10-01", "test_end_date": "2007-09-30"}


@pytest.mark.parametrize("model", FOLDERS, ids=[p.name for p in FOLDERS])
def test_the_model_folder_is_small_loads_without_pickle_and_says_what_it_is(model) -> None:
    files = [f for f in model.rglob("*") if f.is_file()]
    assert sum(f.stat().st_size for f in files) <= 5 * 2**20
    final = torch.load(model / "checkpoints" / "final.pt", weights_only=True,
                       map_location="cpu")
    config = yaml.safe_load((model / "config.yml").read_text())
    members = final.get("members") or [final]  # a single encoder or an ensemble's members
    for member in members:
        assert member["state_dict"]["lstm.weight_hh_l0"].shape[1] == config["hidden_size"]
    train = (model / "training_catchments.txt").read_text().split()
    held_out = final["split"].get("validation", [])  # spatial validation's catchments
    assert train == final["split"]["train"] and len(train) + len(held_out) == 371
    assert set(IN_TRAINING) <= set(train)
    card = (model / "MODEL_CARD.md").read_text()
    for needed in ("hybrid export", "out of training (new locations)", "minutes of training"):
        assert needed in card
    if len(members) > 1:
        assert f"An ensemble of {len(members)} members" in card


def test_the_fine_tuning_config_ships_a_kept_model() -> None:
    assert MODEL in FOLDERS


def _config(caravan_dir: Path, store: Path, gauges: list[str], **changes):
    data = yaml.safe_load(CONFIG.read_text())
    data.update(SHORT, store=str(store), data_dir=str(caravan_dir),
                base_run=str(MODEL), basins=gauges,
                decoder={"name": "rf", "params": {"n_estimators": 20}},
                resources={"executor": "local"}, **changes)
    data.pop("basin_file")
    path = store.parent / "finetune.yml"
    path.write_text(yaml.safe_dump(data))
    return load_config(str(path))


def test_fine_tuning_real_catchments_with_the_shipped_encoder(caravan_dir, tmp_path) -> None:
    train = (MODEL / "training_catchments.txt").read_text().split()
    every = sorted(p.stem for p in (caravan_dir / "timeseries" / "csv" / "camels").glob("*.csv"))
    new = [g for g in every if g not in set(train)][:2]
    cfg = _config(caravan_dir, tmp_path / "runs", IN_TRAINING + new)
    outcome = run_all(cfg)
    assert outcome.exit_code == 0
    summary = outcome.summary
    assert (summary.status == "done").all()
    assert (summary.in_training == summary.gauge_id.isin(IN_TRAINING)).all()
    assert np.isfinite(summary.nse).all()
    # an untrained encoder of this size scores far below zero on raw flow; the shipped one
    # was trained on these inputs, so its regional head is already skilful in the median
    regional = summary[summary.model == "regional"].nse
    assert regional.median() > 0.3, summary[["gauge_id", "model", "nse"]]
    # reused, not trained: no epoch checkpoint
    assert not any(n.startswith("epoch-") for n in run_store(cfg).listdir(layout.CHECKPOINTS))


def test_other_inputs_than_the_shipped_encoder_are_refused(caravan_dir, tmp_path) -> None:
    cfg = _config(caravan_dir, tmp_path / "runs", IN_TRAINING,
                  dynamic_inputs=["total_precipitation_sum", "temperature_2m_mean"])
    with pytest.raises(ConfigError, match=r"^dynamic_inputs: .*differs from the base run's"):
        run_all(cfg)
    assert not (tmp_path / "runs").exists()
