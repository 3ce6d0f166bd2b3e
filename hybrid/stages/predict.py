"""``hybrid predict``: a finished run's regional and hybrid predictions for any period.

Nothing is refitted: the encoder (on its host, the GPU node when there is one) serves the
features and each catchment's kept forest (``decoder.keep_models``, the default) turns them into
streamflow. Within the days the run prepared, inputs come from its own catchment store, so
predicting the run's test period reproduces its test predictions exactly; a period reaching
beyond them (new years of forcings) re-reads the dataset, starting where the run's store starts
so the streaming state is the same. Observed streamflow is optional: a catchment without any in
the period gets predictions and no metrics.

What is served is said, never implied: a day needs ``seq_length`` days of finite inputs before
it, so the first day served may come later than the one asked; the served period and the reason
are logged and kept in the manifest (the folder keeps the asked period's name, so a rerun finds
it). A period in which no catchment has such a day is an error, not an empty success. Days the
forests were fitted on (``decoder.fit_period``) score well without showing skill, so they are
flagged (``in_sample``), warned about, and scored apart from the others.

Outputs, under ``predict/<start>_<end>/`` (``hybrid.store.layout``): ``inputs/`` (only when the
dataset was re-read), ``predictions/<id>/part-0.parquet`` (gauge_id, date, observed, regional,
hybrid, in_sample) and ``summary.parquet`` (metrics of the catchments with observations, one row
per catchment, model and ``days``: all, and in_sample / out_of_sample when the period overlaps
the fit period).
"""

from __future__ import annotations

import datetime as dt
import time

import numpy as np
import pandas as pd
import pyarrow as pa

from hybrid.config import Config
from hybrid.data.canonical import (
    clean_values,
    dataset_for,
    dataset_state,
    read_series,
    window_start,
)
from hybrid.data.catalog import load_catchment
from hybrid.data.windows import CatchmentArrays, period_mask, valid_window_ends
from hybrid.decoder.fit import load_decoder
from hybrid.encoder.checkpoints import model_sha
from hybrid.encoder.features import encode_streaming, encoder_state, regional_head
from hybrid.errors import ConfigError, DataError, SkipCatchment
from hybrid.evaluation.scoring import clip_predictions, metric_row
from hybrid.execution.context import Context, WorkResult
from hybrid.execution.executors import ThreadExecutor
from hybrid.execution.runner import (
    CatchmentStage,
    StageOutcome,
    StageResult,
    run_stage,
)
from hybrid.execution.session import Session
from hybrid.logs import logger
from hybrid.store import layout, partitions
from hybrid.store.provenance import config_hash
from hybrid.store.storage import Store

log = logger()

#: what a predictions partition holds beyond date and the models (part of the stamp, so that
#: partitions written before ``in_sample`` existed are redone, not served without it)
PREDICT_COLUMNS = "observed,in_sample"


def run(cfg: Config, start: dt.date, end: dt.date, data_dir: str | None = None,
        session: Session | None = None) -> StageOutcome:
    """Regional and hybrid predictions of a finished run for [start, end]; the outcome's
    summary holds the metrics of the catchments with observations in the period."""
    if end < start:
        raise ConfigError(f"--end {end} is before --start {start}")
    session = Session.ensure(cfg, session, existing=True)
    cfg, store = session.cfg, session.store
    if data_dir:
        cfg = cfg.replace(data_dir=data_dir)
    gauges = sorted(partitions.require_manifest(store, layout.PREDICTIONS, "decode")
                    ["catchments"])
    folder = period_folder(start, end)
    started = time.monotonic()
    inputs = None
    if not _covered(store, cfg, gauges, start, end):
        inputs = f"{folder}/inputs"
        log.info(f"predict: {start}..{end} reaches beyond the days the run prepared: reading "
                 f"the dataset again from {cfg.data_dir or cfg.dataset}")
        reread_inputs(cfg, store, gauges, inputs, end)
    stage = predict_stage(cfg, model_sha(store), folder, (start, end))
    context = Context.of(store, cfg, period=(start.isoformat(), end.isoformat()),
                         folder=folder, stamps={"predict": stage.stamp}, inputs=inputs)
    result = run_stage(stage, context, gauges, session.executor, write_manifest=False)
    span = data_span(store, inputs)
    if not result.done:
        nothing_predicted(store, cfg, folder, (start, end), span, result)
    records = result.records(stage.folder)
    facts = served_period(cfg, (start, end), records, span)
    partitions.write_manifest(store, stage.folder, stage.name, stage.stamp, records,
                              result.skipped, result.failed, **facts)
    if all(g in result.ran for g in result.done):
        rows = [row for value in result.done.values() for row in value.rows]
    else:  # some were predicted by an earlier command: score them all from their files
        rows = score_folder(store, folder)
    summary = summarise(store, folder, rows)
    log_result(folder, store, summary, started)
    return StageOutcome.of(result, summary=summary, path=store.uri(folder), details=facts)


def data_span(store: Store, inputs: str | None) -> tuple[str, str]:
    """First and last day of the inputs the period was predicted from (any catchment)."""
    manifest = partitions.read_manifest(store, inputs or layout.CATCHMENTS, quiet=True) or {}
    entries = [e for e in (manifest.get("catchments") or {}).values() if "start" in e]
    if not entries:
        return "?", "?"
    return min(e["start"] for e in entries), max(e["end"] for e in entries)


def nothing_predicted(store: Store, cfg: Config, folder: str, period: tuple[dt.date, dt.date],
                      span: tuple[str, str], result: StageResult) -> None:
    """Raise the one line that says why no catchment was predicted; the period's folder, which
    would hold nothing but a manifest of skipped catchments, is removed."""
    store.delete(folder, recursive=True)
    start, end = period
    first = None if span[0] == "?" else \
        dt.date.fromisoformat(span[0]) + dt.timedelta(days=cfg.seq_length - 1)
    if first is not None and (end < first or start.isoformat() > span[1]):
        why = (f"the period lies outside the data, which span {span[0]}..{span[1]} (the first "
               f"day with a full {cfg.seq_length}-day window of inputs is {first} at the "
               "earliest)")
    else:
        gauge_id, reason = next(iter({**result.failed, **result.skipped}.items()),
                                ("-", "no catchment to predict"))
        why = (f"{len(result.failed)} catchment(s) failed and {len(result.skipped)} were "
               f"skipped, e.g. {gauge_id}: {reason}")
    raise DataError(f"predict: nothing was predicted for {start}..{end}: {why}; nothing was "
                    "written")


def served_period(cfg: Config, period: tuple[dt.date, dt.date], records: dict[str, dict],
                  span: tuple[str, str]) -> dict:
    """The days actually served, why they differ from those asked, and how many of them the
    forests were fitted on; logged, and kept in the predictions' manifest."""
    asked = [d.isoformat() for d in period]
    spans = [(r["first"], r["last"]) for r in records.values() if "first" in r]
    served = [min(f for f, _ in spans), max(last for _, last in spans)] if spans else asked
    reasons = []
    if served[0] > asked[0]:
        reasons.append(f"no day before {served[0]} has {cfg.seq_length} days of finite inputs "
                       f"before it (the data start {span[0]})")
    if served[1] < asked[1]:
        reasons.append(f"no day after {served[1]} has finite inputs (the data end {span[1]})")
    moved = "; ".join(reasons)
    if moved:
        log.info(f"predict: served {served[0]}..{served[1]}, not the asked "
                 f"{asked[0]}..{asked[1]}: {moved}")
    fit = [f"{a}..{b}" for a, b in fit_ranges(cfg)]
    in_sample = sum(int(r.get("in_sample_days", 0)) for r in records.values())
    days = sum(int(r["rows"]) for r in records.values())
    if in_sample:
        log.info(f"predict: warning: {in_sample} of {days} predicted days lie in the period "
                 f"the forests were fitted on (decoder.fit_period {cfg.decoder.fit_period}: "
                 f"{', '.join(fit)}): their skill is in-sample, not a test; the in_sample "
                 "column flags them and the summary scores them apart (column days)")
    return {"asked": {"start": asked[0], "end": asked[1]},
            "served": {"start": served[0], "end": served[1]}, "moved": moved,
            "fit_period": {"name": cfg.decoder.fit_period, "ranges": fit},
            "in_sample_days": in_sample, "days": days}


def fit_ranges(cfg: Config) -> list[tuple[dt.date, dt.date]]:
    """The days every catchment's forest was fitted on (``decoder.fit_period``)."""
    ranges = [(cfg.train_start_date, cfg.train_end_date)]
    if cfg.decoder.fit_period == "train_validation":
        ranges.append((cfg.validation_start_date, cfg.validation_end_date))
    return ranges


def in_fit_period(cfg: Config, dates: pd.DatetimeIndex) -> np.ndarray:
    mask = np.zeros(len(dates), dtype=bool)
    for first, last in fit_ranges(cfg):
        mask |= period_mask(dates, first, last)
    return mask


def _covered(store: Store, cfg: Config, gauges: list[str], start: dt.date, end: dt.date
             ) -> bool:
    """Whether the run's own store holds every day the period's windows need."""
    catchments = partitions.require_manifest(store, layout.CATCHMENTS, "prepare")["catchments"]
    needed = (start - dt.timedelta(days=cfg.seq_length - 1)).isoformat()
    return all(catchments[g].get("start", "9999") <= needed
               and catchments[g].get("end", "0000") >= end.isoformat() for g in gauges)


def setup_predictor(context: Context) -> dict:
    return encoder_state(context.store, context.cfg)


def period_folder(start: dt.date, end: dt.date) -> str:
    return f"{layout.PREDICT}/{start.isoformat()}_{end.isoformat()}"


def _period_inputs(context: Context, gauge_id: str) -> pd.DataFrame:
    """The catchment's series for the period: the run's own store, or the re-read dataset."""
    folder = context.inputs
    if folder:
        if not context.store.exists(layout.partition_key(folder, gauge_id)):
            raise SkipCatchment(gauge_id, "the dataset holds none of the days the period needs")
        return partitions.read_partition(context.store, folder, gauge_id).to_pandas() \
            .set_index("date")
    return load_catchment(context.store, gauge_id)


def predict_one(context: Context, state: dict, gauge_id: str) -> WorkResult:
    cfg, store = context.cfg, context.store
    start, end = (dt.date.fromisoformat(d) for d in context.period)
    trained = state["trained"]
    frame = _period_inputs(context, gauge_id)
    static = state["attributes"].loc[gauge_id, trained.scaler.static_attributes].to_numpy()
    if cfg.target not in frame:
        frame = frame.assign(**{cfg.target: np.nan})
    arrays = CatchmentArrays.build(gauge_id, frame, static, trained.scaler)
    ok = valid_window_ends(arrays.x, cfg.seq_length) & period_mask(arrays.dates, start, end)
    days = np.flatnonzero(ok)
    if not len(days):
        raise SkipCatchment(gauge_id, f"no day of {start}..{end} with {cfg.seq_length} days of "
                                      "finite inputs before it")
    hidden = encode_streaming(trained.model, arrays, days, cfg.seq_length,
                              device=state["device"])
    head = regional_head(trained.model, arrays, days, cfg.seq_length, cfg.predict_last_n,
                         cfg.encode_batch_size, state["device"])
    predicted = partitions.locate(store, layout.PREDICTIONS, gauge_id)  # either layout
    fitted = partitions.read_footer_json(store, predicted, partitions.INFO_KEY) \
        if predicted else {}
    forest = load_decoder(store, gauge_id, fitted.get("forest"))
    observed = frame[cfg.target].to_numpy(np.float64)[days]
    in_sample = in_fit_period(cfg, arrays.dates[days])
    predictions = pd.DataFrame({
        "date": arrays.dates[days].values.astype("datetime64[ms]"),
        "observed": observed.astype(np.float32),
        "regional": clip_predictions(cfg, trained.scaler.denormalise(head).astype(np.float32)),
        "hybrid": clip_predictions(cfg, forest.predict(hidden).astype(np.float32)),
        "in_sample": in_sample,
    })
    folder = f"{context.folder}/{layout.PREDICTIONS}"
    info = {"first": str(arrays.dates[days[0]].date()), "last": str(arrays.dates[days[-1]].date()),
            "in_sample_days": int(in_sample.sum())}
    record = partitions.write_partition(store, folder, gauge_id, predictions,
                                        context.stamps["predict"], info)
    return WorkResult({folder: {**record, **info}}, rows=score_rows(gauge_id, predictions),
                      node_id=state.get("node_id", ""))


def reread_inputs(cfg: Config, store: Store, gauges: list[str], folder: str, end: dt.date
                  ) -> StageResult:
    """The dataset's series from where the run's store starts to ``end``, as partitions."""
    first = window_start(cfg)
    stamp = {"stage": "predict-inputs", "config": config_hash(cfg.to_dict()),
             "end": end.isoformat()}

    def one(context: Context, state: dict, gauge_id: str) -> WorkResult:
        raw = read_series(cfg, state, gauge_id)
        columns = [c for c in [*cfg.dynamic_inputs, cfg.target] if c in raw.columns]
        missing = [c for c in cfg.dynamic_inputs if c not in raw.columns]
        if missing:
            raise ConfigError(f"dynamic_inputs: {missing[0]!r} is not a variable of catchment "
                              f"{gauge_id} in {cfg.data_dir}")
        frame, _ = clean_values(cfg, gauge_id, raw[columns])
        frame = frame.astype("float32").loc[pd.Timestamp(first):pd.Timestamp(end)]
        if frame.empty:
            raise SkipCatchment(gauge_id, f"the period ends on {end}, before {first}, where the "
                                          "run's series start" if end < first else
                                f"the dataset holds no day of {first}..{end}")
        frame = frame.reindex(pd.date_range(frame.index[0], frame.index[-1], name="date"))
        span = {"start": str(frame.index[0].date()), "end": str(frame.index[-1].date())}
        record = partitions.write_partition(
            store, folder, gauge_id, pa.Table.from_pandas(frame.reset_index()), stamp, span)
        return WorkResult({folder: {**record, **span}})

    stage = CatchmentStage("predict-inputs", folder, one, stamp,
                           setup=lambda c: dataset_state(cfg, dataset_for(cfg), gauges),
                           verb="read")
    return run_stage(stage, Context.of(store, cfg), gauges, ThreadExecutor(4))


def predict_stage(cfg: Config, model_sha: str, folder: str, period: tuple[dt.date, dt.date]
                  ) -> CatchmentStage:
    stamp = {"stage": "predict", "config": config_hash(cfg.to_dict()), "model": model_sha,
             "period": f"{period[0]}_{period[1]}", "columns": PREDICT_COLUMNS}
    return CatchmentStage("predict", f"{folder}/{layout.PREDICTIONS}", predict_one, stamp,
                          setup=setup_predictor, role="encoder", verb="predict")


def score_rows(gauge_id: str, predictions: pd.DataFrame) -> list[dict]:
    """Metric rows over all days (``days`` = all) and, when some lie in the forests' fit period,
    over those (in_sample) and the others (out_of_sample) apart."""
    in_sample = predictions["in_sample"].to_numpy(bool) if "in_sample" in predictions \
        else np.zeros(len(predictions), dtype=bool)
    groups = [("all", np.ones(len(predictions), dtype=bool))]
    if in_sample.any():
        groups += [("in_sample", in_sample), ("out_of_sample", ~in_sample)]
    rows = []
    for days, mask in groups:
        part = predictions[mask]
        observed = part["observed"].to_numpy(np.float64)
        n_observed = int(np.isfinite(observed).sum())
        if n_observed < 2:
            continue
        rows += [metric_row(observed, part[model].to_numpy(),
                            {layout.PARTITION_KEY: gauge_id, "model": model, "days": days},
                            n_days=len(part), n_observed=n_observed)
                 for model in layout.CORE_MODELS]
    return rows


def score_folder(store: Store, folder: str) -> list[dict]:
    """Metric rows of every catchment predicted in ``folder`` (read in one dataset read)."""
    table = partitions.read_folder(store, f"{folder}/{layout.PREDICTIONS}").to_pandas()
    return [row for gauge_id, part in table.groupby(layout.PARTITION_KEY, observed=True)
            for row in score_rows(str(gauge_id), part.sort_values("date"))]


def summarise(store: Store, folder: str, rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    if len(frame):
        frame = frame.sort_values([layout.PARTITION_KEY, "model", "days"]).reset_index(drop=True)
        store.write_table(f"{folder}/summary.parquet", frame)
    return frame


def log_result(folder: str, store: Store, summary: pd.DataFrame, started: float) -> None:
    if not len(summary):
        log.info(f"predict: {store.uri(folder)}: predictions only (no observed streamflow in "
                 "the period)")
        return
    split = "in_sample" in set(summary["days"])
    labels = {"out_of_sample": " on out-of-sample days",
              "in_sample": " on in-sample days (the forests' own fit period)"} if split \
        else {"all": ""}
    for days, label in labels.items():
        part = summary[summary["days"] == days]
        if not len(part):
            continue
        medians = part.groupby("model")["nse"].median()
        log.info(f"predict: {store.uri(folder)}: median NSE " + ", ".join(
            f"{m} {v:.3f}" for m, v in medians.items())
            + f" over {part[layout.PARTITION_KEY].nunique()} catchment(s) with observations"
            + f"{label} ({time.monotonic() - started:.0f}s)")
