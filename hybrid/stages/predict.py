"""``hybrid predict``: a finished run's regional and hybrid predictions for any period.

Nothing is refitted: the encoder (on its host, the GPU node when there is one) serves the
features and each catchment's kept forest (``decoder.keep_models``, the default) turns them into
streamflow. Within the days the run prepared, inputs come from its own catchment store, so
predicting the run's test period reproduces its test predictions exactly; a period reaching
beyond them (new years of forcings) re-reads the dataset, starting where the run's store starts
so the streaming state is the same. Observed streamflow is optional: a catchment without any in
the period gets predictions and no metrics.

Outputs, under ``predict/<start>_<end>/`` (``hybrid.store.layout``): ``inputs/`` (only when the
dataset was re-read), ``predictions/gauge_id=<id>/part-0.parquet`` (date, observed, regional,
hybrid) and ``summary.parquet`` (metrics of the catchments with observations).
"""

from __future__ import annotations

import datetime as dt
import time

import numpy as np
import pandas as pd
import pyarrow as pa

from hybrid.config import Config
from hybrid.data.canonical import clean_values, dataset_for, window_start
from hybrid.data.catalog import load_catchment
from hybrid.data.windows import CatchmentArrays, period_mask, valid_window_ends
from hybrid.decoder.fit import load_decoder
from hybrid.encoder.checkpoints import model_sha
from hybrid.encoder.features import encode_streaming, encoder_state, regional_head
from hybrid.errors import ConfigError, SkipCatchment
from hybrid.evaluation.scoring import metric_row
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
from hybrid.store.storage import Store, parquet_format

log = logger()


def run(cfg: Config, start: dt.date, end: dt.date, data_dir: str | None = None,
        session: Session | None = None) -> StageOutcome:
    """Regional and hybrid predictions of a finished run for [start, end]; the outcome's
    summary holds the metrics of the catchments with observations in the period."""
    if end < start:
        raise ConfigError(f"--end {end} is before --start {start}")
    session = Session.ensure(cfg, session)
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
    result = run_stage(stage, context, gauges, session.executor)
    if all(g in result.ran for g in result.done):
        rows = [row for value in result.done.values() for row in value.rows]
    else:  # some were predicted by an earlier command: score them all from their files
        rows = score_folder(store, folder)
    summary = summarise(store, folder, rows)
    log_result(folder, store, summary, started)
    return StageOutcome.of(result, summary=summary, path=store.uri(folder))


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
    fitted = partitions.read_footer_json(
        store, layout.partition_key(layout.PREDICTIONS, gauge_id), partitions.INFO_KEY)
    forest = load_decoder(store, gauge_id, fitted.get("forest"))
    observed = frame[cfg.target].to_numpy(np.float64)[days]
    predictions = pd.DataFrame({
        "date": arrays.dates[days].values.astype("datetime64[ms]"),
        "observed": observed.astype(np.float32),
        "regional": trained.scaler.denormalise(head).astype(np.float32),
        "hybrid": forest.predict(hidden).astype(np.float32),
    })
    folder = f"{context.folder}/{layout.PREDICTIONS}"
    record = partitions.write_partition(store, folder, gauge_id, predictions,
                                        context.stamps["predict"])
    return WorkResult({folder: record}, rows=score_rows(gauge_id, predictions),
                      node_id=state.get("node_id", ""))


def reread_inputs(cfg: Config, store: Store, gauges: list[str], folder: str, end: dt.date
                  ) -> StageResult:
    """The dataset's series from where the run's store starts to ``end``, as partitions."""
    first = window_start(cfg)
    stamp = {"stage": "predict-inputs", "config": config_hash(cfg.to_dict()),
             "end": end.isoformat()}

    def one(context: Context, state: dict, gauge_id: str) -> WorkResult:
        raw = state["dataset"].load_timeseries(gauge_id)
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
        return WorkResult({folder: partitions.write_partition(
            store, folder, gauge_id, pa.Table.from_pandas(frame.reset_index()), stamp)})

    stage = CatchmentStage("predict-inputs", folder, one, stamp,
                           setup=lambda c: {"dataset": dataset_for(cfg)}, verb="read")
    return run_stage(stage, Context.of(store, cfg), gauges, ThreadExecutor(4))


def predict_stage(cfg: Config, model_sha: str, folder: str, period: tuple[dt.date, dt.date]
                  ) -> CatchmentStage:
    stamp = {"stage": "predict", "config": config_hash(cfg.to_dict()), "model": model_sha,
             "period": f"{period[0]}_{period[1]}"}
    return CatchmentStage("predict", f"{folder}/{layout.PREDICTIONS}", predict_one, stamp,
                          setup=setup_predictor, role="encoder", verb="predict")


def score_rows(gauge_id: str, predictions: pd.DataFrame) -> list[dict]:
    observed = predictions["observed"].to_numpy(np.float64)
    if np.isfinite(observed).sum() < 2:
        return []
    return [metric_row(observed, predictions[model],
                       {layout.PARTITION_KEY: gauge_id, "model": model},
                       n_days=len(predictions), n_observed=int(np.isfinite(observed).sum()))
            for model in layout.CORE_MODELS]


def score_folder(store: Store, folder: str) -> list[dict]:
    """Metric rows of every catchment predicted in ``folder`` (read in one dataset read)."""
    import pyarrow.dataset as ds

    base = store.path(f"{folder}/{layout.PREDICTIONS}")
    with store.errors(f"{folder}/{layout.PREDICTIONS}", "parse"):
        table = ds.dataset(base, format=parquet_format(), filesystem=store.arrow_filesystem(),
                           partitioning=layout.partitioning()).to_table().to_pandas()
    return [row for gauge_id, part in table.groupby(layout.PARTITION_KEY, observed=True)
            for row in score_rows(str(gauge_id), part.sort_values("date"))]


def summarise(store: Store, folder: str, rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    if len(frame):
        frame = frame.sort_values([layout.PARTITION_KEY, "model"]).reset_index(drop=True)
        store.write_table(f"{folder}/summary.parquet", frame)
    return frame


def log_result(folder: str, store: Store, summary: pd.DataFrame, started: float) -> None:
    if len(summary):
        medians = summary.groupby("model")["nse"].median()
        log.info(f"predict: {store.uri(folder)}: median NSE " + ", ".join(
            f"{m} {v:.3f}" for m, v in medians.items())
            + f" over {summary[layout.PARTITION_KEY].nunique()} catchment(s) with observations"
            + f" ({time.monotonic() - started:.0f}s)")
    else:
        log.info(f"predict: {store.uri(folder)}: predictions only (no observed streamflow in "
                 "the period)")
