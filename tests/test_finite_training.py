"""Non-finite training never passes as a model: it stops in one line, and a NaN model is never
saved as final, exported, or used to encode.
"""

from __future__ import annotations

import io

import pytest
import torch

from hybrid.cli import main
from hybrid.encoder import checkpoints as ckpt
from hybrid.errors import HybridError, StoreError
from hybrid.stages import prepare, pretrain, run_all
from hybrid.store import layout
from hybrid.store.runs import run_store


def test_a_diverging_training_stops_in_one_line_naming_epoch_and_key(tiny_config,
                                                                    tmp_path) -> None:
    from hybrid.execution.session import Session

    cfg = tiny_config(str(tmp_path), epochs=2, learning_rate=1e30, clip_gradient_norm=0.0)
    session = Session.open(cfg)
    try:
        prepare.run(cfg, session)
        with pytest.raises(HybridError) as excinfo:
            pretrain.run(cfg, session)
    finally:
        session.close()
    message = str(excinfo.value)
    assert "\n" not in message and "in epoch 1" in message and "learning_rate" in message
    assert "clip_gradient_norm" in message
    assert not run_store(cfg).exists(layout.FINAL)  # no NaN model is kept as the final one


def test_a_model_with_non_finite_weights_is_never_used_or_exported(tiny_config, tmp_path,
                                                                    capsys) -> None:
    cfg = tiny_config(str(tmp_path / "s"), epochs=1)
    assert run_all(cfg).exit_code == 0
    store = run_store(cfg)
    final = ckpt.load_object(store, layout.FINAL)
    name = next(iter(final["state_dict"]))
    final["state_dict"][name] = torch.full_like(final["state_dict"][name], float("nan"))
    ckpt.save_object(store, layout.FINAL, final)  # recorded: only the weights are wrong
    with pytest.raises(StoreError) as excinfo:
        ckpt.load_trained(store)
    assert f"weight {name!r} is not finite" in str(excinfo.value)
    from hybrid.encoder.export import export_model

    with pytest.raises(StoreError, match="is not finite"):
        export_model(cfg, str(tmp_path / "model"))
    assert not (tmp_path / "model" / layout.FINAL).exists()
    config = store.path(layout.CONFIG)
    capsys.readouterr()
    assert main(["encode", "--config", config, "--store", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "is not finite" in err[-1]


def test_the_report_of_a_run_without_a_finite_score_does_not_crash(tiny_config, tmp_path) -> None:
    """Every NSE of both models missing (what a NaN model gave): the report still writes."""
    import pandas as pd

    from hybrid.evaluation.report import write_report
    from hybrid.store import files

    cfg = tiny_config(str(tmp_path / "s"), epochs=1)
    assert run_all(cfg).exit_code == 0
    store = run_store(cfg)
    summary = store.read_frame(layout.SUMMARY).assign(nse=float("nan"))
    buf = io.BytesIO()
    summary.to_parquet(buf, index=False)
    files.write(store, layout.SUMMARY, buf.getvalue())
    assert write_report(store, cfg).endswith("report.md")
    assert isinstance(pd.read_parquet(store.path(layout.SUMMARY)), pd.DataFrame)
