"""The paper's comparison models, one LSTM per catchment: ``catchment_wise`` (trained from
scratch on the catchment alone) and ``finetuned`` (the regional LSTM trained further on it,
with the regional scaler, keeping its best epoch on the catchment's validation period, where
"epoch 0" is the regional model unchanged).

Both are the cost the hybrid is meant to avoid, so they are optional. Each is one unit of work
per catchment on the same CPU nodes as the decoders, reusing ``hybrid.encoder.trainer.Trainer``
(no second training loop), and writes its test-period predictions to
``baselines/<model>/predictions/<id>/part-0.parquet``, which scoring joins.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from hybrid.config import Config
from hybrid.data.catalog import encoded_catchments, load_attributes, load_catchment
from hybrid.encoder.checkpoints import load_trained, model_sha
from hybrid.encoder.features import encode_catchment
from hybrid.encoder.trainer import Trainer
from hybrid.evaluation.scoring import clip_predictions
from hybrid.execution.context import Context, WorkResult
from hybrid.execution.runner import CatchmentStage, StageOutcome, run_stage
from hybrid.execution.session import Session
from hybrid.store import layout, partitions
from hybrid.store.provenance import config_hash

MODEL = layout.CATCHMENT_WISE
FINETUNED = layout.FINETUNED


def run(cfg: Config, session: Session | None = None) -> StageOutcome:
    """The optional per-catchment LSTMs (the paper's costly comparison models)."""
    b = cfg.baselines
    if not (b.catchment_wise or b.finetune):
        return StageOutcome("baselines")
    session = Session.ensure(cfg, session)
    cfg, store = session.cfg, session.store
    gauges = encoded_catchments(store)
    stages = []
    if b.catchment_wise:
        stages.append((catchment_wise_stage(cfg), b.catchment_wise_max_basins))
    if b.finetune:
        stages.append((finetune_stage(cfg, model_sha(store)), b.finetune_max_basins))
    failed: list[str] = []
    for stage, limit in stages:
        todo = gauges[:limit] if limit is not None else gauges
        result = run_stage(stage, Context.of(store, cfg), todo, session.executor)
        session.timed(stage.name, result, task_seconds=float(sum(
            result.done[g].records[stage.folder].get("fit_seconds", 0)
            for g in result.ran if g in result.done)))
        session.results[stage.name] = result
        failed += result.failed
    return StageOutcome("baselines", failed=sorted(set(failed)))


def _site_config(cfg: Config, **changes) -> Config:
    """A one-catchment training's config: the run's, with the baseline's own budget."""
    return cfg.replace(n_train_basins=1, num_threads=0,
                       max_train_samples_per_epoch=cfg.baselines.samples_per_epoch,
                       max_validation_samples=None, max_train_minutes=None, **changes)


def catchment_wise_config(cfg: Config) -> Config:
    b = cfg.baselines
    return _site_config(cfg, hidden_size=b.catchment_wise_hidden_size,
                        epochs=b.catchment_wise_epochs, patience=b.catchment_wise_patience)


def baseline_stamp(cfg: Config, model: str) -> dict[str, str]:
    return {"stage": model, "config": config_hash(cfg.to_dict())}


def predict_test_period(context: Context, model: str, trained, site_cfg: Config,
                        gauge_id: str, seconds: float, lineage: str = "") -> WorkResult:
    """Write the model's test-period predictions (scored from exact windows, as the regional
    baseline is) and return the partition record."""
    frame = load_catchment(context.store, gauge_id)
    static = load_attributes(context.store).loc[gauge_id, trained.scaler.static_attributes]
    table = encode_catchment(trained, site_cfg, gauge_id, frame, static.to_numpy()).to_pandas()
    test = table[table["split"] == "test"]
    predictions = pd.DataFrame({"date": test["date"].to_numpy(),
                                model: clip_predictions(context.cfg,
                                                        test["regional"].to_numpy(np.float32))})
    info = {"fit_seconds": round(seconds, 3)}
    stamp = baseline_stamp(context.cfg, model)
    if lineage:
        stamp["model"] = lineage
    record = partitions.write_partition(context.store, layout.baseline_predictions(model),
                                        gauge_id, predictions, stamp, info)
    return WorkResult({layout.baseline_predictions(model): {**record, **info}})


def train_catchment_wise(context: Context, state: dict, gauge_id: str) -> WorkResult:
    """Train one site-specific LSTM from scratch and write its test-period predictions."""
    started = time.monotonic()
    site_cfg = catchment_wise_config(context.cfg)
    store = context.store
    folder = layout.baseline_checkpoints(MODEL, gauge_id)
    trainer = Trainer(store, store, site_cfg, {"train": [gauge_id], "out_of_training": []},
                      device="cpu", quiet=True, checkpoint_folder=folder)
    trained = trainer.train(final_key=f"{folder}/final.pt")
    _drop_epoch_checkpoints(store, folder)
    return predict_test_period(context, MODEL, trained, site_cfg, gauge_id,
                               time.monotonic() - started)


def finetune_config(cfg: Config) -> Config:
    b = cfg.baselines
    return _site_config(cfg, epochs=b.finetune_epochs, learning_rate=b.finetune_learning_rate,
                        patience=b.finetune_patience)


def train_finetuned(context: Context, state: dict, gauge_id: str) -> WorkResult:
    """Fine-tune the run's regional LSTM on one catchment and write its predictions."""
    started = time.monotonic()
    store = context.store
    site_cfg = finetune_config(context.cfg)
    folder = layout.baseline_checkpoints(FINETUNED, gauge_id)
    regional = load_trained(store, "cpu")
    trainer = Trainer(store, store, site_cfg, {"train": [gauge_id], "out_of_training": []},
                      device="cpu", quiet=True, init=regional, checkpoint_folder=folder)
    trained = trainer.train(final_key=f"{folder}/final.pt")
    _drop_epoch_checkpoints(store, folder)
    return predict_test_period(context, FINETUNED, trained, site_cfg, gauge_id,
                               time.monotonic() - started, lineage=regional.sha256)


def _drop_epoch_checkpoints(store, folder: str) -> None:
    """Per-catchment models keep their final weights only (hundreds of catchments x epochs of
    optimiser state would dwarf the run)."""
    for name in store.listdir(folder):
        if name.startswith("epoch-"):
            store.delete(f"{folder}/{name}")


def finetune_stage(cfg: Config, model_sha: str) -> CatchmentStage:
    return CatchmentStage(FINETUNED, layout.baseline_predictions(FINETUNED), train_finetuned,
                          {**baseline_stamp(cfg, FINETUNED), "model": model_sha},
                          verb="fine-tune")


def catchment_wise_stage(cfg: Config) -> CatchmentStage:
    return CatchmentStage(MODEL, layout.baseline_predictions(MODEL), train_catchment_wise,
                          baseline_stamp(cfg, MODEL), verb="train from scratch")
