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
import io
import time

import numpy as np
import pandas as pd
import pyarrow as pa

from hybrid.config import Config
from hybrid.data.windows import CatchmentArrays, period_mask, valid_window_ends
from hybrid.encoder.features import encode_streaming, regional_head
from hybrid.errors import ConfigError, SkipCatchment, StoreError
from hybrid.evaluation.metrics import compute_all
from hybrid.execution.runner import CatchmentStage, Context, StageResult, ThreadExecutor, run_stage
from hybrid.logs import logger
from hybrid.stages.prepare import clean_values, dataset_for, load_catchment, window_start
from hybrid.store import layout, partitions
from hybrid.store.provenance import config_hash
from hybrid.store.storage import Store

log = logger()


def period_folder(start: dt.date, end: dt.date) -> str:
    return f"{layout.PREDICT}/{start.isoformat()}_{end.isoformat()}"


def decoder_key(gauge_id: str) -> str:
    return f"{layout.partition_dir(layout.DECODERS, gauge_id)}/model.joblib"


def _period_inputs(context: Context, gauge_id: str) -> pd.DataFrame:
    """The catchment's series for the period: the run's own store, or the re-read dataset."""
    folder = context.extra.get("inputs")
    if folder:
        return partitions.read_partition(context.store, folder, gauge_id).to_pandas() \
            .set_index("date")
    return load_catchment(context.store, gauge_id)


def predict_one(context: Context, state: dict, gauge_id: str) -> dict:
    import joblib

    cfg, store = context.cfg, context.store
    start, end = (dt.date.fromisoformat(d) for d in context.extra["period"])
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
    key = decoder_key(gauge_id)
    if not store.exists(key):
        raise StoreError(f"{store.uri(key)} not found: this run's forests were not kept "
                         "(decoder.keep_models: false); rerun with keep_models: true under a new "
                         "run_id to predict other periods")
    forest = joblib.load(io.BytesIO(store.read_bytes(key)))
    observed = frame[cfg.target].to_numpy(np.float64)[days]
    predictions = pd.DataFrame({
        "date": arrays.dates[days].values.astype("datetime64[ms]"),
        "observed": observed.astype(np.float32),
        "regional": trained.scaler.denormalise(head).astype(np.float32),
        "hybrid": forest.predict(hidden).astype(np.float32),
    })
    record = partitions.write_partition(store, f"{context.extra['folder']}/{layout.PREDICTIONS}",
                                        gauge_id, predictions, context.extra["stamp"])
    return {"records": {f"{context.extra['folder']}/{layout.PREDICTIONS}": record},
            "rows": score_rows(gauge_id, predictions), "node_id": state.get("node_id", "")}


def _setup(context: Context) -> dict:
    from hybrid.stages.encode import setup_encoder

    return setup_encoder(context)


def reread_inputs(cfg: Config, store: Store, gauges: list[str], folder: str, end: dt.date
                  ) -> StageResult:
    """The dataset's series from where the run's store starts to ``end``, as partitions."""
    first = window_start(cfg)
    stamp = {"stage": "predict-inputs", "config": config_hash(cfg.to_dict()),
             "end": end.isoformat()}

    def one(context: Context, state: dict, gauge_id: str) -> dict:
        raw = state["dataset"].load_timeseries(gauge_id)
        columns = [c for c in [*cfg.dynamic_inputs, cfg.target] if c in raw.columns]
        missing = [c for c in cfg.dynamic_inputs if c not in raw.columns]
        if missing:
            raise ConfigError(f"dynamic_inputs: {missing[0]!r} is not a variable of catchment "
                              f"{gauge_id} in {cfg.data_dir}")
        frame, _ = clean_values(cfg, gauge_id, raw[columns])
        frame = frame.astype("float32").loc[pd.Timestamp(first):pd.Timestamp(end)]
        frame = frame.reindex(pd.date_range(frame.index[0], frame.index[-1], name="date"))
        return {"records": {folder: partitions.write_partition(
            store, folder, gauge_id, pa.Table.from_pandas(frame.reset_index()), stamp)}}

    from hybrid.execution.runner import CatchmentStage as Stage

    stage = Stage("predict-inputs", folder, one, stamp, setup=lambda c: {"dataset":
                                                                          dataset_for(cfg)},
                  verb="read")
    return run_stage(stage, Context.of(store, cfg), gauges, ThreadExecutor(4))


def predict_stage(cfg: Config, model_sha: str, folder: str, period: tuple[dt.date, dt.date]
                  ) -> CatchmentStage:
    stamp = {"stage": "predict", "config": config_hash(cfg.to_dict()), "model": model_sha,
             "period": f"{period[0]}_{period[1]}"}
    return CatchmentStage("predict", f"{folder}/{layout.PREDICTIONS}", predict_one, stamp,
                          setup=_setup, role="encoder", verb="predict")


def score_rows(gauge_id: str, predictions: pd.DataFrame) -> list[dict]:
    observed = predictions["observed"].to_numpy(np.float64)
    if np.isfinite(observed).sum() < 2:
        return []
    return [{layout.PARTITION_KEY: gauge_id, "model": model,
             **compute_all(observed, predictions[model].to_numpy(np.float64)),
             "n_days": len(predictions), "n_observed": int(np.isfinite(observed).sum())}
            for model in ("regional", "hybrid")]


def score_folder(store: Store, folder: str) -> list[dict]:
    """Metric rows of every catchment predicted in ``folder`` (read in one dataset read)."""
    import pyarrow.dataset as ds

    base = store.path(f"{folder}/{layout.PREDICTIONS}")
    table = ds.dataset(base, format="parquet", filesystem=store.arrow_filesystem(),
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
