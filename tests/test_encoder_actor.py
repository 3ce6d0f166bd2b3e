"""The Ray actor path on CPU, end to end to Parquet on a real S3 endpoint (moto server).

prepare -> pretrain (in the EncoderActor) -> encode (requests to the actor) with the run's store in
a bucket, then a fresh actor that must load the checkpoint from the store in ``__init__``.
"""

from __future__ import annotations

import pyarrow as pa
import pytest
from conftest import tiny_config

from hybrid import cluster
from hybrid.checkpoints import FINAL
from hybrid.encoding import MANIFEST, encoded_key, feature_columns
from hybrid.pipeline import TIMINGS, stage_encode, stage_prepare, stage_pretrain
from hybrid.runs import run_store

pytestmark = pytest.mark.slow


def test_actor_pretrains_and_encodes_to_s3(ray_local, s3_bucket) -> None:
    url, options = s3_bucket
    cfg = tiny_config(url, options, epochs=1, hidden_size=8, seq_length=30,
                      max_train_samples_per_epoch=256, encoder="streaming",
                      resources={"encoder_num_cpus": 1, "encode_in_flight": 2})
    stage_prepare(cfg)
    store = run_store(cfg)
    assert store.uri().startswith("s3://")
    gauges = sorted(store.read_json("catchments/_manifest.json")["catchments"])

    info = stage_pretrain(cfg)
    assert info["device"] == "cpu" and info["best_epoch"] == 1
    assert store.exists(FINAL) and store.exists("checkpoints/epoch-001.pt")
    assert stage_pretrain(cfg) == {}  # done: no second training

    manifest = stage_encode(cfg)
    store.invalidate()
    assert store.partitions("encoded") == gauges
    assert manifest["catchments"] == gauges and manifest["skipped"] == {}
    assert store.read_json(MANIFEST) == manifest
    table = store.read_table(encoded_key(gauges[0]))
    assert table.column_names == ["date", "split", "observed", "regional",
                                  *feature_columns(8)]
    assert table.schema.field("h_7").type == pa.float32()
    assert set(table.column("split").to_pylist()) == {"train", "validation", "test"}

    timings = store.read_json(TIMINGS)
    assert timings["pretrain"]["node_id"] == info["node_id"]
    assert timings["pretrain"]["device"] == "cpu"
    assert timings["encode"]["node_ids"] == [info["node_id"]]  # one node: the local one
    assert timings["encode"]["catchments"] == len(gauges)

    # a restarted actor: __init__ reads the checkpoint from the bucket, no retraining
    epochs_before = store.listdir("checkpoints")
    final_before = store.read_bytes(FINAL)
    actor = cluster.start_encoder(cfg, store)
    try:
        restarted = ray_local.get(actor.info.remote())
        assert restarted["device"] == "cpu" and restarted["node_id"] == info["node_id"]
        result = ray_local.get(actor.encode.remote(gauges[1]))
        assert result["status"] == "done" and result["gauge_id"] == gauges[1]
        assert result["rows"] == store.read_table(encoded_key(gauges[1])).num_rows
        # and when Ray itself restarts the process (node loss), __init__ runs again
        ray_local.kill(actor, no_restart=False)
        again = ray_local.get(actor.encode.remote(gauges[2]), timeout=60)
        assert again["status"] == "done" and again["gauge_id"] == gauges[2]
    finally:
        ray_local.kill(actor)
    store.invalidate()
    assert store.listdir("checkpoints") == epochs_before
    assert store.read_bytes(FINAL) == final_before
