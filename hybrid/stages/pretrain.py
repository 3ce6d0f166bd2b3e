"""Stage 2, pretrain: the regional LSTM, trained once on the training catchments.

Runs on the executor's "encoder" host (a Ray actor on the GPU node when the cluster has one)
through ``hybrid.encoder.trainer``; a run with ``base_run`` adopts that run's or model folder's
encoder instead. A finished ``checkpoints/final.pt`` is never retrained; an interrupted training
resumes from its newest readable epoch checkpoint.
"""

from __future__ import annotations

import time

from hybrid.config import Config
from hybrid.data.catalog import usable_catchments
from hybrid.encoder import base_run
from hybrid.encoder.checkpoints import drop_damaged_final, heal_history
from hybrid.encoder.device import pick_device
from hybrid.encoder.trainer import train_regional
from hybrid.execution.context import Context
from hybrid.execution.runner import StageOutcome
from hybrid.execution.session import Session
from hybrid.logs import RUN_LOG_ONLY, flush_run_logs, logger
from hybrid.store import layout
from hybrid.store.runs import record_time

log = logger()


def run(cfg: Config, session: Session | None = None) -> StageOutcome:
    session = Session.ensure(cfg, session)
    cfg, store = session.cfg, session.store
    gauges = usable_catchments(store)  # "run `hybrid prepare` first" before any Ray start
    if cfg.base_run:
        return StageOutcome("pretrain", details=base_run.adopt(store, cfg, gauges))
    drop_damaged_final(store)
    if store.exists(layout.FINAL):
        heal_history(store)
        log.info(f"pretrain: already done ({store.uri(layout.FINAL)})")
        return StageOutcome("pretrain")
    started = time.monotonic()
    info, where = session.executor.call(_pretrain, Context.of(store, cfg), "encoder")
    record_time(store, "pretrain", time.monotonic() - started, **info, **where)
    for row in store.read_frame(layout.HISTORY).to_dict("records"):
        log.info(f"pretrain: epoch {row['epoch']} train loss {row['train_loss']:.4f}, "
                 f"validation loss {row['validation_loss']:.4f}, median NSE "
                 f"{row['validation_nse']:.3f}, {row['samples_per_second']:.0f} samples/s",
                 extra=RUN_LOG_ONLY)
    log.info(f"pretrain: done on node {where['node_id'][:12]} ({info['device']}) in "
             f"{time.monotonic() - started:.0f}s, best epoch {info['best_epoch']}")
    flush_run_logs()
    return StageOutcome("pretrain", details={**info, **where})


def _pretrain(context: Context) -> dict:
    """On the encoder host: train (or resume) and say where it ran."""
    import torch

    device = pick_device(context.cfg.device)
    trained = train_regional(context.store, context.cfg, device)
    return {"device": device, "best_epoch": trained.best_epoch,
            "gpu": torch.cuda.get_device_name(0) if device == "cuda" else ""}
