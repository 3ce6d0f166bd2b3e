"""``hybrid metrics``: score any table of observed and simulated flows without running a model.

Useful on its own (score another model's output the same way this project scores its own) and
as the check that a run's predictions files reproduce the metrics in its summary.
"""

from __future__ import annotations

import fsspec
import numpy as np
import pandas as pd

from hybrid.errors import DataError
from hybrid.evaluation.scoring import metric_row


def read_any(url: str) -> pd.DataFrame:
    try:
        with fsspec.open(url, "rb") as f:
            if url.endswith((".parquet", ".pq")):
                return pd.read_parquet(f)
            return pd.read_csv(f, dtype={"gauge_id": str})  # keep leading zeros
    except FileNotFoundError:
        raise DataError(f"file not found: {url}") from None
    except (ValueError, pd.errors.ParserError) as err:
        raise DataError(f"{url}: cannot be read as a table ({str(err).splitlines()[0]})") from None


def score_table(frame: pd.DataFrame, obs: str, sims: list[str] | None, source: str = "table"
                ) -> pd.DataFrame:
    if obs not in frame.columns:
        raise DataError(
            f"{source}: no observed column {obs!r} (columns: {', '.join(frame.columns)})")
    if sims is None:
        skip = {obs, "date", "gauge_id", "split"}
        sims = [c for c in frame.columns
                if c not in skip and pd.api.types.is_numeric_dtype(frame[c])]
    if not sims:
        raise DataError(f"{source}: no simulated column to score against {obs!r} "
                        f"(columns: {', '.join(map(str, frame.columns))})")
    for sim in sims:
        if sim not in frame.columns:
            raise DataError(f"{source}: no simulated column {sim!r}")
    for column in [obs, *sims]:
        values = frame[column]
        if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            converted = pd.to_numeric(values, errors="coerce")
            bad = converted.isna() & values.notna()
            if bad.any():
                raise DataError(f"{source}: column {column!r} has non-numeric value "
                                f"{values[bad].iloc[0]!r}")
            frame = frame.assign(**{column: converted})
    groups = frame.groupby("gauge_id", sort=True) if "gauge_id" in frame.columns \
        else [("all", frame)]
    rows = []
    for gauge_id, part in groups:
        for sim in sims:
            rows.append(metric_row(part[obs], part[sim], {"gauge_id": gauge_id, "model": sim}))
    return pd.DataFrame(rows)


def print_metrics(url: str, obs: str, sims: list[str] | None) -> None:
    table = score_table(read_any(url), obs, sims, source=url)
    with pd.option_context("display.width", 200, "display.max_columns", 20,
                           "display.float_format", "{:.3f}".format):
        print(table.to_string(index=False))
    if table["gauge_id"].nunique() > 1:
        print("\nmedian over catchments:")
        print(table.drop(columns="gauge_id").groupby("model").median().round(3).to_string())
    if not np.isfinite(table.get("nse", pd.Series(dtype=float))).any():
        print("note: no finite NSE (fewer than 2 valid pairs or constant observations)")
