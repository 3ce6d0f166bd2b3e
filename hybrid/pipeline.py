"""The stages as the CLI and ``jobs/`` call them: config in, outputs in the run folder.

Each ``stage_*`` opens the run (writing or checking its resolved config) and skips work whose
output already exists, so ``hybrid run`` is the stages in order and a rerun resumes.
"""

from __future__ import annotations

import time

import ray

from hybrid import cluster
from hybrid.checkpoints import FINAL
from hybrid.config import Config
from hybrid.decode import BASELINE_KEY, METRICS, failure_rows
from hybrid.encode import write_encoded_manifest
from hybrid.encoding import MANIFEST as ENCODED_MANIFEST
from hybrid.errors import StoreError
from hybrid.prepare import MANIFEST as CATCHMENT_MANIFEST
from hybrid.prepare import prepare
from hybrid.progress import log
from hybrid.runs import TIMINGS, open_run, record_time, run_store
from hybrid.storage import Store
from hybrid.summary import headline, write_summary
from hybrid.training import catchment_split


def stage_prepare(cfg: Config) -> dict:
    store = open_run(cfg)
    started = time.monotonic()
    manifest = prepare(cfg, store)
    if not store.exists(TIMINGS) or "prepare" not in store.read_json(TIMINGS):
        record_time(store, "prepare", time.monotonic() - started)
    log(f"prepare: catchment store at {store.uri('catchments')}")
    return manifest


def _require(store: Store, key: str, command: str) -> None:
    if not store.exists(key):
        raise StoreError(f"{store.uri(key)} not found: run `hybrid {command}` first")


def _start(cfg: Config) -> Store:
    store = open_run(cfg)
    _require(store, CATCHMENT_MANIFEST, "prepare")
    cluster.connect(cfg)
    cluster.check_store_reachable(cfg, store)
    return store


def stage_pretrain(cfg: Config, actor=None) -> dict:
    store = _start(cfg)
    if store.exists(FINAL):
        log(f"pretrain: already done ({store.uri(FINAL)})")
        return {}
    actor = actor or cluster.start_encoder(cfg, store)
    started = time.monotonic()
    info = ray.get(actor.pretrain.remote())
    record_time(store, "pretrain", time.monotonic() - started, node_id=info["node_id"],
                 device=info["device"], gpu=info["gpu"])
    log(f"pretrain: done on node {info['node_id'][:12]} ({info['device']}) "
        f"in {info['seconds']:.0f}s")
    return info


def stage_encode(cfg: Config, actor=None) -> dict:
    store = _start(cfg)
    _require(store, FINAL, "pretrain")
    if store.exists(ENCODED_MANIFEST):
        log("encode: already done")
        return store.read_json(ENCODED_MANIFEST)
    gauges = list(store.read_json(CATCHMENT_MANIFEST)["catchments"])
    done = set(store.partitions("encoded"))
    todo = [g for g in gauges if g not in done]
    log(f"encode: {len(todo)} of {len(gauges)} catchments to encode with the "
        f"{cfg.encoder} encoder")
    actor = actor or cluster.start_encoder(cfg, store)
    started = time.monotonic()
    results = [{"gauge_id": g, "status": "done"} for g in sorted(done & set(gauges))]
    nodes = set()
    for _, result, error in cluster.bounded_map(
            lambda g: actor.encode.remote(g), todo, cfg.resources.encode_in_flight,
            "encode", len(todo)):
        if error is not None:
            raise error
        nodes.add(result.get("node_id", ""))
        results.append(result)
        if result["status"] == "skipped":
            log(f"encode: skipping {result['reason']}")
    manifest = write_encoded_manifest(store, cfg, results)
    record_time(store, "encode", time.monotonic() - started, catchments=len(todo),
                 node_ids=sorted(nodes))
    return manifest


def stage_baselines(cfg: Config) -> None:
    """The optional catchment-wise LSTMs, one Ray task per catchment."""
    if not cfg.baselines.catchment_wise:
        return
    store = _start(cfg)
    gauges = store.read_json(ENCODED_MANIFEST)["catchments"]
    limit = cfg.baselines.catchment_wise_max_basins
    gauges = gauges[:limit] if limit is not None else gauges
    done = set(store.partitions(BASELINE_KEY))
    todo = [g for g in gauges if g not in done]
    log(f"baselines: {len(todo)} catchment-wise LSTMs to train ({len(done)} done)")
    if not todo:
        return
    task = cluster.baseline_task(cfg)
    started, seconds = time.monotonic(), []
    for gauge_id, result, error in cluster.bounded_map(
            lambda g: task.remote(store.url, store.storage_options, g), todo,
            cluster.default_in_flight(cfg), "catchment-wise LSTMs", len(todo)):
        if error is not None:
            log(f"baselines: catchment {gauge_id} failed: {type(error).__name__}: {error}")
        else:
            seconds.append(result["seconds"])
    record_time(store, "catchment_wise", time.monotonic() - started, catchments=len(todo),
                task_seconds=float(sum(seconds)))


def stage_decode(cfg: Config):
    store = _start(cfg)
    _require(store, ENCODED_MANIFEST, "encode")
    encoded = store.read_json(ENCODED_MANIFEST)["catchments"]
    in_training = set(catchment_split(store, cfg)["train"])
    done = set(store.partitions(METRICS))
    todo = [g for g in encoded if g not in done]
    log(f"decode: {len(todo)} of {len(encoded)} catchments to fit ({len(done)} already done), "
        f"decoder {cfg.decoder.name}, {cfg.resources.decoder_num_cpus} CPU(s) each")
    task = cluster.decoder_task(cfg)
    failures = []
    started = time.monotonic()
    for gauge_id, _, error in cluster.bounded_map(
            lambda g: task.remote(store.url, store.storage_options, g, g in in_training,
                                  cfg.resources.decoder_num_cpus),
            todo, cluster.default_in_flight(cfg), "decode", len(todo)):
        if error is not None:
            log(f"decode: catchment {gauge_id} failed: {type(error).__name__}: {error}")
            failures.append(failure_rows(gauge_id, gauge_id in in_training, error))
    if todo:
        record_time(store, "decode", time.monotonic() - started, catchments=len(todo),
                     failed=len(failures))
    summary, agg = write_summary(store, failures)
    log(f"decode: summary at {store.uri('metrics/summary.parquet')}\n{headline(agg)}")
    return summary


def stage_report(cfg: Config) -> str:
    from hybrid.report import write_report

    store = open_run(cfg)
    _require(store, "metrics/summary.parquet", "decode")
    return write_report(store, cfg)  # the CLI prints where it is


def stage_run(cfg: Config) -> str:
    """prepare -> pretrain -> encode -> (baselines) -> decode -> report, skipping done work."""
    # and a node-local store on a multi-node cluster is refused before anything is prepared
    cluster.connect(cfg)
    cluster.check_store_reachable(cfg, run_store(cfg))
    stage_prepare(cfg)
    store = _start(cfg)
    actor = None
    if not store.exists(ENCODED_MANIFEST):
        actor = cluster.start_encoder(cfg, store)
        try:
            stage_pretrain(cfg, actor)
            stage_encode(cfg, actor)
        finally:
            ray.kill(actor)  # free its CPUs/GPU for the decoders (or for the next attempt)
    stage_baselines(cfg)
    stage_decode(cfg)
    return stage_report(cfg)
