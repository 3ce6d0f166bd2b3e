"""Stage 3, encode: every catchment's days as the trained LSTM's hidden states, to Parquet.

The unit of work is one catchment: read its canonical partition, run the encoder
(``hybrid.encoder.features``), write ``encoded/<id>/part-0.parquet``. Encoding fans out
like the decoders: each worker loads the checkpoint once (``setup``, a few hundred kB) and
streams its catchments (BENCHMARKS.md compares this with one encoder actor serving them all).
Partitions carry the checkpoint's sha256: features from another model are never mistaken for
this one's.
"""

from __future__ import annotations

import time

from hybrid.config import Config
from hybrid.data.catalog import load_catchment, usable_catchments
from hybrid.encoder.checkpoints import TrainedModel, load_trained, model_sha
from hybrid.encoder.features import encode_catchment, encoder_state
from hybrid.execution.context import Context, WorkResult
from hybrid.execution.runner import CatchmentStage, StageOutcome, run_stage
from hybrid.execution.session import Session
from hybrid.store import layout, partitions
from hybrid.store.provenance import config_hash


def run(cfg: Config, session: Session | None = None) -> StageOutcome:
    session = Session.ensure(cfg, session)
    cfg, store = session.cfg, session.store
    gauges = usable_catchments(store)
    stage = encode_stage(cfg, model_sha(store))
    trained = load_trained(store)  # a damaged final.pt is one line here, not one per catchment
    # the features per day: an ensemble's members side by side (hybrid.encoder.ensemble)
    result = run_stage(stage, Context.of(store, cfg), gauges, session.executor,
                       manifest_extra={"encoder": cfg.encoder,
                                       "hidden_size": trained.hidden_size})
    nodes = sorted({v.node_id for g, v in result.done.items() if g in result.ran})
    session.timed("encode", result, node_ids=nodes)
    session.results["encode"] = result
    return StageOutcome.of(result)


def encode_stamp(cfg: Config, model_sha: str) -> dict[str, str]:
    return {"stage": "encode", "config": config_hash(cfg.to_dict()), "model": model_sha}


def setup_encoder(context: Context, trained: TrainedModel | None = None) -> dict:
    """Per-worker state: the model on this worker's device, the attributes, the stamp."""
    state = encoder_state(context.store, context.cfg, trained)
    return {**state, "stamp": encode_stamp(context.cfg, state["trained"].sha256)}


def encode_one(context: Context, state: dict, gauge_id: str) -> WorkResult:
    started = time.monotonic()
    cfg, trained = context.cfg, state["trained"]
    frame = load_catchment(context.store, gauge_id)
    static = state["attributes"].loc[gauge_id, trained.scaler.static_attributes].to_numpy()
    table = encode_catchment(trained, cfg, gauge_id, frame, static, device=state["device"])
    record = partitions.write_partition(context.store, layout.ENCODED, gauge_id, table,
                                        state["stamp"])
    return WorkResult({layout.ENCODED: record}, seconds=time.monotonic() - started,
                      node_id=state.get("node_id", ""))


def encode_stage(cfg: Config, model_sha: str) -> CatchmentStage:
    return CatchmentStage("encode", layout.ENCODED, encode_one, encode_stamp(cfg, model_sha),
                          setup=setup_encoder, role="worker")
