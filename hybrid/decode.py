"""Stage 4: one decoder per catchment, fitted on its own encoded training days.

A plain function of (store, config, catchment) that reads only that catchment's encoded
partition, so it runs the same in a test, in a serial loop, or as a Ray task on a remote node.

Outputs, with deterministic keys so a retried task overwrites rather than duplicates:

* ``predictions/gauge_id=<id>/part-0.parquet``: date, observed, regional, hybrid (test period),
  plus ``catchment_wise`` when that baseline was run.
* ``metrics/gauge_id=<id>/part-0.parquet``: one row per model with every metric of
  ``hybrid.metrics`` and n_train, n_test, fit_seconds, in_training, status.
"""

from __future__ import annotations

import io
import time
from typing import Any

import numpy as np
import pandas as pd

from hybrid.config import Config
from hybrid.decoders import make_decoder
from hybrid.encoding import encoded_key, feature_columns
from hybrid.metrics import compute_all
from hybrid.prepare import partition_key
from hybrid.storage import Store

PREDICTIONS = "predictions"
METRICS = "metrics"
BASELINE_KEY = "baselines/catchment_wise/predictions"


def metrics_key(gauge_id: str) -> str:
    return partition_key(METRICS, gauge_id)


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


def decode_catchment(store: Store, cfg: Config, gauge_id: str, in_training: bool,
                     n_jobs: int = 1, extra: dict[str, Any] | None = None) -> pd.DataFrame:
    """Fit, predict, score and write one catchment; returns its metrics rows."""
    table = store.read_frame(encoded_key(gauge_id))
    hidden = [c for c in table.columns if c.startswith("h_")]
    features = table[feature_columns(len(hidden))].to_numpy(np.float32)
    train = (table["split"] == "train").to_numpy()
    test = (table["split"] == "test").to_numpy()
    if not test.any():
        raise ValueError("no encoded day in the test period")
    observed = table["observed"].to_numpy(np.float64)
    hybrid, model, fit_seconds = fit_predict(features[train], observed[train], features[test],
                                             cfg, n_jobs)
    predictions = pd.DataFrame({
        "date": table.loc[test, "date"].to_numpy(),
        "observed": observed[test].astype(np.float32),
        "regional": table.loc[test, "regional"].to_numpy(np.float32),
        "hybrid": hybrid,
    })
    baseline = partition_key(BASELINE_KEY, gauge_id)
    if cfg.baselines.catchment_wise and store.exists(baseline):
        site = store.read_frame(baseline)
        site_seconds = float(site["train_seconds"].iloc[0]) if len(site) else np.nan
        predictions = predictions.merge(site[["date", "catchment_wise"]], on="date", how="left")
    store.write_table(partition_key(PREDICTIONS, gauge_id), predictions)
    if cfg.decoder.keep_models:
        import joblib

        buf = io.BytesIO()
        joblib.dump(model, buf, compress=3)
        store.write_bytes(f"decoders/gauge_id={gauge_id}/model.joblib", buf.getvalue())
    rows = score_predictions(predictions, gauge_id, in_training)
    seconds = {"hybrid": fit_seconds}
    if "catchment_wise" in predictions:
        seconds["catchment_wise"] = site_seconds
    for row in rows:
        row.update(n_train=int(np.isfinite(observed[train]).sum()),
                   n_test=int(np.isfinite(observed[test]).sum()),
                   fit_seconds=seconds.get(row["model"], np.nan),
                   status="done", error="", **(extra or {}))
    frame = pd.DataFrame(rows)
    store.write_table(metrics_key(gauge_id), frame)  # last: marks the catchment as done
    return frame


def score_predictions(predictions: pd.DataFrame, gauge_id: str, in_training: bool
                      ) -> list[dict]:
    obs = predictions["observed"].to_numpy(np.float64)
    models = [m for m in ("regional", "hybrid", "catchment_wise") if m in predictions]
    return [{"gauge_id": gauge_id, "model": m, "in_training": in_training,
             **compute_all(obs, predictions[m].to_numpy(np.float64))} for m in models]


def failure_rows(gauge_id: str, in_training: bool, error: BaseException | str,
                 extra: dict[str, Any] | None = None) -> pd.DataFrame:
    """What the summary records for a catchment whose decoder could not be fitted."""
    message = str(error).strip().splitlines()[-1] if str(error).strip() else repr(error)
    return pd.DataFrame([{"gauge_id": gauge_id, "model": "hybrid", "in_training": in_training,
                          "status": "failed", "error": f"{type(error).__name__}: {message}"
                          if isinstance(error, BaseException) else message,
                          **(extra or {})}])
