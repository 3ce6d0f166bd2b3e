"""Decoder throughput: the Ray fan-out vs a plain serial loop, on real encoded catchments.

    python benchmarks/bench_decoders.py --catchments 40 --hidden 64 [--nodes 1]

Reuses (or trains) the regional model of ``bench_encoder.py``, encodes every catchment to the
run's store, then fits one decoder per catchment three ways, in the same process:

* serial loop, ``n_jobs=1`` (the baseline) and ``n_jobs=2``;
* the Ray fan-out of ``hybrid decode`` (one task per catchment, ``num_cpus=1``, bounded queue).

It also measures the random-forest settings behind the project's defaults (fit time, pickled
size, NSE) against scikit-learn's own defaults on a few catchments. With ``--nodes 2`` the Ray
fan-out runs on a local two-node cluster (head + one worker, same machine) and reports how the
scheduler spread the tasks.
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import tempfile
import time

import numpy as np
import ray
from _common import machine, model_arguments, trained_run

from hybrid import cluster
from hybrid.decode import decode_catchment, fit_predict
from hybrid.encode import CatchmentEncoder
from hybrid.encoding import encoded_key
from hybrid.metrics import nse
from hybrid.prepare import ATTRIBUTES
from hybrid.storage import open_store


def serial(store, cfg, gauges, in_train, n_jobs):
    for g in gauges:
        decode_catchment(store, cfg, g, g in in_train, n_jobs)


def fan_out(store, cfg, gauges, in_train):
    task = cluster.decoder_task(cfg)
    nodes = []
    for _, frame, error in cluster.bounded_map(
            lambda g: task.remote(store.url, store.storage_options, g, g in in_train, 1),
            gauges, 4, "decode", len(gauges)):
        if error is not None:
            raise error
        nodes.append(frame["node_id"].iloc[0])
    return nodes


def main() -> None:
    parser = argparse.ArgumentParser()
    model_arguments(parser)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--nodes", type=int, default=1, choices=[1, 2])
    args = parser.parse_args()
    cfg, store, trained, gauges = trained_run(args)
    if args.run:  # never overwrite the run's own outputs: decode a scratch copy
        scratch = open_store(tempfile.mkdtemp())
        keys = ["config.yml", "checkpoints/split.json", ATTRIBUTES]
        for key in keys + [encoded_key(g) for g in gauges]:
            scratch.write_bytes(key, store.read_bytes(key))
        store = scratch
    encoder = CatchmentEncoder(store, cfg, trained, "cpu")
    for g in gauges:
        if not store.exists(encoded_key(g)):
            encoder(g)
    in_train = set(trained.split["train"])
    print(machine())

    # --- RF settings: the project's defaults vs scikit-learn's, on 6 catchments
    rows = []
    for params, label in (({"n_estimators": 100, "min_samples_leaf": 5, "max_features": 0.33},
                           "project default"),
                          ({"n_estimators": 100, "min_samples_leaf": 1, "max_features": 1.0},
                           "sklearn default")):
        c = cfg.replace(decoder={"name": "rf", "params": params})
        fits, sizes, scores = [], [], []
        for g in gauges[:6]:
            t = store.read_frame(encoded_key(g))
            h = t[[k for k in t.columns if k.startswith("h_")]].to_numpy(np.float32)
            tr, te = (t.split == "train").to_numpy(), (t.split == "test").to_numpy()
            obs = t.observed.to_numpy(np.float64)
            pred, model, seconds = fit_predict(h[tr], obs[tr], h[te], c, n_jobs=2)
            fits.append(seconds)
            sizes.append(len(pickle.dumps(model)) / 2**20)
            scores.append(nse(obs[te], pred))
        rows.append(label)
        print(f"RF {label} {params}: fit {statistics.median(fits):.1f} s, "
              f"{statistics.median(sizes):.0f} MB pickled, median NSE "
              f"{statistics.median(scores):.3f} (6 catchments, n_jobs=2, "
              f"~{int(tr.sum())} x {h.shape[1]} training rows)")

    # --- throughput: serial baseline and Ray fan-out, same catchments, same process
    def clear():
        for g in gauges:
            store.delete(f"predictions/gauge_id={g}", recursive=True)
            store.delete(f"metrics/gauge_id={g}", recursive=True)

    results = {}
    for label, fn in (("serial n_jobs=1", lambda: serial(store, cfg, gauges, in_train, 1)),
                      ("serial n_jobs=2", lambda: serial(store, cfg, gauges, in_train, 2))):
        times = []
        for _ in range(args.repeats):
            clear()
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
        results[label] = times
    if args.nodes == 2:
        from ray.cluster_utils import Cluster

        local = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
        local.add_node(num_cpus=1)
        ray.init(address=local.address)
    else:
        ray.init(address="local", num_cpus=2, include_dashboard=False)
    times, spread = [], {}
    for _ in range(args.repeats):
        clear()
        started = time.perf_counter()
        nodes = fan_out(store, cfg, gauges, in_train)
        times.append(time.perf_counter() - started)
        spread = {n[:8]: nodes.count(n) for n in sorted(set(nodes))}
    results[f"ray fan-out ({args.nodes} node(s), num_cpus=1 per task)"] = times
    base = statistics.median(results["serial n_jobs=1"])
    for label, ts in results.items():
        med = statistics.median(ts)
        print(f"{label}: {len(gauges) / med * 60:.1f} catchments/min (median {med:.1f} s of "
              f"{[round(t, 1) for t in ts]}), {base / med:.2f}x the serial n_jobs=1 loop")
    print(f"tasks per node in the last fan-out: {spread}")


if __name__ == "__main__":
    main()
