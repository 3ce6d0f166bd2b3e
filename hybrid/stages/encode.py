"""Stage 3, encode: every catchment's days as the trained LSTM's hidden states, to Parquet.

The unit of work is one catchment: read its canonical partition, run the encoder
(``hybrid.encoder.features``), write ``encoded/gauge_id=<id>/part-0.parquet``. Each worker loads the
model once (``setup``), so on Ray it is an actor (on the GPU node when there is one) and locally
a plain loop. Partitions carry the checkpoint's sha256: features from another model are never
mistaken for this one's.
"""

from __future__ import annotations

import time

from hybrid.config import Config
from hybrid.encoder.checkpoints import TrainedModel, load_trained
from hybrid.encoder.features import encode_catchment
from hybrid.encoder.trainer import pick_device
from hybrid.execution.runner import CatchmentStage, Context
from hybrid.stages.prepare import load_attributes, load_catchment
from hybrid.store import layout, partitions
from hybrid.store.provenance import config_hash


def encode_stamp(cfg: Config, model_sha: str) -> dict[str, str]:
    return {"stage": "encode", "config": config_hash(cfg.to_dict()), "model": model_sha}


def setup_encoder(context: Context, trained: TrainedModel | None = None) -> dict:
    """Per-worker state: the model on this worker's device and the attribute table."""
    cfg = context.cfg
    device = pick_device(cfg.device)
    trained = trained or load_trained(context.store, device)
    trained.scaler.check_inputs(cfg.dynamic_inputs, cfg.static_attributes)
    return {"trained": trained, "device": device,
            "attributes": load_attributes(context.store),
            "stamp": encode_stamp(cfg, trained.sha256)}


def encode_one(context: Context, state: dict, gauge_id: str) -> dict:
    started = time.monotonic()
    cfg, trained = context.cfg, state["trained"]
    frame = load_catchment(context.store, gauge_id)
    static = state["attributes"].loc[gauge_id, trained.scaler.static_attributes].to_numpy()
    table = encode_catchment(trained, cfg, gauge_id, frame, static, device=state["device"])
    record = partitions.write_partition(context.store, layout.ENCODED, gauge_id, table,
                                        state["stamp"])
    return {"records": {layout.ENCODED: record}, "seconds": time.monotonic() - started,
            "node_id": state.get("node_id", "")}


def encode_stage(cfg: Config, model_sha: str) -> CatchmentStage:
    """Encoding fans out like the decoders: each worker loads the checkpoint once (a few hundred
    kB) and streams its catchments; BENCHMARKS.md compares this with serving every catchment
    from the one encoder actor."""
    return CatchmentStage("encode", layout.ENCODED, encode_one, encode_stamp(cfg, model_sha),
                          setup=setup_encoder, role="worker")
