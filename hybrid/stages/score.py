"""Stage 5, score: predictions -> one metrics row per catchment and model.

Reads ``predictions/`` (regional and hybrid) and any baseline's predictions of the catchment,
and writes ``metrics/gauge_id=<id>/part-0.parquet`` (``hybrid.store.layout``). It is cheap
and needs no model, so a new metric, or a baseline added later, re-scores every catchment in
seconds. The
metrics partitions record which metrics they hold; a run whose code knows more metrics re-scores
them on its next pass.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pandas as pd

from hybrid.config import Config
from hybrid.evaluation.metrics import METRICS, compute_all
from hybrid.execution.runner import CatchmentStage, Context
from hybrid.store import layout, partitions
from hybrid.store.provenance import config_hash

#: changes whenever the set of metrics does, so older metrics partitions are re-scored
METRICS_VERSION = hashlib.sha256(",".join(METRICS).encode()).hexdigest()[:12]
#: baseline models whose predictions join the scoring, in report order
BASELINE_MODELS = ("catchment_wise", "finetuned")


def score_stamp(cfg: Config, model_sha: str) -> dict[str, str]:
    return {"stage": "score", "config": config_hash(cfg.to_dict()), "model": model_sha,
            "metrics": METRICS_VERSION}


def enabled_baselines(cfg: Config) -> list[str]:
    flags = {"catchment_wise": cfg.baselines.catchment_wise,
             "finetuned": cfg.baselines.finetune}
    return [m for m in BASELINE_MODELS if flags[m]]


def model_predictions(context: Context, gauge_id: str) -> tuple[pd.DataFrame, dict[str, dict]]:
    """(date, observed, one column per model), and per model what its partition recorded."""
    store = context.store
    key = layout.partition_key(layout.PREDICTIONS, gauge_id)
    frame = partitions.read_partition(store, layout.PREDICTIONS, gauge_id).to_pandas()
    info = {"hybrid": partitions.read_footer_json(store, key, partitions.INFO_KEY)}
    for model in enabled_baselines(context.cfg):
        folder = layout.baseline_predictions(model)
        other = layout.partition_key(folder, gauge_id)
        if not store.exists(other):
            continue
        site = partitions.read_partition(store, folder, gauge_id).to_pandas()
        frame = frame.merge(site[["date", model]], on="date", how="left")
        info[model] = partitions.read_footer_json(store, other, partitions.INFO_KEY)
    return frame, info


def score_predictions(predictions: pd.DataFrame, info: dict[str, dict], in_training: bool
                      ) -> pd.DataFrame:
    """The metrics rows of one catchment (no gauge_id column: the partition names it)."""
    obs = predictions["observed"].to_numpy(np.float64)
    n_train = (info.get("hybrid") or {}).get("n_train")
    rows = []
    for model in ["regional", "hybrid", *BASELINE_MODELS]:
        if model not in predictions:
            continue
        meta = info.get(model) or {}
        rows.append({"model": model, "in_training": bool(in_training),
                     **compute_all(obs, predictions[model].to_numpy(np.float64)),
                     "n_train": int(meta.get("n_train", n_train or 0)),
                     "n_test": int(np.isfinite(obs).sum()),
                     "fit_seconds": float(meta.get("fit_seconds", np.nan))
                     if model != "regional" else np.nan,
                     "node_id": str((info.get("hybrid") or {}).get("node_id", ""))})
    return pd.DataFrame(rows)


def score_one(context: Context, state: dict, gauge_id: str) -> dict[str, Any]:
    predictions, info = model_predictions(context, gauge_id)
    in_training = gauge_id in context.extra["in_training"]
    frame = score_predictions(predictions, info, in_training)
    record = partitions.write_partition(context.store, layout.METRICS, gauge_id, frame,
                                        context.extra["score_stamp"])
    return {"records": {layout.METRICS: record},
            "rows": frame.assign(**{layout.PARTITION_KEY: gauge_id}).to_dict("records")}


def score_stage(cfg: Config, model_sha: str) -> CatchmentStage:
    return CatchmentStage("score", layout.METRICS, score_one, score_stamp(cfg, model_sha))
