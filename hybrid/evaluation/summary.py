"""The summary dataset: one row per catchment x model, and aggregates over catchments.

``summary/summary.parquet`` holds every catchment the run was asked for: the metrics of the
finished ones, and a ``skipped`` or ``failed`` row (with the stage and the reason) for each one
that was not, so no catchment disappears without a word. ``summary/aggregate.parquet`` has the
median / mean / quartiles per model over the finished ones. Both are plain Parquet with stable
columns and string ids, so DuckDB, pandas, Polars or Ray Data read them without this package.

Rows come from what the decode and score tasks returned in this process; only catchments
finished by an earlier command are read back, in one ``pyarrow.dataset`` read.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from hybrid.config import Config
from hybrid.evaluation.metrics import METRICS as METRIC_FUNCTIONS
from hybrid.evaluation.scoring import enabled_baselines
from hybrid.execution.runner import StageResult
from hybrid.logs import flush_run_logs, logger
from hybrid.store import files, layout, partitions
from hybrid.store.provenance import config_hash, provenance
from hybrid.store.storage import Store, table_bytes

log = logger()

HEADLINE = ("nse", "kge_2012", "kge_2009")
AGGREGATE_COLUMNS = ["model", "group", "metric", "n", "median", "mean", "q25", "q75"]
SUMMARY_COLUMNS = ([layout.PARTITION_KEY, "model", "in_training", *layout.STATUS_COLUMNS,
                    *METRIC_FUNCTIONS, *layout.METRIC_INFO_COLUMNS])
SUMMARY_TYPES = {layout.PARTITION_KEY: pa.string(), "model": pa.string(),
                 "in_training": pa.bool_(), "status": pa.string(), "stage": pa.string(),
                 "error": pa.string(), **{m: pa.float64() for m in METRIC_FUNCTIONS},
                 "n_train": pa.int64(), "n_test": pa.int64(), "n_negative": pa.int64(),
                 "fit_seconds": pa.float64(),
                 "node_id": pa.string()}


def read_metric_rows(store: Store, gauges: list[str]) -> pd.DataFrame:
    """Metrics partitions of ``gauges``, as one table with a text ``gauge_id`` column."""
    if not gauges:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    return partitions.read_folder(store, layout.METRICS, gauges).to_pandas()


def collect(rows: list[dict], earlier: pd.DataFrame, statuses: list[dict]) -> pd.DataFrame:
    """Finished rows (returned now, or read back) plus one row per model not finished."""
    parts = [pd.DataFrame(rows)] if rows else []
    if len(earlier):
        parts.append(earlier)
    if statuses:
        parts.append(pd.DataFrame(statuses))
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    for column in SUMMARY_COLUMNS:
        if column not in frame:
            frame[column] = None
    frame["status"] = frame["status"].fillna("done")
    frame["stage"] = frame["stage"].fillna("")
    frame["error"] = frame["error"].fillna("")
    frame["node_id"] = frame["node_id"].fillna("")
    frame["in_training"] = frame["in_training"].fillna(False).astype(bool)
    for column in ("n_train", "n_test"):
        frame[column] = pd.to_numeric(frame[column]).fillna(0).astype("int64")
    # predicted days below zero; null where nothing was scored (a skipped or failed row)
    frame["n_negative"] = pd.to_numeric(frame["n_negative"]).astype("Int64")
    for column in [*METRIC_FUNCTIONS, "fit_seconds"]:
        frame[column] = pd.to_numeric(frame[column]).astype("float64")
    frame[layout.PARTITION_KEY] = frame[layout.PARTITION_KEY].astype(str)
    frame = frame[SUMMARY_COLUMNS]
    return frame.sort_values([layout.PARTITION_KEY, "model"]).reset_index(drop=True)


def status_rows(gauge_id: str, models: list[str], in_training: bool, status: str, stage: str,
                reason: str) -> list[dict]:
    return [{layout.PARTITION_KEY: gauge_id, "model": m, "in_training": in_training,
             "status": status, "stage": stage, "error": reason} for m in models]


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


def write_summary(store: Store, summary: pd.DataFrame, stamp: dict[str, str]
                  ) -> tuple[pd.DataFrame, pd.DataFrame]:
    agg = aggregate(summary)
    schema = pa.schema([(c, SUMMARY_TYPES[c]) for c in SUMMARY_COLUMNS])
    data = table_bytes(pa.Table.from_pandas(summary, schema=schema, preserve_index=False))
    # each file is compared with what it should hold (and its recorded hash): a damaged one is
    # rewritten with a log line; a rerun with nothing to do writes nothing
    changed = files.write_if_changed(store, layout.SUMMARY, data, "summary")
    changed = files.write_if_changed(store, layout.AGGREGATE, table_bytes(agg), "summary") \
        or changed
    if not changed:
        return summary, agg
    per_catchment = summary.groupby(layout.PARTITION_KEY)["status"].agg(_worst)
    files.update_manifest(store, layout.SUMMARY_DIR, {
        "stage": "summary", "stamp": stamp, "provenance": provenance(),
        "catchments": int(len(per_catchment)),
        "status": {k: int(v) for k, v in per_catchment.value_counts().items()},
        "summary": layout.SUMMARY, "aggregate": layout.AGGREGATE})
    return summary, agg


def _worst(statuses: pd.Series) -> str:
    values = set(statuses)
    for status in ("failed", "skipped"):
        if status in values:
            return status
    return "done"


def headline(agg: pd.DataFrame) -> str:
    """Median NSE / KGE-2012 per model and group, as lines for logs and the report."""
    if agg.empty:
        return "no finished catchment"
    table = agg[agg.metric.isin(["nse", "kge_2012"])].pivot_table(
        index=["group", "model"], columns="metric", values="median")
    counts = agg[agg.metric == "nse"].set_index(["group", "model"])["n"]
    lines = []
    for (group, model), row in table.iterrows():
        lines.append(f"{group:>15} {model:>15}: median NSE {row.get('nse', np.nan):.3f}, "
                     f"KGE-2012 {row.get('kge_2012', np.nan):.3f} "
                     f"(n={counts.get((group, model), 0)})")
    return "\n".join(lines)


def summarise_run(store: Store, cfg: Config, train: set[str], scored: StageResult,
                  results: dict[str, StageResult]) -> pd.DataFrame:
    """The summary after a scoring pass: rows this command's passes returned (the decode pass,
    then the scoring pass, which wins), the rest of ``scored``'s catchments read back."""
    latest: dict[str, list[dict]] = {}
    for result in (results.get("decode"), scored):
        for gauge_id in (result.ran if result else []):
            if gauge_id in result.done and result.done[gauge_id].rows:
                latest[gauge_id] = result.done[gauge_id].rows
    rows = [row for gauge_id in sorted(latest) for row in latest[gauge_id]]
    earlier = read_metric_rows(store, [g for g in scored.done if g not in latest])
    return build_summary(store, cfg, train, rows, earlier, results)


def build_summary(store: Store, cfg: Config, train: set[str], rows: list[dict],
                  earlier: pd.DataFrame, results: dict[str, StageResult]) -> pd.DataFrame:
    """Every catchment of the run, finished or not, into ``summary/``: the first stage that
    skipped or failed a catchment gives its status row."""
    statuses: list[dict] = []
    stopped: set[str] = set()
    stages = [(stage, folder, list(layout.CORE_MODELS)) for stage, folder in (
        ("prepare", layout.CATCHMENTS), ("encode", layout.ENCODED),
        ("decode", layout.PREDICTIONS), ("score", layout.METRICS))]
    stages += [(m, layout.baseline_predictions(m), [m]) for m in enabled_baselines(cfg)]
    for stage, folder, models in stages:
        result = results.get(stage) or _from_manifest(store, stage, folder)
        for status, entries in (("skipped", result.skipped), ("failed", result.failed)):
            for gauge_id, reason in entries.items():
                if gauge_id not in stopped:
                    if stage not in layout.BASELINE_MODELS:
                        stopped.add(gauge_id)
                    statuses += status_rows(gauge_id, models, gauge_id in train, status, stage,
                                            reason)
    summary = collect(rows, earlier, statuses)
    stamp = {"stage": "summary", "config": config_hash(cfg.to_dict())}
    summary, agg = write_summary(store, summary, stamp)
    log.info(f"summary: {store.uri(layout.SUMMARY)}\n{headline(agg)}")
    _log_unfinished(summary)
    flush_run_logs()
    return summary


def failed_catchments(summary: pd.DataFrame) -> list[str]:
    return sorted(summary.loc[summary.status == "failed", layout.PARTITION_KEY].unique())


def _log_unfinished(summary: pd.DataFrame) -> None:
    counts = summary.drop_duplicates(layout.PARTITION_KEY)["status"].value_counts().to_dict()
    failed = summary[summary.status == "failed"][layout.PARTITION_KEY].nunique()
    skipped = summary[summary.status == "skipped"][layout.PARTITION_KEY].nunique()
    if failed or skipped:
        log.info(f"summary: {failed} catchment(s) failed, {skipped} skipped "
                 f"({counts}); their reasons are in the summary's error column and the report")


def _from_manifest(store: Store, stage: str, folder: str) -> StageResult:
    manifest = partitions.read_manifest(store, folder) or {}
    return StageResult(stage, skipped=dict(manifest.get("skipped") or {}),
                       failed=dict(manifest.get("failed") or {}))
