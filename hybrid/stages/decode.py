"""Stage 4, decode: one decoder per catchment, fitted on its own encoded training days.

The unit of work reads only that catchment's encoded partition, so it runs the same in a test,
in a serial loop, or as a Ray task on a remote node. Its output,
``predictions/<id>/part-0.parquet`` (date, observed, regional, hybrid over the test
period; ``hybrid.store.layout``), marks the catchment as decoded; the same task then scores it
(``hybrid.evaluation.scoring``: one read, one round trip). Catchments decoded by an earlier
command are re-scored only when their metrics are missing or stale, and the summary is
rewritten from every catchment of the run.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hybrid.config import Config
from hybrid.data.catalog import catchment_split, encoded_catchments
from hybrid.decoder.fit import fit_predict, save_decoder
from hybrid.encoder.checkpoints import model_sha
from hybrid.errors import SkipCatchment
from hybrid.evaluation.scoring import clip_predictions, score_catchment, score_stamp, scoring_stage
from hybrid.evaluation.summary import failed_catchments, summarise_run
from hybrid.execution.context import Context, WorkResult
from hybrid.execution.runner import CatchmentStage, StageOutcome, run_stage
from hybrid.execution.session import Session
from hybrid.store import layout, partitions
from hybrid.store.provenance import config_hash


def run(cfg: Config, session: Session | None = None) -> StageOutcome:
    """Fit, predict and score every encoded catchment not yet done; rewrite the summary."""
    session = Session.ensure(cfg, session)
    cfg, store = session.cfg, session.store
    gauges = encoded_catchments(store)
    split = catchment_split(store, cfg)
    sha = model_sha(store)
    context = Context.of(store, cfg, in_training=frozenset(split["train"]),
                         stamps={"decode": decode_stamp(cfg, sha), "score": score_stamp(cfg, sha)})
    decoded = run_stage(decode_stage(cfg, sha), context, gauges, session.executor)
    session.timed("decode", decoded)
    fresh = {g for g in decoded.ran if g in decoded.done}
    # a baseline made in this command changes the scoring of catchments decoded earlier
    changed = [g for name in layout.BASELINE_MODELS if name in session.results
               for g in session.results[name].ran if g not in fresh]
    scored = run_stage(scoring_stage(cfg, sha), context,
                       [g for g in gauges if g in decoded.done], session.executor,
                       known={g: decoded.done[g].records[layout.METRICS] for g in fresh},
                       force=changed)
    session.timed("score", scored)
    session.results.update(decode=decoded, score=scored)
    summary = summarise_run(store, cfg, set(split["train"]), scored, session.results)
    return StageOutcome("decode", failed=failed_catchments(summary), summary=summary)


def decode_stamp(cfg: Config, model_sha: str) -> dict[str, str]:
    return {"stage": "decode", "config": config_hash(cfg.to_dict()), "model": model_sha}


def decode_catchment(context: Context, gauge_id: str, n_jobs: int = 1,
                     node_id: str = "") -> dict:
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
        layout.REGIONAL: clip_predictions(cfg, table.loc[test, layout.REGIONAL]
                                          .to_numpy(np.float32)),
        layout.HYBRID: clip_predictions(cfg, hybrid),
    })
    forest = save_decoder(store, gauge_id, model) if cfg.decoder.keep_models else None
    info = {"n_train": int(np.isfinite(observed[train]).sum()),
            "fit_seconds": round(fit_seconds, 4), "node_id": node_id,
            **({"forest": forest} if forest else {})}
    record = partitions.write_partition(store, layout.PREDICTIONS, gauge_id, predictions,
                                        context.stamps["decode"], info)
    return {**record, **info}


def decode_one(context: Context, state: dict, gauge_id: str) -> WorkResult:
    """The pipeline's unit: decode, then score in the same task (one read, one round trip)."""
    n_jobs = int(context.cfg.resources.decoder_num_cpus)
    node_id = state.get("node_id", "")
    record = decode_catchment(context, gauge_id, n_jobs, node_id)
    scored = score_catchment(context, state, gauge_id)
    return WorkResult({layout.PREDICTIONS: record, **scored.records}, rows=scored.rows,
                      node_id=node_id)


def decode_stage(cfg: Config, model_sha: str) -> CatchmentStage:
    return CatchmentStage("decode", layout.PREDICTIONS, decode_one,
                          decode_stamp(cfg, model_sha), verb="fit")
