"""The stages as the CLI and ``jobs/`` call them: config in, outputs in the run folder.

Each ``stage_*`` opens the run (checking its recorded config), brings its own outputs up to date
through ``hybrid.execution.runner`` (so a rerun resumes and heals), and returns what the next
stage needs.
``stage_run`` is the stages in order. Where the work runs is the executor's business
(``resources.executor``: Ray, or this process); this module never imports Ray.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field

import pandas as pd

from hybrid.config import Config
from hybrid.encoder import base_run
from hybrid.encoder.base_run import resolve as resolve_base_run
from hybrid.encoder.checkpoints import load_trained
from hybrid.encoder.trainer import catchment_split, pick_device, train_regional
from hybrid.errors import EXIT_FAILURES, EXIT_OK, ConfigError, StoreError
from hybrid.evaluation.summary import (
    collect,
    headline,
    read_metric_rows,
    status_rows,
    write_summary,
)
from hybrid.execution.runner import (
    Context,
    Executor,
    SerialExecutor,
    StageResult,
    run_stage,
)
from hybrid.logs import RUN_LOG_ONLY, attach_run_log, detach_run_logs, flush_run_logs, logger
from hybrid.stages.baselines import catchment_wise_stage, finetune_stage
from hybrid.stages.decode import decode_stage, decode_stamp
from hybrid.stages.encode import encode_stage
from hybrid.stages.prepare import prepare, usable_catchments
from hybrid.stages.score import enabled_baselines, score_stage, score_stamp
from hybrid.store import layout, partitions
from hybrid.store.provenance import config_hash, sha256
from hybrid.store.runs import open_run, read_timings, record_time, run_store
from hybrid.store.storage import Store

log = logger()

CORE_MODELS = ("regional", "hybrid")


@dataclass
class Session:
    """One command on one run: its store, its log, and (started on demand) its executor."""

    cfg: Config
    store: Store
    _executor: Executor | None = None
    #: what earlier stages of this command decided, for the later ones
    results: dict[str, StageResult] = field(default_factory=dict)

    @classmethod
    def open(cls, cfg: Config, write: bool = True) -> "Session":
        cfg = resolve_base_run(cfg)  # a reused encoder's settings are part of the run's config
        store = open_run(cfg, write=write)
        if write:  # a read-only command leaves no trace in the run, not even in run.log
            attach_run_log(store)
        return cls(cfg, store)

    @property
    def executor(self) -> Executor:
        """Started on first use: a rerun with nothing left to do never starts Ray."""
        return _Lazy(self)

    def real_executor(self) -> Executor:
        if self._executor is None:
            self._executor = executor_for(self.cfg, self.store)
        return self._executor

    def release_hosts(self) -> None:
        if self._executor is not None:
            self._executor.close()

    def close(self) -> None:
        self.release_hosts()
        detach_run_logs()


class _Lazy:
    def __init__(self, session: Session) -> None:
        self.session = session

    def map(self, *args, **kwargs):
        return self.session.real_executor().map(*args, **kwargs)

    def call(self, *args, **kwargs):
        return self.session.real_executor().call(*args, **kwargs)

    def close(self) -> None:
        self.session.release_hosts()


def executor_for(cfg: Config, store: Store) -> Executor:
    if cfg.resources.executor == "local":
        return SerialExecutor()
    from hybrid.execution.ray_executor import RayExecutor  # the only place Ray comes in

    return RayExecutor(cfg, store)


def _session(cfg: Config, session: Session | None, write: bool = True) -> Session:
    return session if session is not None else Session.open(cfg, write)


def _timed(store: Store, stage: str, result: StageResult, **extra) -> None:
    if result.ran:
        record_time(store, stage, result.seconds, catchments=len(result.ran),
                    failed=len(result.failed), **extra)


# ------------------------------------------------------------------------------- stages
def stage_prepare(cfg: Config, session: Session | None = None) -> StageResult:
    session = _session(cfg, session)
    cfg = session.cfg
    started = time.monotonic()
    result = prepare(cfg, session.store)
    if result.ran:
        record_time(session.store, "prepare", time.monotonic() - started,
                    catchments=len(result.ran), failed=len(result.failed))
    session.results["prepare"] = result
    flush_run_logs()
    return result


def stage_pretrain(cfg: Config, session: Session | None = None) -> dict:
    session = _session(cfg, session)
    cfg, store = session.cfg, session.store
    gauges = usable_catchments(store)  # "run `hybrid prepare` first" before any Ray start
    if cfg.base_run:
        return base_run.adopt(store, cfg, gauges)
    if store.exists(layout.FINAL):
        log.info(f"pretrain: already done ({store.uri(layout.FINAL)})")
        return {}
    context = Context.of(store, cfg)
    started = time.monotonic()
    info, where = session.executor.call(_pretrain, context, "encoder")
    record_time(store, "pretrain", time.monotonic() - started, **info, **where)
    for row in store.read_frame(layout.HISTORY).to_dict("records"):
        log.info(f"pretrain: epoch {row['epoch']} train loss {row['train_loss']:.4f}, "
                 f"validation loss {row['validation_loss']:.4f}, median NSE "
                 f"{row['validation_nse']:.3f}, {row['samples_per_second']:.0f} samples/s",
                 extra=RUN_LOG_ONLY)
    log.info(f"pretrain: done on node {where['node_id'][:12]} ({info['device']}) in "
             f"{time.monotonic() - started:.0f}s, best epoch {info['best_epoch']}")
    flush_run_logs()
    return {**info, **where}


def _pretrain(context: Context) -> dict:
    import torch

    device = pick_device(context.cfg.device)
    trained = train_regional(context.store, context.cfg, device)
    return {"device": device, "best_epoch": trained.best_epoch,
            "gpu": torch.cuda.get_device_name(0) if device == "cuda" else ""}


def model_sha(store: Store) -> str:
    """The identity of the run's trained model: the sha256 of its final checkpoint."""
    if not store.exists(layout.FINAL):
        raise StoreError(f"no trained model at {store.uri(layout.FINAL)}: run `hybrid "
                         "pretrain` first")
    return sha256(store.read_bytes(layout.FINAL))


def stage_encode(cfg: Config, session: Session | None = None) -> StageResult:
    session = _session(cfg, session)
    cfg, store = session.cfg, session.store
    gauges = usable_catchments(store)
    stage = encode_stage(cfg, model_sha(store))
    load_trained(store)  # a damaged final.pt is one line here, not a failure per catchment
    result = run_stage(stage, Context.of(store, cfg), gauges, session.executor,
                       manifest_extra={"encoder": cfg.encoder, "hidden_size": cfg.hidden_size})
    nodes = sorted({v.get("node_id", "") for v in result.done.values()
                    if isinstance(v, dict) and "seconds" in v})
    _timed(store, "encode", result, node_ids=nodes)
    session.results["encode"] = result
    return result


def stage_baselines(cfg: Config, session: Session | None = None) -> dict[str, StageResult]:
    """The optional per-catchment LSTMs (the paper's costly comparison models)."""
    out: dict[str, StageResult] = {}
    b = cfg.baselines
    if not (b.catchment_wise or b.finetune):
        return out
    session = _session(cfg, session)
    cfg, store = session.cfg, session.store
    gauges = _encoded(store)
    stages = []
    if b.catchment_wise:
        stages.append((catchment_wise_stage(cfg), b.catchment_wise_max_basins))
    if b.finetune:
        stages.append((finetune_stage(cfg, model_sha(store)), b.finetune_max_basins))
    for stage, limit in stages:
        todo = gauges[:limit] if limit is not None else gauges
        result = run_stage(stage, Context.of(store, cfg), todo, session.executor)
        _timed(store, stage.name, result,
               task_seconds=float(sum(v["records"][stage.folder].get("fit_seconds", 0)
                                      for g, v in result.done.items() if g in result.ran)))
        out[stage.name] = result
    session.results.update({f"baseline:{k}": v for k, v in out.items()})
    return out


def _encoded(store: Store) -> list[str]:
    manifest = partitions.require_manifest(store, layout.ENCODED, "encode")
    return sorted(manifest["catchments"])


def stage_decode(cfg: Config, session: Session | None = None, rescore: bool = False
                 ) -> pd.DataFrame:
    """Fit one decoder per catchment, score it, and write the summary (``rescore``: score
    again every catchment, e.g. after adding a metric, without refitting)."""
    session = _session(cfg, session)
    cfg, store = session.cfg, session.store
    gauges = _encoded(store)
    split = catchment_split(store, cfg)
    sha = model_sha(store)
    context = Context.of(store, cfg, in_training=frozenset(split["train"]),
                         decode_stamp=decode_stamp(cfg, sha), score_stamp=score_stamp(cfg, sha))
    decoded = run_stage(decode_stage(cfg, sha), context, gauges, session.executor)
    _timed(store, "decode", decoded)
    fresh = [g for g in decoded.ran if g in decoded.done]
    fresh_set = set(fresh)
    # a baseline made in this command changes the scoring of catchments decoded earlier
    changed = [g for name, r in session.results.items() if name.startswith("baseline:")
               for g in r.ran if g not in fresh_set]
    scored = run_stage(score_stage(cfg, sha), context,
                       [g for g in gauges if g in decoded.done], session.executor,
                       known={g: v for g, v in decoded.records(layout.METRICS).items()
                              if g in fresh_set},
                       force=list(decoded.done) if rescore else changed)
    _timed(store, "score", scored)
    session.results.update(decode=decoded, score=scored)
    rescored = {g for g in scored.ran if g in scored.done}
    rows = [row for g in fresh if g not in rescored for row in decoded.done[g]["rows"]]
    rows += [row for g in sorted(rescored) for row in scored.done[g]["rows"]]
    have = {r[layout.PARTITION_KEY] for r in rows}
    earlier = read_metric_rows(store, [g for g in scored.done if g not in have])
    summary = build_summary(session, split, rows, earlier)
    return summary


def stage_score(cfg: Config, session: Session | None = None) -> pd.DataFrame:
    return stage_decode(cfg, session, rescore=True)


def build_summary(session: Session, split: dict, rows: list[dict], earlier: pd.DataFrame
                  ) -> pd.DataFrame:
    """Every catchment of the run, finished or not, into ``summary/``."""
    cfg, store = session.cfg, session.store
    train = set(split["train"])
    statuses: list[dict] = []
    stopped: set[str] = set()
    for stage, folder in (("prepare", layout.CATCHMENTS), ("encode", layout.ENCODED),
                          ("decode", layout.PREDICTIONS), ("score", layout.METRICS)):
        result = session.results.get(stage) or _from_manifest(store, stage, folder)
        for status, entries in (("skipped", result.skipped), ("failed", result.failed)):
            for gauge_id, reason in entries.items():
                if gauge_id not in stopped:
                    stopped.add(gauge_id)
                    statuses += status_rows(gauge_id, list(CORE_MODELS), gauge_id in train,
                                            status, stage, reason)
    for model in enabled_baselines(cfg):
        result = session.results.get(f"baseline:{model}") or _from_manifest(
            store, model, layout.baseline_predictions(model))
        for status, entries in (("skipped", result.skipped), ("failed", result.failed)):
            for gauge_id, reason in entries.items():
                if gauge_id not in stopped:
                    statuses += status_rows(gauge_id, [model], gauge_id in train, status,
                                            model, reason)
    summary = collect(rows, earlier, statuses)
    stamp = {"stage": "summary", "config": config_hash(cfg.to_dict())}
    summary, agg = write_summary(store, summary, stamp)
    log.info(f"summary: {store.uri(layout.SUMMARY)}\n{headline(agg)}")
    counts = summary.drop_duplicates(layout.PARTITION_KEY)["status"].value_counts().to_dict()
    failed = summary[summary.status == "failed"][layout.PARTITION_KEY].nunique()
    skipped = summary[summary.status == "skipped"][layout.PARTITION_KEY].nunique()
    if failed or skipped:
        log.info(f"summary: {failed} catchment(s) failed, {skipped} skipped "
                 f"({counts}); their reasons are in the summary's error column and the report")
    flush_run_logs()
    return summary


def _from_manifest(store: Store, stage: str, folder: str) -> StageResult:
    manifest = partitions.read_manifest(store, folder) or {}
    return StageResult(stage, skipped=dict(manifest.get("skipped") or {}),
                       failed=dict(manifest.get("failed") or {}))


def stage_report(cfg: Config, session: Session | None = None) -> str:
    from hybrid.evaluation.report import write_report

    session = _session(cfg, session, write=False)
    return write_report(session.store, session.cfg)


def stage_predict(cfg: Config, start, end, data_dir: str | None = None,
                  session: Session | None = None) -> pd.DataFrame:
    """Regional and hybrid predictions of a finished run for [start, end]
    (``hybrid.stages.predict``);
    returns the metrics of the catchments that have observations in the period."""
    from hybrid.stages import predict

    if end < start:
        raise ConfigError(f"--end {end} is before --start {start}")
    session = _session(cfg, session)
    cfg, store = session.cfg, session.store
    if data_dir:
        cfg = cfg.replace(data_dir=data_dir)
    decoded = partitions.require_manifest(store, layout.PREDICTIONS, "decode")
    gauges = sorted(decoded["catchments"])
    folder = predict.period_folder(start, end)
    catchments = partitions.require_manifest(store, layout.CATCHMENTS, "prepare")["catchments"]
    # the run's own store serves the period when it holds every day the windows need
    needed = (start - dt.timedelta(days=cfg.seq_length - 1)).isoformat()
    covered = all(catchments[g].get("start", "9999") <= needed
                  and catchments[g].get("end", "0000") >= end.isoformat() for g in gauges)
    started = time.monotonic()
    inputs = None
    if not covered:
        inputs = f"{folder}/inputs"
        log.info(f"predict: {start}..{end} reaches beyond the days the run prepared: reading "
                 f"the dataset again from {cfg.data_dir or cfg.dataset}")
        predict.reread_inputs(cfg, store, gauges, inputs, end)
    sha = model_sha(store)
    stage = predict.predict_stage(cfg, sha, folder, (start, end))
    context = Context.of(store, cfg, period=(start.isoformat(), end.isoformat()),
                         folder=folder, stamp=stage.stamp, inputs=inputs)
    result = run_stage(stage, context, gauges, session.executor)
    if all(g in result.ran for g in result.done):
        rows = [row for value in result.done.values() for row in value.get("rows", [])]
    else:  # some were predicted by an earlier command: score them all from their files
        rows = predict.score_folder(store, folder)
    summary = predict.summarise(store, folder, rows)
    predict.log_result(folder, store, summary, started)
    return summary


@dataclass
class RunOutcome:
    report: str
    summary: pd.DataFrame

    @property
    def failed(self) -> list[str]:
        return sorted(self.summary.loc[self.summary.status == "failed",
                                       layout.PARTITION_KEY].unique())

    @property
    def exit_code(self) -> int:
        return EXIT_FAILURES if self.failed else EXIT_OK


def stage_run(cfg: Config) -> RunOutcome:
    """prepare -> pretrain -> encode -> (baselines) -> decode + score -> report."""
    joined = cfg.resources.executor == "ray" and _joined(cfg)
    early = executor_for(cfg, run_store(cfg)) if joined else None  # refuse before writing
    session = Session.open(cfg)
    session._executor = early
    try:
        stage_prepare(cfg, session)
        stage_pretrain(cfg, session)
        stage_encode(cfg, session)
        session.release_hosts()  # free the encoder's GPU/CPUs for the decoders
        stage_baselines(cfg, session)
        summary = stage_decode(cfg, session)
        report = stage_report(cfg, session)
        return RunOutcome(report, summary)
    finally:
        session.close()


def _joined(cfg: Config) -> bool:
    import os

    return bool(cfg.resources.address or os.environ.get("RAY_ADDRESS"))


def timings_in_order(store: Store) -> list[tuple[str, dict]]:
    order = ["prepare", "pretrain", "encode", "catchment_wise", "finetuned", "decode", "score"]
    timings = read_timings(store)
    return sorted(timings.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99)
