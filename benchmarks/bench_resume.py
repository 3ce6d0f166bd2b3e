"""How long a resume takes to decide what is done, for 10,000 catchments.

A folder of N catchment partitions (the size of a predictions partition: ten years of days, four
columns) is written to a local folder and to a moto S3 server, with its manifest. Then
``hybrid.store.partitions.verify`` decides what is done three ways:

* with the finished stage's manifest: one recursive listing compared with the recorded sizes
  and versions (mtime / ETag): what every resume does;
* the same, after one partition in a hundred was rewritten with its own bytes (a copy that did
  not keep timestamps): those are read and their content hash compared;
* every partition read and hashed (CRC-32), as a resume would cost if it trusted no version;
* without a manifest (an interrupted stage): every partition is read whole (its hash goes into
  the new manifest) and its footer checked, in parallel threads;
* baseline, in the same process: the bare recursive listing alone.

    python benchmarks/bench_resume.py --catchments 10000 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from benchmarks._common import machine  # noqa: E402
from hybrid.store import layout, partitions  # noqa: E402
from hybrid.store.storage import Store, content_hash  # noqa: E402

FOLDER = layout.PREDICTIONS
STAMP = {"stage": "decode", "config": "bench", "model": "bench"}


def table() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    days = 3653
    return pd.DataFrame({"date": pd.date_range("2004-10-01", periods=days),
                         **{c: rng.random(days).astype(np.float32)
                            for c in ("observed", "regional", "hybrid")}})


def fill(store: Store, n: int) -> list[str]:
    gauges = [f"g_{i:05d}" for i in range(n)]
    frame = table()
    with ThreadPoolExecutor(16) as pool:
        records = dict(zip(gauges, pool.map(
            lambda g: partitions.write_partition(store, FOLDER, g, frame, STAMP), gauges)))
    partitions.write_manifest(store, FOLDER, "decode", STAMP, records)
    return gauges


def median_of(fn, repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), times


def measure(store: Store, n: int, repeats: int) -> None:
    started = time.perf_counter()
    gauges = fill(store, n)
    print(f"  wrote {n} partitions + manifest in {time.perf_counter() - started:.1f} s",
          flush=True)
    manifest = partitions.read_manifest(store, FOLDER)

    def with_manifest():
        verdict = partitions.verify(store, FOLDER, gauges, STAMP, manifest=manifest)
        assert len(verdict.done) == n

    def without_manifest():
        verdict = partitions.verify(store, FOLDER, gauges, STAMP, manifest={})
        assert len(verdict.done) == n

    def listing():
        store.sizes(FOLDER)

    def sizes_only():  # what verify checked before content hashes: recorded sizes alone
        sizes = partitions.present_partitions(store, FOLDER)
        recorded = manifest["catchments"]
        assert all(sizes[g] == recorded[g]["bytes"] for g in gauges)

    def hash_everything():
        keys = [layout.partition_key(FOLDER, g) for g in gauges]
        with ThreadPoolExecutor(partitions.FOOTER_THREADS) as pool:
            digests = list(pool.map(lambda k: content_hash(store.read_bytes(k)), keys))
        assert digests == [manifest["catchments"][g]["hash"] for g in gauges]

    touched = gauges[::100]

    def touch_some():  # rewrite 1 in 100 with its own bytes: new versions, same hashes
        for g in touched:
            key = layout.partition_key(FOLDER, g)
            store.write_bytes(key, store.read_bytes(key))

    def with_manifest_some_touched():
        verdict = partitions.verify(store, FOLDER, gauges, STAMP, manifest=manifest)
        assert len(verdict.done) == n

    base, base_runs = median_of(listing, repeats)
    old, old_runs = median_of(sizes_only, repeats)
    fast, fast_runs = median_of(with_manifest, repeats)
    full, full_runs = median_of(hash_everything, repeats)
    touch_some()
    some, some_runs = median_of(with_manifest_some_touched, repeats)
    deep, deep_runs = median_of(without_manifest, repeats)
    rows = [("bare listing (baseline):", base, base_runs),
            ("sizes only (before hashes):", old, old_runs),
            ("verify with the manifest:", fast, fast_runs),
            (f"the same, {len(touched)} rewritten:", some, some_runs),
            ("read and hash every partition:", full, full_runs),
            ("no manifest (read every file):", deep, deep_runs)]
    for label, value, runs in rows:
        print(f"  {label:<32}{value:7.2f} s  {[round(t, 2) for t in runs]}  "
              f"({value / base:.2f}x the listing, {1e3 * value / n:.3f} ms per catchment)",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catchments", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=["file", "s3"])
    args = parser.parse_args()
    print(machine(), "| load average", os.getloadavg())
    if args.only in (None, "file"):
        with tempfile.TemporaryDirectory() as folder:
            print(f"file:// store, {args.catchments} catchments")
            measure(Store(folder), args.catchments, args.repeats)
    if args.only in (None, "s3"):
        import s3fs
        from moto.server import ThreadedMotoServer

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        options = {"endpoint_url": f"http://{host}:{port}", "key": "k", "secret": "s"}
        s3fs.S3FileSystem(**options).mkdir("bench-resume")
        print(f"s3:// store (moto server on loopback), {args.catchments} catchments")
        try:
            measure(Store("s3://bench-resume/run", options), args.catchments, args.repeats)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
