"""Skill and cost of the paper's four strategies on the same catchments.

A run with ``base_run`` (a finished 421-catchment run or a model folder) is made over N of the
421 CAMELS-US catchments, drawn by seed across HUC2 regions, with both per-catchment baselines
switched on; every model is then scored on the same catchments and test days:

* ``regional``: the pre-trained LSTM as it is;
* ``hybrid``: the regional LSTM as encoder + one random forest per catchment;
* ``finetuned``: the regional LSTM trained further on each catchment alone;
* ``catchment_wise``: one LSTM per catchment trained from scratch.

Cost per catchment is CPU-seconds: the pre-training's CPU time (recorded per epoch in the
checkpoint's history) shared over the 421 catchments it was trained for, plus what each
strategy spends on the catchment itself (the forest's fit, the fine-tuning, the training from
scratch: one core each), plus encoding for the models that read the encoder.

    python benchmarks/bench_four_models.py --run models/camels-us-s2s-h128 --catchments 40
"""

from __future__ import annotations

import argparse
import csv
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from benchmarks._common import REPO, SHARED_DATA, machine, require_caravan  # noqa: E402

MODELS = ("regional", "hybrid", "finetuned", "catchment_wise")


def stratified(n: int, seed: int = 0) -> list[str]:
    """N catchments drawn by seed, every HUC2 region represented in proportion."""
    with open(SHARED_DATA / "reference_paper_camelsus_421.csv") as f:
        rows = list(csv.DictReader(f))
    rng = np.random.default_rng(seed)
    by_region: dict[str, list[str]] = {}
    for row in rows:
        by_region.setdefault(row["HUC2"], []).append(row["id"])
    picked = []
    for _, ids in sorted(by_region.items()):
        take = max(1, round(n * len(ids) / len(rows)))
        picked += list(rng.choice(sorted(ids), min(take, len(ids)), replace=False))
    if len(picked) > n:  # rounding gave a few too many: drop some at random
        picked = list(rng.choice(picked, n, replace=False))
    return sorted(str(g) for g in picked)  # numpy strings do not go into a YAML config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="finished run folder or models/<name>")
    parser.add_argument("--catchments", type=int, default=40)
    parser.add_argument("--store", default=str(REPO / "runs" / "bench"))
    parser.add_argument("--without-catchment-wise", action="store_true",
                        help="skip the from-scratch LSTMs (they do not depend on the encoder: "
                             "the same catchments give the same models as in an earlier run)")
    args = parser.parse_args()
    from benchmarks.bench_finetune import scratch_config
    from hybrid.encoder.base_run import read_base
    from hybrid.encoder.ensemble import trainings
    from hybrid.stages import run_all
    from hybrid.store import layout
    from hybrid.store.runs import read_timings, run_store

    print(machine(), "| load average", os.getloadavg(), flush=True)
    gauges = stratified(args.catchments)
    cfg = scratch_config(os.path.abspath(args.run), gauges, args.store, {
        "run_id": f"four-models-{len(gauges)}",
        "baselines": {"catchment_wise": not args.without_catchment_wise, "finetune": True}})
    models = [m for m in MODELS if m != "catchment_wise" or not args.without_catchment_wise]
    outcome = run_all(cfg)
    store = run_store(cfg)
    summary = outcome.summary
    done = summary[summary.status == "done"]
    complete = done.groupby("gauge_id").model.nunique()
    same = sorted(complete[complete == len(models)].index)
    done = done[done.gauge_id.isin(same)]
    final, _ = read_base(cfg)
    # an ensemble's pre-training is every member's training (snapshots of one training once)
    pretrain_cpu = sum(h.get("cpu_seconds", 2 * h["seconds"])
                       for history in trainings(final) for h in history)
    trained_for = sum(len(part) for part in final["split"].values())  # the 421, held-out too
    share = pretrain_cpu / trained_for
    timings = read_timings(store)
    encode_cpu = 2 * timings.get("encode", {}).get("seconds", 0) / max(1, len(gauges))
    fits = done.pivot_table(index="gauge_id", columns="model", values="fit_seconds")
    nse = done.pivot_table(index="gauge_id", columns="model", values="nse")
    cost = {
        "regional": share + encode_cpu,
        "hybrid": share + encode_cpu + fits["hybrid"].median(),
        "finetuned": share + fits["finetuned"].median(),
    }
    if "catchment_wise" in models:
        cost["catchment_wise"] = fits["catchment_wise"].median()
    base = cost.get("catchment_wise", float("nan"))
    print(f"\n{len(same)} catchments with all {len(models)} models ({len(gauges)} asked), "
          f"{nse.shape[0]} scored; pre-training {pretrain_cpu / 60:.0f} CPU-min shared by "
          f"{trained_for} catchments = {share:.1f} CPU-s each; encoding {encode_cpu:.2f} CPU-s "
          "each")
    print("model | median test NSE | median KGE-2012 | CPU-s per catchment | catchment-wise / "
          "model")
    kge = done.pivot_table(index="gauge_id", columns="model", values="kge_2012")
    for model in models:
        print(f"{model} | {nse[model].median():.3f} | {kge[model].median():.3f} | "
              f"{cost[model]:.1f} | {base / cost[model]:.1f}x")
    print(f"fine-tuned / hybrid cost: {cost['finetuned'] / cost['hybrid']:.1f}x; "
          f"hybrid better than fine-tuned on {(nse['hybrid'] > nse['finetuned']).sum()} of "
          f"{len(nse)}, than regional on {(nse['hybrid'] > nse['regional']).sum()}"
          + (f"; better than catchment-wise on {(nse['hybrid'] > nse['catchment_wise']).sum()}"
             if "catchment_wise" in models else ""))
    print(f"report: {store.uri(layout.REPORT)}")


if __name__ == "__main__":
    _ = require_caravan()
    main()
