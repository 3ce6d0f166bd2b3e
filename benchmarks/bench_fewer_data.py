"""The paper's fewer-data claim: hybrid vs regional LSTM when the encoder is pre-trained on a
fraction of the training catchments, or on half of the training years.

Each variant is a full ``hybrid run`` of ``--config`` (by default the 421 CAMELS-US catchments)
with the same time budget for pre-training (``--minutes``); only the training data shrinks:

* ``--fractions 0.1,0.25,0.5,1.0``: ``n_train_basins`` is that share of the config's training
  pool; the seeded draw is nested (a smaller set is a subset of a larger one), and every other
  catchment is scored as out of training;
* ``--half-years``: all training catchments, the second half of the training period only.

Every variant is scored on all catchments of the config, in and out of training, so the table
says where the forests make up for what the encoder did not see. Writes
``benchmarks/results/fewer_data.md`` and ``fewer_data.png``; runs resume (each variant is a run
id under ``--store``), so an interrupted benchmark continues where it stopped.

    python benchmarks/bench_fewer_data.py --minutes 12 --store /work/runs-fewer
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from benchmarks._common import REPO, RESULTS, machine  # noqa: E402


def variants(cfg, fractions: list[float], half_years: bool) -> dict[str, dict]:
    """Run id -> config changes of every variant."""
    from hybrid.data.catalog import usable_catchments  # noqa: F401 (documents the split's source)

    pool = round(cfg.train_basin_fraction * len(cfg.basins)) if cfg.basins else None
    out: dict[str, dict] = {}
    for fraction in fractions:
        changes = {"n_train_basins": max(1, round(fraction * pool))} if pool else \
            {"train_basin_fraction": cfg.train_basin_fraction * fraction}
        out[f"fewer-basins-{fraction:g}"] = changes
    if half_years:
        start, end = cfg.train_start_date, cfg.train_end_date
        middle = start + (end - start) / 2
        out["fewer-years-half"] = {"train_start_date": dt.date(middle.year, start.month,
                                                               start.day).isoformat()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "caravan_camels_us.yml"))
    parser.add_argument("--fractions", default="0.1,0.25,0.5,1.0")
    parser.add_argument("--half-years", action="store_true")
    parser.add_argument("--minutes", type=float, default=12.0, help="pre-training budget")
    parser.add_argument("--store", required=True, help="where the variants' runs go")
    parser.add_argument("--override", default="{}", help="more config changes, as JSON")
    parser.add_argument("--full-from", help="for fraction 1.0, reuse this trained encoder (a "
                        "model folder trained on the whole pool with the same settings) instead "
                        "of training it again")
    args = parser.parse_args()
    import pandas as pd

    from hybrid.config import load_config
    from hybrid.data.datasets import get_dataset
    from hybrid.stages import run_all

    base = load_config(args.config, {"store": os.path.abspath(args.store),
                                     "max_train_minutes": args.minutes,
                                     **json.loads(args.override)})
    if base.basins is None:  # the pool's size needs the catchment list
        dataset = get_dataset(base.dataset, base.data_dir, **base.dataset_kwargs())
        base = base.replace(basins=dataset.gauge_ids())
    print(machine(), "| load average", os.getloadavg(), flush=True)
    rows = []
    fractions = [float(f) for f in args.fractions.split(",") if f.strip()]
    for run_id, changes in variants(base, fractions, args.half_years).items():
        if run_id == "fewer-basins-1" and args.full_from:
            changes = {"base_run": os.path.abspath(args.full_from)}
        cfg = base.replace(run_id=run_id, **changes)
        outcome = run_all(cfg)
        done = outcome.summary[outcome.summary.status == "done"]
        n_train = int(done.drop_duplicates("gauge_id").in_training.sum())
        for group, part in (("in training", done[done.in_training]),
                            ("out of training", done[~done.in_training]),
                            ("all", done)):
            medians = part.groupby("model")["nse"].median()
            rows.append({"variant": run_id, "trained on": n_train, "group": group,
                         "catchments": part.gauge_id.nunique(),
                         "regional": medians.get("regional"), "hybrid": medians.get("hybrid")})
        print(pd.DataFrame(rows).tail(3).round(3).to_string(index=False), flush=True)
    table = pd.DataFrame(rows)
    write(table, args)


def write(table, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    RESULTS.mkdir(exist_ok=True)
    lines = [f"{machine()}, load average {os.getloadavg()}", "",
             f"`python benchmarks/bench_fewer_data.py {' '.join(sys.argv[1:])}`", "",
             "| variant | trained on | group | catchments | regional | hybrid |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r.variant} | {r._2} | {r.group} | {r.catchments} | {r.regional:.3f} | "
              f"{r.hybrid:.3f} |" for r in table.itertuples()]
    (RESULTS / "fewer_data.md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(7, 4))
    basins = table[table.variant.str.startswith("fewer-basins")]
    for group, style in (("in training", "-"), ("out of training", "--")):
        part = basins[basins.group == group].sort_values("trained on")
        for model, colour in (("regional", "tab:blue"), ("hybrid", "tab:orange")):
            ax.plot(part["trained on"], part[model], style, color=colour, marker="o",
                    label=f"{model}, {group}")
    ax.set_xlabel("training catchments of the encoder")
    ax.set_ylabel("median test NSE")
    ax.legend(fontsize=8)
    fig.savefig(RESULTS / "fewer_data.png", dpi=110, bbox_inches="tight")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
