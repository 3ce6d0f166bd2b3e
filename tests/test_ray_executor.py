"""The Ray edge on CPU, end to end to Parquet on a real S3 endpoint (moto server).

prepare -> pretrain (on an encoder host actor) -> encode (served by the same host) with the run's
store in a bucket; then a host killed by Ray must rebuild its state from the store in its
``__init__`` / setup; remote project errors come back as themselves, one line; and what the
executor refuses before any work: a local store on a cluster the run joins, and a GPU that
never comes.
"""

from __future__ import annotations

import pyarrow as pa
import pytest

from hybrid.errors import ConfigError, HybridError, SkipCatchment, StoreError
from hybrid.execution import ray_executor as cluster
from hybrid.execution.context import Context
from hybrid.execution.session import Session
from hybrid.stages import encode, prepare, pretrain, run_all
from hybrid.stages.encode import encode_one, setup_encoder
from hybrid.store import layout, partitions
from hybrid.store.runs import read_timings, run_store

pytestmark = pytest.mark.slow


def test_encoder_host_pretrains_and_encodes_to_s3(ray_local, s3_bucket, tiny_config) -> None:
    url, options = s3_bucket
    cfg = tiny_config(url, options, epochs=1, hidden_size=8, seq_length=30,
                      max_train_samples_per_epoch=256, encoder="streaming",
                      resources={"executor": "ray", "encoder_num_cpus": 1,
                                 "encode_in_flight": 2})
    session = Session.open(cfg)
    try:
        prepare.run(cfg, session)
        store = run_store(cfg)
        assert store.uri().startswith("s3://")
        gauges = sorted(partitions.read_manifest(store, layout.CATCHMENTS)["catchments"])
        info = pretrain.run(cfg, session).details
        assert info["device"] == "cpu" and info["best_epoch"] == 1
        assert store.exists(layout.FINAL) and store.exists("checkpoints/epoch-001.pt")
        assert pretrain.run(cfg, session).details == {}  # done: no second training
        encode.run(cfg, session)
        result = session.results["encode"]
    finally:
        session.close()
    store.invalidate()
    assert sorted(partitions.present_partitions(store, layout.ENCODED)) == gauges
    assert sorted(result.done) == gauges and result.skipped == {}
    table = store.read_table(layout.partition_key(layout.ENCODED, gauges[0]))
    assert table.column_names == ["gauge_id", "date", "split", "observed", "regional",
                                  *layout.feature_columns(8)]
    assert table.schema.field("h_7").type == pa.float32()
    assert set(table.column("split").to_pylist()) == {"train", "validation", "test"}

    timings = read_timings(store)
    assert timings["pretrain"]["node_id"] == info["node_id"]
    assert timings["pretrain"]["device"] == "cpu"
    assert timings["encode"]["node_ids"] == [info["node_id"]]  # the host that pre-trained
    assert timings["encode"]["catchments"] == len(gauges)

    # a host that Ray restarts (node loss) runs __init__ and setup again: from the bucket
    final_before = store.read_bytes(layout.FINAL)
    executor = cluster.RayExecutor(cfg, store)
    try:
        context = Context.of(store, cfg)
        results = list(executor.map(encode_one, setup_encoder, context, gauges[1:2], "encoder"))
        assert results[0][2] is None
        host = executor.host(executor.resources("encoder"))
        ray_local.kill(host, no_restart=False)
        again = list(executor.map(encode_one, setup_encoder, context, gauges[2:3], "encoder"))
        assert again[0][2] is None, again
        assert again[0][1].records[layout.ENCODED]["rows"] == store.read_table(
            layout.partition_key(layout.ENCODED, gauges[2])).num_rows
    finally:
        executor.close()
    assert store.read_bytes(layout.FINAL) == final_before  # nothing retrained


def _raise_config_error(context, state, item):
    raise ConfigError(f"decoder.params: bad value for {item}")


def _skip(context, state, item):
    raise SkipCatchment(item, "no data in the test period")


def test_remote_project_errors_come_back_as_themselves(ray_local, tiny_config, tmp_path) -> None:
    import sys

    # the workers cannot import this test module: ship its functions by value
    ray_local.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cfg = tiny_config(str(tmp_path / "s"), resources={"executor": "ray"})
    executor = cluster.RayExecutor(cfg, run_store(cfg))
    context = Context.of(run_store(cfg), cfg)
    [(item, result, error)] = list(executor.map(_raise_config_error, None, context, ["g1"],
                                                "worker"))
    assert isinstance(error, ConfigError) and str(error) == "decoder.params: bad value for g1"
    [(item, result, error)] = list(executor.map(_skip, None, context, ["g2"], "worker"))
    assert isinstance(error, SkipCatchment) and error.reason == "no data in the test period"
    with pytest.raises(ConfigError, match="^decoder.params: bad value for x$"):
        executor.call(lambda c: _raise_config_error(c, {}, "x"), context, "worker")
    executor.close()


def test_results_come_back_when_more_are_queued_than_the_wait_window(ray_local, monkeypatch
                                                                     ) -> None:
    """The driver looks for finished calls among the oldest few only; every call still comes
    back once, with its own result, however many are queued behind the window."""
    import ray

    from hybrid.execution import ray_executor as cluster

    monkeypatch.setattr(cluster, "WAIT_WINDOW", 3)
    square = ray.remote(lambda x: int(x) ** 2)
    items = [str(i) for i in range(25)]
    got = {item: result for item, result, error in
           cluster.bounded(lambda item: square.remote(item), items, limit=len(items))
           if error is None}
    assert got == {str(i): i * i for i in range(25)}


def test_a_local_store_is_refused_when_the_run_joins_a_cluster(ray_local, tiny_config, tmp_path,
                                                               monkeypatch, assert_one_line
                                                               ) -> None:
    """On a launcher cluster only the CPU-less head is up when the job starts: one node, as
    here. A local store must be refused then, not once the workers it cannot reach appear."""
    assert len(cluster.alive_nodes()) == 1
    store = tmp_path / "store"
    joined = tiny_config(str(store), resources={"executor": "ray", "address": "auto"})
    with pytest.raises(StoreError) as excinfo:
        run_all(joined)
    assert_one_line(str(excinfo.value), run_store(joined).uri(), "resources.address: auto",
                    "use an s3:// store", "resources.shared_filesystem: true")
    assert not store.exists()  # refused before anything was written

    # RAY_ADDRESS, which `ray job submit` sets for the driver, joins a cluster the same way
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    submitted = tiny_config(str(store), resources={"executor": "ray"})
    with pytest.raises(StoreError) as excinfo:
        cluster.RayExecutor(submitted, run_store(submitted))
    assert_one_line(str(excinfo.value), run_store(submitted).uri(), "RAY_ADDRESS=127.0.0.1:6379")

    # vouching for a shared filesystem lets it through
    shared = tiny_config(str(store), resources={"executor": "ray", "address": "auto",
                                                "shared_filesystem": True})
    cluster.RayExecutor(shared, run_store(shared)).close()
    # and a private local instance (no address) is one node: its disk is the store's
    monkeypatch.delenv("RAY_ADDRESS")
    cluster.RayExecutor(submitted, run_store(submitted)).close()


def _host_actors_not_dead(ray) -> list[str]:
    from ray._private.state import actors  # the GCS's actor table (no dashboard here)

    return [a["ActorID"] for a in actors().values()
            if a.get("ActorClassName", "").endswith("Host") and a.get("State") != "DEAD"]


def test_a_gpu_that_never_comes_stops_the_run_after_gpu_wait_minutes(ray_local, tiny_config,
                                                                      tmp_path, assert_one_line
                                                                      ) -> None:
    """A GPU node that never joins (zero GPU quota on a new account): the encoder actor used to
    wait forever. Here the cluster has no GPU and none can be added."""
    import threading

    if ray_local.cluster_resources().get("GPU", 0):
        pytest.skip("the local Ray instance has a GPU")
    cfg = tiny_config(str(tmp_path / "s"), resources={
        "executor": "ray", "encoder_num_gpus": 1, "encoder_num_cpus": 1,
        "gpu_wait_minutes": 0.05})
    executor = cluster.RayExecutor(cfg, run_store(cfg))
    context = Context.of(run_store(cfg), cfg)
    outcome: list[BaseException | None] = []

    def pretrain() -> None:
        try:
            executor.call(lambda c: "trained", context, "encoder")
            outcome.append(None)
        except BaseException as err:  # noqa: BLE001 - handed to the test thread
            outcome.append(err)

    # a guard against the old behaviour, an endless wait, not a measure of time
    waiting = threading.Thread(target=pretrain, daemon=True)
    waiting.start()
    waiting.join(timeout=300)
    assert outcome, "the encoder still waits for a GPU"
    (error,) = outcome
    assert isinstance(error, HybridError), repr(error)
    assert_one_line(str(error), "resources.gpu_wait_minutes (0.05 min)",
                    "resources.encoder_num_gpus: 0")
    # the waiting actor is gone, so no autoscaler would keep launching GPU nodes for it
    assert not _host_actors_not_dead(ray_local)
    executor.close()
