"""The orchestration at 100, 1,000 and 10,000 catchments: a simulated continental run.

A local multi-node Ray cluster (``ray.cluster_utils.Cluster``: a head with no CPU for tasks and
two worker nodes) and a store on a moto S3 server (its own process) run ``hybrid run`` on N
synthetic catchments with short series, a tiny encoder and five-tree forests, so that the run
measures the orchestration, not the science. Reported per N:

* driver CPU time per catchment, for the stages after ``prepare`` (the fan-out, the checks, the
  summary; prepare generates the data on the driver by design and is reported apart);
* the summary's time;
* peak driver memory (max RSS) and peak object store use (sampled every 0.2 s);
* wall time per stage.

    python benchmarks/bench_scale.py --sizes 100 1000 10000

A table is printed and ``benchmarks/results/scale.png`` (log-log) written (``--tag`` names
another pair of result files).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from benchmarks._common import REPO, machine  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto() -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    import urllib.request

    for _ in range(100):
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/")
            return proc, endpoint
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("moto server did not start")


def config(n: int, endpoint: str, bucket: str):
    from hybrid.config import config_from_dict

    return config_from_dict({
        "run_id": f"scale-{n}", "store": f"s3://{bucket}/runs",
        "storage_options": {"endpoint_url": endpoint, "key": "k", "secret": "s"},
        "dataset": "synthetic",
        "dataset_options": {"n_catchments": n, "seed": 3, "start_date": "1996-01-01",
                            "end_date": "1998-12-31"},
        "static_attributes": ["p_mean", "aridity"],
        "train_start_date": "1996-03-01", "train_end_date": "1997-06-30",
        "validation_start_date": "1997-07-01", "validation_end_date": "1997-12-31",
        "test_start_date": "1998-01-01", "test_end_date": "1998-12-31",
        "seq_length": 30, "predict_last_n": 30, "hidden_size": 4, "epochs": 1,
        "batch_size": 64, "max_train_samples_per_epoch": 256, "max_validation_samples": 64,
        "n_train_basins": min(n, 50), "num_threads": 1,
        "decoder": {"name": "rf", "params": {"n_estimators": 5}, "keep_models": False},
        "resources": {"executor": "ray", "encoder_num_gpus": 0, "encoder_num_cpus": 1},
    })


class Sampler(threading.Thread):
    """Peak object store use of the cluster while the run goes on.

    Objects do not consume Ray's ``object_store_memory`` *resource*, so the bytes in use come
    from the raylets' own store statistics (the numbers ``ray memory --stats-only`` prints),
    through Ray's internal API; a sample that fails is skipped and counted.
    """

    def __init__(self, address: str) -> None:
        super().__init__(daemon=True)
        self.address = address
        self.peak = 0.0
        self.samples = 0
        self.failed = 0
        self.stop = threading.Event()

    def run(self) -> None:
        from ray._private.internal_api import get_memory_info_reply, get_state_from_address

        state = get_state_from_address(self.address)
        while not self.stop.is_set():
            try:
                stats = get_memory_info_reply(state, timeout_seconds=5).store_stats
                self.peak = max(self.peak, float(stats.object_store_bytes_used))
                self.samples += 1
            except Exception:  # noqa: BLE001 - a sample lost while the cluster is busy
                self.failed += 1
            time.sleep(0.2)


def measure(n: int, endpoint: str, address: str) -> dict:
    import s3fs

    from hybrid import stages
    from hybrid.stages import decode, prepare

    bucket = f"scale-{n}"
    s3fs.S3FileSystem(endpoint_url=endpoint, key="k", secret="s").mkdir(bucket)
    cfg = config(n, endpoint, bucket)
    summary_seconds = []
    real_build = decode.build_summary

    def timed_build(*args, **kwargs):
        started = time.perf_counter()
        try:
            return real_build(*args, **kwargs)
        finally:
            summary_seconds.append(time.perf_counter() - started)

    decode.build_summary = timed_build
    marks = {}
    real_prepare = prepare.run

    def marked_prepare(*args, **kwargs):
        result = real_prepare(*args, **kwargs)
        marks["after_prepare"] = (time.perf_counter(), _cpu())
        return result

    prepare.run = marked_prepare
    sampler = Sampler(address)
    sampler.start()
    started, cpu0 = time.perf_counter(), _cpu()
    try:
        outcome = stages.run_all(cfg)
    finally:
        sampler.stop.set()
        decode.build_summary = real_build
        prepare.run = real_prepare
    finished, cpu1 = time.perf_counter(), _cpu()
    from hybrid.store.runs import read_timings, run_store

    timings = read_timings(run_store(cfg))
    after_wall, after_cpu = marks["after_prepare"]
    done = int((outcome.summary.drop_duplicates("gauge_id").status == "done").sum())
    return {
        "catchments": n, "done": done, "wall_seconds": finished - started,
        "prepare_driver_cpu_ms_per_catchment": 1e3 * (after_cpu - cpu0) / n,
        "driver_cpu_ms_per_catchment": 1e3 * (cpu1 - after_cpu) / n,
        "driver_wall_after_prepare_s": finished - after_wall,
        "summary_seconds": summary_seconds[-1] if summary_seconds else float("nan"),
        "peak_driver_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_object_store_mb": sampler.peak / 2**20,
        "object_store_samples": sampler.samples, "object_store_samples_failed": sampler.failed,
        "stages": {k: v["seconds"] for k, v in timings.items()},
    }


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def plot(rows: list[dict], tag: str = "") -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["catchments"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for key, label in (("driver_cpu_ms_per_catchment", "driver CPU ms / catchment"),
                       ("summary_seconds", "summary s"),
                       ("peak_driver_rss_mb", "peak driver RSS (MB)"),
                       ("peak_object_store_mb", "peak object store (MB)"),
                       ("wall_seconds", "wall time s")):
        ax.plot(n, [max(r[key], 1e-3) for r in rows], "o-", label=label)
    ax.set(xscale="log", yscale="log", xlabel="catchments",
           title="Orchestration cost vs catchments (local 3-node Ray, moto S3)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    out = RESULTS / f"scale{tag}.png"
    fig.savefig(out, dpi=110, bbox_inches="tight")
    return str(out)


def one_size(args) -> None:
    """A driver of its own per size, so that its peak memory is that size's alone."""
    import ray

    os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"] = "k", "s"
    ray.init(address=args.address)
    print("RESULT " + json.dumps(measure(args.one, args.endpoint, args.address)), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--worker-nodes", type=int, default=2)
    parser.add_argument("--tag", default="", help="suffix of the result files (scale<TAG>.json)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one_size(args)
        return
    from ray.cluster_utils import Cluster

    RESULTS.mkdir(parents=True, exist_ok=True)
    print(machine(), "| load average", os.getloadavg(), flush=True)
    moto, endpoint = start_moto()
    os.environ.setdefault("RAY_worker_niceness", "0")
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "object_store_memory": 300 * 2**20,
        "temp_dir": tempfile.mkdtemp(prefix="hyb-scale-", dir="/tmp")})
    for _ in range(args.worker_nodes):
        cluster.add_node(num_cpus=1, object_store_memory=200 * 2**20)
    rows = []
    try:
        for n in args.sizes:
            child = subprocess.run(
                [sys.executable, __file__, "--one", str(n), "--address", cluster.address,
                 "--endpoint", endpoint], capture_output=True, text=True)
            line = next((x for x in child.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                sys.exit(f"size {n} failed:\n{child.stdout[-3000:]}\n{child.stderr[-3000:]}")
            rows.append(json.loads(line[len("RESULT "):]))
            print(json.dumps(rows[-1]), flush=True)
    finally:
        cluster.shutdown()
        moto.terminate()
    (RESULTS / f"scale{args.tag}.json").write_text(json.dumps(rows, indent=1))
    print("catchments | wall s | driver CPU ms/catchment (after prepare) | prepare ms/catchment |"
          " summary s | peak driver RSS MB | peak object store MB")
    for r in rows:
        print(f"{r['catchments']} | {r['wall_seconds']:.0f} | "
              f"{r['driver_cpu_ms_per_catchment']:.2f} | "
              f"{r['prepare_driver_cpu_ms_per_catchment']:.2f} | {r['summary_seconds']:.2f} | "
              f"{r['peak_driver_rss_mb']:.0f} | {r['peak_object_store_mb']:.0f}")
    print(f"plot: {plot(rows, args.tag)}")


if __name__ == "__main__":
    main()
