"""The summary dataset: one row per catchment x model, and aggregates over catchments.

``metrics/summary.parquet`` and ``metrics/aggregate.parquet`` are plain Parquet with stable
columns, so DuckDB, pandas, Polars or Ray Data read them without this package.
"""

from __future__ import annotations

import pandas as pd

from hybrid.decode import METRICS
from hybrid.metrics import METRICS as METRIC_FUNCTIONS
from hybrid.prepare import partition_key
from hybrid.storage import Store

SUMMARY = f"{METRICS}/summary.parquet"
AGGREGATE = f"{METRICS}/aggregate.parquet"
MANIFEST = f"{METRICS}/_manifest.json"
HEADLINE = ("nse", "kge_2012", "kge_2009")
AGGREGATE_COLUMNS = ["model", "group", "metric", "n", "median", "mean", "q25", "q75"]


def collect(store: Store, failures: list[pd.DataFrame] | None = None) -> pd.DataFrame:
    """Every finished catchment's metric rows plus this run's failure records."""
    parts = [store.read_frame(partition_key(METRICS, g)) for g in store.partitions(METRICS)]
    done = {g for p in parts for g in p["gauge_id"]}
    parts += [f for f in failures or [] if not set(f["gauge_id"]) & done]
    if not parts:
        return pd.DataFrame(columns=["gauge_id", "model", "in_training", "status"])
    frame = pd.concat(parts, ignore_index=True)
    for name in METRIC_FUNCTIONS:
        if name not in frame:
            frame[name] = float("nan")
    return frame.sort_values(["gauge_id", "model"]).reset_index(drop=True)


def aggregate(summary: pd.DataFrame) -> pd.DataFrame:
    """Median / mean / quartiles per model, for all catchments and per training group."""
    done = summary[summary["status"] == "done"]
    rows = []
    groups = [("all", done), ("in_training", done[done["in_training"]]),
              ("out_of_training", done[~done["in_training"].astype(bool)])]
    for group, part in groups:
        for model, sub in part.groupby("model", sort=True):
            for metric in HEADLINE:
                values = sub[metric].astype(float)
                rows.append({"model": model, "group": group, "metric": metric,
                             "n": int(values.notna().sum()), "median": values.median(),
                             "mean": values.mean(), "q25": values.quantile(0.25),
                             "q75": values.quantile(0.75)})
    # the same columns when nothing finished, so readers of the Parquet file see one schema
    return pd.DataFrame(rows, columns=AGGREGATE_COLUMNS).astype(
        {"model": str, "group": str, "metric": str, "n": "int64", "median": float,
         "mean": float, "q25": float, "q75": float})


def write_summary(store: Store, failures: list[pd.DataFrame] | None = None
                  ) -> tuple[pd.DataFrame, pd.DataFrame]:
    summary = collect(store, failures)
    agg = aggregate(summary)
    store.write_table(SUMMARY, summary)
    store.write_table(AGGREGATE, agg)
    status = summary.drop_duplicates("gauge_id")["status"].value_counts().to_dict()
    store.write_json(MANIFEST, {"stage": METRICS, "catchments": int(summary["gauge_id"].nunique()),
                                "status": status, "summary": SUMMARY, "aggregate": AGGREGATE})
    return summary, agg


def headline(agg: pd.DataFrame) -> str:
    """Median NSE / KGE-2012 per model and group, as lines for logs and the report."""
    if agg.empty:
        return "no finished catchment"
    table = agg[agg.metric.isin(["nse", "kge_2012"])].pivot_table(
        index=["group", "model"], columns="metric", values="median")
    counts = agg[agg.metric == "nse"].set_index(["group", "model"])["n"]
    lines = []
    for (group, model), row in table.iterrows():
        lines.append(f"{group:>15} {model:>15}: median NSE {row.get('nse', float('nan')):.3f}, "
                     f"KGE-2012 {row.get('kge_2012', float('nan')):.3f} "
                     f"(n={counts.get((group, model), 0)})")
    return "\n".join(lines)
