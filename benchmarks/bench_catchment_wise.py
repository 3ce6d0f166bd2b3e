"""Cost of the hybrid vs the paper's catchment-wise strategy (one LSTM per catchment).

    python benchmarks/bench_catchment_wise.py --run /work/runs/caravan-421-h64 --catchments 4

Reads a finished ``hybrid run`` (its catchment store, config, ``timings.json`` and summary), then
trains one LSTM from scratch for each of N of its catchments, with the run's own settings
(hidden size, seq_length, predict_last_n, learning rate; every training window of that catchment
per epoch, early stopping on its validation period), and scores it on the test period.

Hybrid cost per catchment = (pretrain + encode + decode wall time) / catchments in the run.
Catchment-wise cost per catchment = the median training time measured here.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import pandas as pd
import torch
from _common import machine

from hybrid.data.catalog import load_attributes, load_catchment
from hybrid.encoder.features import encode_catchment
from hybrid.encoder.trainer import Trainer
from hybrid.evaluation.metrics import nse
from hybrid.store.layout import SUMMARY
from hybrid.store.runs import load_run_config
from hybrid.store.storage import open_store


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", required=True, help="folder (or URL) of a finished run")
    parser.add_argument("--catchments", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run = open_store(args.run)
    cfg = load_run_config(run)
    timings = run.read_json("timings.json")
    summary = run.read_frame(SUMMARY)
    n_run = summary.gauge_id.nunique()
    hybrid_total = sum(timings[s]["seconds"] for s in ("pretrain", "encode", "decode"))
    hybrid_per = hybrid_total / n_run

    gauges = sorted(summary.gauge_id.unique())
    picks = [gauges[i] for i in np.linspace(0, len(gauges) - 1, args.catchments).astype(int)]
    site_cfg = cfg.replace(epochs=args.epochs, n_train_basins=1, max_train_minutes=None,
                           max_train_samples_per_epoch=None, patience=4)
    attributes = load_attributes(run)
    out = open_store(tempfile.mkdtemp())
    rows = []
    for g in picks:
        started = time.perf_counter()
        trained = Trainer(run, out.child(g), site_cfg, {"train": [g], "out_of_training": []},
                          device="cpu", quiet=True).train()
        seconds = time.perf_counter() - started
        frame = load_catchment(run, g)
        table = encode_catchment(trained, site_cfg, g, frame,
                                 attributes.loc[g, cfg.static_attributes].to_numpy()).to_pandas()
        test = table[table.split == "test"]
        score = nse(test.observed.to_numpy(float), test.regional.to_numpy(float))
        ref = summary[summary.gauge_id == g].set_index("model")["nse"]
        rows.append({"gauge_id": g, "seconds": seconds, "epochs": len(trained.history),
                     "nse_catchment_wise": score, "nse_hybrid": ref.get("hybrid"),
                     "nse_regional": ref.get("regional")})
        print(f"{g}: {seconds:.0f} s, {len(trained.history)} epochs, NSE catchment-wise "
              f"{score:.3f} vs hybrid {ref.get('hybrid'):.3f}", flush=True)
    table = pd.DataFrame(rows)
    per = statistics.median(table.seconds)
    print(machine())
    print(f"hybrid: {hybrid_total:.0f} s for {n_run} catchments (pretrain "
          f"{timings['pretrain']['seconds']:.0f} s, encode {timings['encode']['seconds']:.0f} s, "
          f"decode {timings['decode']['seconds']:.0f} s) = {hybrid_per:.1f} s per catchment")
    print(f"catchment-wise LSTM (hidden {cfg.hidden_size}, up to {args.epochs} epochs, early "
          f"stopping): median {per:.0f} s per catchment over {len(table)} catchments "
          f"({[round(s) for s in table.seconds]})")
    print(f"hybrid is {per / hybrid_per:.1f}x cheaper per catchment; median NSE on these: "
          f"catchment-wise {table.nse_catchment_wise.median():.3f}, hybrid "
          f"{table.nse_hybrid.median():.3f}, regional {table.nse_regional.median():.3f}")


if __name__ == "__main__":
    main()
