"""Decoder throughput: the Ray fan-out vs a plain serial loop, on real encoded catchments.

    python benchmarks/bench_decoders.py --catchments 40 --hidden 64 [--nodes 1]
    python benchmarks/bench_decoders.py --run RUN_FOLDER --catchments 12 [--nodes 2]

Reuses (or trains and encodes) the regional model of ``bench_encoder.py``, or takes a finished
run's encoded catchments (``--run``), copies them to a scratch store (the run's own outputs stay
untouched), then runs the pipeline's decode stage (``hybrid.stages.decode.decode_stage``: fit,
predict, keep the forest, score) over them three ways, in the same process:

* ``SerialExecutor`` with ``resources.decoder_num_cpus`` 1 (the baseline: the forest's
  ``n_jobs=1``) and 2 (one forest threading over two cores);
* ``hybrid.execution.ray_executor.RayExecutor``: one Ray task per catchment, ``num_cpus=1``,
  bounded queue.

Only the executor differs, so the ratios are the cost or gain of the fan-out itself. Ray is
started before the timing (a cluster outlives one stage), but its worker processes start with
the first pass: the median of three leaves that pass out. With
``--nodes 2`` the Ray fan-out runs on a local two-node cluster (head + one worker, same machine)
and reports how the scheduler spread the tasks. The random-forest settings themselves are
measured by ``bench_rf_pareto.py``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time

import ray
from _common import load, machine, model_arguments, runs, scratch_store, trained_run

from hybrid.execution.context import Context
from hybrid.execution.executors import SerialExecutor
from hybrid.execution.runner import run_stage
from hybrid.stages.decode import decode_stage, decode_stamp
from hybrid.stages.encode import encode_stage
from hybrid.stages.score import score_stamp
from hybrid.store import layout, partitions

#: what a decode pass writes; cleared before every timed pass so none of them resumes
OUTPUTS = (layout.PREDICTIONS, layout.METRICS, layout.DECODERS)


def decode_pass(store, cfg, sha, gauges, in_training, executor) -> dict[str, str]:
    """One timed decode stage over ``gauges``; the node each catchment ran on."""
    for folder in OUTPUTS:
        store.delete(folder, recursive=True)
    context = Context.of(store, cfg, in_training=in_training,
                         stamps={"decode": decode_stamp(cfg, sha), "score": score_stamp(cfg, sha)})
    result = run_stage(decode_stage(cfg, sha), context, gauges, executor)
    if result.failed or result.skipped or len(result.done) != len(gauges):
        raise SystemExit(f"decode pass did not finish every catchment: failed {result.failed}, "
                         f"skipped {result.skipped}")
    return {g: v.records[layout.PREDICTIONS]["node_id"] for g, v in result.done.items()}


def timed_passes(repeats, *args) -> tuple[list[float], dict[str, str]]:
    times, nodes = [], {}
    for _ in range(repeats):
        started = time.perf_counter()
        nodes = decode_pass(*args)
        times.append(time.perf_counter() - started)
    return times, nodes


def with_cpus(cfg, cpus: int, **resources):
    """The same run config with ``cpus`` per decoder task (the forest's ``n_jobs``)."""
    return cfg.replace(resources={**cfg.to_dict()["resources"], "decoder_num_cpus": cpus,
                                  **resources})


def measure(args, cfg, sha, scratch, gauges, in_training) -> None:
    """The three executors over the same scratch catchments, then the table."""
    print(machine())
    print(f"{len(gauges)} catchments, decoder {cfg.decoder.name} {cfg.decoder.params}, "
          f"keep_models {cfg.decoder.keep_models}; scratch store {scratch.uri()}")

    results = {}
    for cpus in (1, 2):
        results[f"serial, n_jobs={cpus}"] = timed_passes(
            args.repeats, scratch, with_cpus(cfg, cpus), sha, gauges, in_training,
            SerialExecutor())
    from hybrid.execution.ray_executor import RayExecutor

    ray_cfg, local = with_cpus(cfg, 1), None
    if args.nodes == 2:
        from ray.cluster_utils import Cluster

        local = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
        local.add_node(num_cpus=1)
        ray.init(address=local.address)
        # both "nodes" are this machine, so the file:// scratch store is truly shared
        ray_cfg = with_cpus(cfg, 1, shared_filesystem=True)
    executor = RayExecutor(ray_cfg, scratch)  # started before timing: a cluster is long-lived
    try:
        cpus = ray.cluster_resources().get("CPU", 0)
        fan_out = f"ray fan-out ({args.nodes} node(s), {cpus:.0f} CPUs, num_cpus=1 per task)"
        results[fan_out] = timed_passes(args.repeats, scratch, ray_cfg, sha, gauges,
                                        in_training, executor)
    finally:
        executor.close()
        ray.shutdown()
        if local is not None:
            local.shutdown()
    base = statistics.median(results["serial, n_jobs=1"][0])
    for label, (times, _) in results.items():
        med = statistics.median(times)
        print(f"{label}: {len(gauges) / med * 60:.1f} catchments/min ({runs(times, 1)}), "
              f"{base / med:.2f}x the serial n_jobs=1 loop")
    nodes = list(results[fan_out][1].values())
    print(f"tasks per node in the last fan-out: "
          f"{ {n[:8]: nodes.count(n) for n in sorted(set(nodes))} }")
    print(f"after the measurement: {load()}")


def main() -> None:
    parser = argparse.ArgumentParser()
    model_arguments(parser)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--nodes", type=int, default=1, choices=[1, 2])
    args = parser.parse_args()
    cfg, store, trained, gauges = trained_run(args, layout.ENCODED if args.run else None)
    sha = trained.sha256
    if not args.run:  # the benchmark's own run: encode what it has not encoded yet
        run_stage(encode_stage(cfg, sha), Context.of(store, cfg), gauges, SerialExecutor())
    encoded = partitions.present_partitions(store, layout.ENCODED)
    gauges = [g for g in gauges if g in encoded]
    scratch = scratch_store(store, [layout.partition_key(layout.ENCODED, g) for g in gauges])
    in_training = frozenset(trained.split["train"])
    try:
        measure(args, cfg, sha, scratch, gauges, in_training)
    finally:
        shutil.rmtree(scratch.root)

if __name__ == "__main__":
    main()
