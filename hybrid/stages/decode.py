"""Stage 4, decode: one decoder per catchment, fitted on its own encoded training days.

A plain function of (context, catchment) that reads only that catchment's encoded partition, so
it runs the same in a test, in a serial loop, or as a Ray task on a remote node. Its output,
``predictions/gauge_id=<id>/part-0.parquet`` (date, observed, regional, hybrid over the test
period; ``hybrid.store.layout``), marks the catchment as decoded. Scoring those predictions is a
separate step (``hybrid.stages.score``) that the pipeline runs in the same task, so adding a metric
re-scores from the predictions without refitting a single forest.
"""

from __future__ import annotations

import io
import time
from typing import Any

import numpy as np
import pandas as pd

from hybrid.config import Config
from hybrid.decoder.regressors import make_decoder
from hybrid.errors import SkipCatchment
from hybrid.execution.runner import CatchmentStage, Context
from hybrid.stages.score import score_one
from hybrid.store import layout, partitions
from hybrid.store.provenance import config_hash


def decode_stamp(cfg: Config, model_sha: str) -> dict[str, str]:
    return {"stage": "decode", "config": config_hash(cfg.to_dict()), "model": model_sha}


def fit_predict(features: np.ndarray, target: np.ndarray, test_features: np.ndarray,
                cfg: Config, n_jobs: int) -> tuple[np.ndarray, Any, float]:
    """Fit the configured decoder on rows with an observed target; predict the test rows."""
    observed = np.isfinite(target)
    if observed.sum() < 2:
        raise ValueError(f"only {int(observed.sum())} observed training days")
    model = make_decoder(cfg.decoder.name, cfg.decoder.params, n_jobs=n_jobs, seed=cfg.seed)
    started = time.monotonic()
    model.fit(features[observed], target[observed])
    seconds = time.monotonic() - started
    return model.predict(test_features).astype(np.float32), model, seconds


def decode_catchment(context: Context, gauge_id: str, n_jobs: int = 1,
                     node_id: str = "") -> dict[str, Any]:
    """Fit, predict and write one catchment's predictions; returns the partition record."""
    cfg = context.cfg
    store = context.store
    table = partitions.read_partition(store, layout.ENCODED, gauge_id).to_pandas()
    hidden = [c for c in table.columns if c.startswith("h_")]
    features = table[layout.feature_columns(len(hidden))].to_numpy(np.float32)
    fit_splits = ["train", "validation"] if cfg.decoder.fit_period == "train_validation" \
        else ["train"]
    train = table["split"].isin(fit_splits).to_numpy()
    test = (table["split"] == "test").to_numpy()
    if not test.any():
        raise SkipCatchment(gauge_id, "no encoded day in the test period")
    observed = table["observed"].to_numpy(np.float64)
    hybrid, model, fit_seconds = fit_predict(features[train], observed[train], features[test],
                                             cfg, n_jobs)
    predictions = pd.DataFrame({
        "date": table.loc[test, "date"].to_numpy(),
        "observed": observed[test].astype(np.float32),
        "regional": table.loc[test, "regional"].to_numpy(np.float32),
        "hybrid": hybrid,
    })
    if cfg.decoder.keep_models:
        import joblib

        buf = io.BytesIO()
        joblib.dump(model, buf, compress=3)
        store.write_bytes(f"{layout.partition_dir(layout.DECODERS, gauge_id)}/model.joblib",
                          buf.getvalue())
    info = {"n_train": int(np.isfinite(observed[train]).sum()),
            "fit_seconds": round(fit_seconds, 4), "node_id": node_id}
    record = partitions.write_partition(store, layout.PREDICTIONS, gauge_id, predictions,
                                        context.extra["decode_stamp"], info)
    return {**record, **info}


def decode_one(context: Context, state: dict, gauge_id: str) -> dict[str, Any]:
    """The pipeline's unit: decode, then score in the same task (one read, one round trip)."""
    n_jobs = int(context.cfg.resources.decoder_num_cpus)
    record = decode_catchment(context, gauge_id, n_jobs, state.get("node_id", ""))
    scored = score_one(context, state, gauge_id)
    return {"records": {layout.PREDICTIONS: record, **scored["records"]},
            "rows": scored["rows"]}


def decode_stage(cfg: Config, model_sha: str) -> CatchmentStage:
    return CatchmentStage("decode", layout.PREDICTIONS, decode_one,
                          decode_stamp(cfg, model_sha), verb="fit")
