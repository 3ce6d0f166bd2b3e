"""Encoder ensembles: several LSTMs read as one encoder (``hybrid.encoder.ensemble``).

The forests see the members' features side by side and the regional prediction is the members'
mean; a one-member ensemble is its member. ``hybrid export --snapshots`` turns a run's epoch
checkpoints into an ensemble model folder that ``base_run`` reuses like any other."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from hybrid.cli import main
from hybrid.data.windows import CatchmentArrays
from hybrid.encoder.ensemble import EnsembleLSTM, combine
from hybrid.encoder.features import encode_exact, encode_streaming, regional_head
from hybrid.encoder.model import RegionalLSTM
from hybrid.errors import StoreError
from hybrid.stages import run_all
from hybrid.store import layout
from hybrid.store.runs import run_store


def _member(seed: int, hidden: int = 6) -> RegionalLSTM:
    torch.manual_seed(seed)
    return RegionalLSTM(n_dynamic=2, n_static=1, hidden_size=hidden).eval()


def _arrays(days: int = 80) -> CatchmentArrays:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(days, 2)).astype(np.float32)
    return CatchmentArrays("g", pd.date_range("2000-01-01", periods=days), x,
                           np.zeros(days, np.float32), np.ones(1, np.float32))


def test_one_member_is_its_member() -> None:
    member = _member(1)
    ensemble = EnsembleLSTM([member]).eval()
    arrays, ends = _arrays(), np.arange(20, 80)
    np.testing.assert_array_equal(encode_streaming(ensemble, arrays, ends, 20),
                                  encode_streaming(member, arrays, ends, 20))
    np.testing.assert_array_equal(regional_head(ensemble, arrays, ends, 20, 5),
                                  regional_head(member, arrays, ends, 20, 5))


def test_features_side_by_side_and_the_mean_of_the_heads() -> None:
    a, b = _member(1, hidden=6), _member(2, hidden=4)
    ensemble = EnsembleLSTM([a, b]).eval()
    assert ensemble.hidden_size == 10
    arrays, ends = _arrays(), np.arange(30, 80)
    for encode in (encode_streaming, encode_exact):
        both = encode(ensemble, arrays, ends, 30)
        np.testing.assert_allclose(both, np.concatenate(
            [encode(a, arrays, ends, 30), encode(b, arrays, ends, 30)], axis=1), atol=1e-6)
    head = regional_head(ensemble, arrays, ends, 30, 1)
    mean = (regional_head(a, arrays, ends, 30, 1) + regional_head(b, arrays, ends, 30, 1)) / 2
    np.testing.assert_allclose(head, mean, atol=1e-6)


def test_members_with_another_scaler_are_refused() -> None:
    one = {"hparams": {}, "state_dict": {}, "scaler": {"means": [0.0]}}
    other = {**one, "scaler": {"means": [1.0]}}
    with pytest.raises(StoreError, match="scaler differs"):
        combine([one, other], ["a", "b"])


def _snapshot_ensemble(tiny_config, tmp_path: Path, run_id: str):
    """A two-epoch synthetic run and the model folder of its epochs 1 and 2 as an ensemble."""
    cfg = tiny_config(str(tmp_path / "runs"), run_id=run_id, epochs=2, patience=5)
    assert run_all(cfg).exit_code == 0
    config = tmp_path / "base.yml"
    config.write_text(cfg.to_yaml())
    out = tmp_path / "models" / "snap"
    assert main(["export", "--config", str(config), "--out", str(out),
                 "--snapshots", "1,2"]) == 0
    return cfg, out


def test_a_snapshot_ensemble_exports_and_is_reused(tiny_config, tmp_path: Path) -> None:
    cfg, out = _snapshot_ensemble(tiny_config, tmp_path, "ens-base")
    final = torch.load(io.BytesIO((out / layout.FINAL).read_bytes()), weights_only=True)
    assert len(final["members"]) == 2 and final["member_names"][1].endswith("epoch-002")
    card = (out / "MODEL_CARD.md").read_text()
    assert "An ensemble of 2 members" in card
    reuse = tiny_config(str(tmp_path / "runs"), run_id="ens-reuse", base_run=str(out))
    assert run_all(reuse).exit_code == 0
    store = run_store(reuse)
    gauge = sorted(store.read_json(layout.manifest_key(layout.ENCODED))["catchments"])[0]
    table = store.read_frame(layout.partition_key(layout.ENCODED, gauge))
    hidden = [c for c in table.columns if c.startswith("h_")]
    assert len(hidden) == 2 * cfg.hidden_size  # both members' features reach the forests
    summary = store.read_frame(layout.SUMMARY)
    assert (summary.status == "done").all()
    # hybrid predict serves the ensemble like any encoder
    import datetime as dt

    from hybrid.stages import predict

    served = predict.run(reuse, dt.date(1999, 1, 1), dt.date(1999, 6, 30)).summary
    assert set(served.model) == {"regional", "hybrid"} and np.isfinite(served.nse).all()


def test_a_missing_snapshot_epoch_is_one_line(tiny_config, tmp_path: Path, capsys) -> None:
    cfg = tiny_config(str(tmp_path / "runs"), run_id="ens-missing", epochs=1)
    assert run_all(cfg).exit_code == 0
    config = tmp_path / "base.yml"
    config.write_text(cfg.to_yaml())
    capsys.readouterr()
    code = main(["export", "--config", str(config), "--out", str(tmp_path / "m"),
                 "--snapshots", "1,9"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "epoch-009.pt not found (epochs kept: 1)" in err


def test_a_seed_ensemble_card_names_each_member_and_counts_each_training(
        tiny_config, tmp_path: Path) -> None:
    """Members that differ by seed share the split (``split_seed``) and so the scaler; the card
    gives each member's epoch and both validation scores, and the cost of both trainings."""
    runs = str(tmp_path / "runs")
    a = tiny_config(runs, run_id="seed-a", epochs=2, patience=5, seed=1, split_seed=7,
                    n_train_basins=None, train_basin_fraction=1.0, validation_basin_fraction=0.3)
    b = a.replace(run_id="seed-b", seed=2)
    assert run_all(a).exit_code == 0 and run_all(b).exit_code == 0
    config = tmp_path / "a.yml"
    config.write_text(a.to_yaml())
    how = tmp_path / "how.txt"
    how.write_text("hybrid run --config a.yml\nhybrid run --config b.yml\n")
    out = tmp_path / "models" / "seeds"
    assert main(["export", "--config", str(config), "--out", str(out), "--members",
                 str(run_store(b).uri()), "--reproduce", str(how)]) == 0
    final = torch.load(io.BytesIO((out / layout.FINAL).read_bytes()), weights_only=True)
    assert len(final["members"]) == 2 and len(final["member_histories"]) == 2
    card = (out / "MODEL_CARD.md").read_text()
    members = [line for line in card.splitlines() if line.startswith("  - `")]
    assert len(members) == 2 and all("held-out catchments" in line for line in members)
    seconds = sum(row["seconds"] for h in final["member_histories"] for row in h)
    assert f"{seconds / 60:.1f} minutes of training over 4 epochs" in card
    assert "hybrid run --config b.yml" in card and "spatial validation" in card
    # a snapshot ensemble of one training counts that training once
    snap = tmp_path / "models" / "snap"
    assert main(["export", "--config", str(config), "--out", str(snap),
                 "--snapshots", "1,2"]) == 0
    assert "over 2 epochs" in (snap / "MODEL_CARD.md").read_text()


def test_an_ensemble_is_fine_tuned_as_one_model(tiny_config, tmp_path: Path) -> None:
    """The fine-tuned baseline of a run on an ensemble trains the whole ensemble (the mean of
    its heads) on each catchment, and keeps it as an ensemble checkpoint."""
    _, out = _snapshot_ensemble(tiny_config, tmp_path, "ens-ft")
    reuse = tiny_config(str(tmp_path / "runs"), run_id="ens-ft-reuse", base_run=str(out),
                        baselines={"finetune": True, "finetune_epochs": 1,
                                   "finetune_max_basins": 1})
    assert run_all(reuse).exit_code == 0
    store = run_store(reuse)
    summary = store.read_frame(layout.SUMMARY)
    tuned = summary[summary.model == "finetuned"]
    assert len(tuned) == 1 and (tuned.status == "done").all() and np.isfinite(tuned.nse).all()
    gauge = tuned.gauge_id.iloc[0]
    saved = torch.load(io.BytesIO(
        store.read_bytes(f"{layout.baseline_checkpoints('finetuned', gauge)}/final.pt")),
        weights_only=True)
    assert len(saved["members"]) == 2 and "state_dict" not in saved


def test_a_card_exported_from_a_reusing_run_describes_how_the_encoder_was_trained(
        tiny_config, tmp_path: Path) -> None:
    """A run with ``base_run`` trained nothing: its card takes the training settings from the
    encoder's checkpoint, not from the reusing run's config."""
    cfg, out = _snapshot_ensemble(tiny_config, tmp_path, "ens-card")
    reuse = tiny_config(str(tmp_path / "runs"), run_id="reuse-card", base_run=str(out),
                        learning_rate=0.0123, hidden_size=cfg.hidden_size * 2)
    assert run_all(reuse).exit_code == 0
    config = tmp_path / "reuse.yml"
    config.write_text(reuse.to_yaml())
    card_dir = tmp_path / "models" / "again"
    assert main(["export", "--config", str(config), "--out", str(card_dir)]) == 0
    card = (card_dir / "MODEL_CARD.md").read_text()
    assert f"Adam at {cfg.learning_rate}" in card and "0.0123" not in card
    import yaml

    assert yaml.safe_load((card_dir / "config.yml").read_text())["hidden_size"] == \
        cfg.hidden_size
