"""Scoring: predictions -> metric rows, one path for every command that reports skill.

``metric_row`` is the one helper that turns an observed and a simulated series into a row of
every metric of ``hybrid.evaluation.metrics``; the decode and score stages, ``hybrid predict``
and ``hybrid metrics`` all call it, so a metric added there reaches every table. The scoring
unit of a run (``score_catchment``) reads a catchment's predictions (and any baseline's),
writes ``metrics/<id>/part-0.parquet`` and never fits anything: it needs no model,
so a new metric, or a baseline added later, re-scores every catchment in seconds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from hybrid.config import Config
from hybrid.evaluation.metrics import METRICS, compute_all
from hybrid.execution.context import Context, WorkResult
from hybrid.execution.runner import CatchmentStage
from hybrid.store import layout, partitions
from hybrid.store.provenance import config_hash
from hybrid.store.storage import Store

#: changes whenever the set of metrics or of the other columns of a metrics row does, so
#: older metrics partitions are re-scored (from the predictions: nothing is refitted) instead
#: of being read back without the new column
METRICS_VERSION = hashlib.sha256(",".join([*METRICS, *layout.METRIC_INFO_COLUMNS]).encode()
                                 ).hexdigest()[:12]


def metric_row(observed: np.ndarray, simulated: np.ndarray, ids: Mapping[str, Any],
               **columns: Any) -> dict[str, Any]:
    """``{**ids, <every metric>, **columns}`` for one simulated series: ``ids`` name it
    (gauge id, model, in or out of training), ``columns`` describe it (counts, timing)."""
    metrics = compute_all(np.asarray(observed, np.float64), np.asarray(simulated, np.float64))
    return {**ids, **metrics, **columns}


def clip_predictions(cfg: Config, values: np.ndarray) -> np.ndarray:
    """``values`` with negatives set to zero when ``clip_targets_to_zero`` is on (NaN stays
    NaN: a day without a prediction is not a zero-flow day)."""
    values = np.asarray(values)
    if not cfg.clip_targets_to_zero:
        return values
    return np.where(values < 0, np.zeros((), values.dtype), values)


def score_stamp(cfg: Config, model_sha: str) -> dict[str, str]:
    return {"stage": "score", "config": config_hash(cfg.to_dict()), "model": model_sha,
            "metrics": METRICS_VERSION}


def enabled_baselines(cfg: Config) -> list[str]:
    flags = {layout.CATCHMENT_WISE: cfg.baselines.catchment_wise,
             layout.FINETUNED: cfg.baselines.finetune}
    return [m for m in layout.BASELINE_MODELS if flags[m]]


def model_predictions(store: Store, cfg: Config, gauge_id: str
                      ) -> tuple[pd.DataFrame, dict[str, dict]]:
    """(date, observed, one column per model), and per model what its partition recorded."""
    table = partitions.read_partition(store, layout.PREDICTIONS, gauge_id)
    frame, info = table.to_pandas(), {layout.HYBRID: partitions.table_json(table)}
    for model in enabled_baselines(cfg):
        folder = layout.baseline_predictions(model)
        if partitions.locate(store, folder, gauge_id) is None:
            continue
        site = partitions.read_partition(store, folder, gauge_id)
        frame = frame.merge(site.to_pandas()[["date", model]], on="date", how="left")
        info[model] = partitions.table_json(site)
    return frame, info


def score_predictions(predictions: pd.DataFrame, info: Mapping[str, dict], in_training: bool
                      ) -> pd.DataFrame:
    """The metrics rows of one catchment (no gauge_id column: the partition names it)."""
    obs = predictions["observed"].to_numpy(np.float64)
    hybrid = info.get(layout.HYBRID) or {}
    rows = []
    for model in [*layout.CORE_MODELS, *layout.BASELINE_MODELS]:
        if model not in predictions:
            continue
        meta = info.get(model) or {}
        fitted = model != layout.REGIONAL
        rows.append(metric_row(
            obs, predictions[model], {"model": model, "in_training": bool(in_training)},
            n_train=int(meta.get("n_train", hybrid.get("n_train") or 0)),
            n_test=int(np.isfinite(obs).sum()),
            n_negative=int((predictions[model].to_numpy(np.float64) < 0).sum()),
            fit_seconds=float(meta.get("fit_seconds", np.nan)) if fitted else np.nan,
            node_id=str(hybrid.get("node_id", ""))))
    return pd.DataFrame(rows)


def score_catchment(context: Context, state: dict, gauge_id: str) -> WorkResult:
    """Score one catchment's predictions and write its metrics partition."""
    predictions, info = model_predictions(context.store, context.cfg, gauge_id)
    frame = score_predictions(predictions, info, gauge_id in context.in_training)
    record = partitions.write_partition(context.store, layout.METRICS, gauge_id, frame,
                                        context.stamps["score"])
    rows = frame.assign(**{layout.PARTITION_KEY: gauge_id}).to_dict("records")
    return WorkResult({layout.METRICS: record}, rows=rows)


def scoring_stage(cfg: Config, model_sha: str) -> CatchmentStage:
    return CatchmentStage("score", layout.METRICS, score_catchment, score_stamp(cfg, model_sha))
