"""Stage 5, score: every decoded catchment scored again from its predictions, never refitted.

For a metric added to the code, or a baseline added later: ``hybrid score`` reads
``predictions/`` (and any baseline's predictions), rewrites ``metrics/`` and the summary, and
fits nothing. A catchment that was encoded but never decoded has no predictions to score: that
is said in one line (run ``hybrid decode``), and the command exits non-zero.
"""

from __future__ import annotations

from hybrid.config import Config
from hybrid.data.catalog import catchment_split, encoded_catchments
from hybrid.encoder.checkpoints import model_sha
from hybrid.errors import StoreError
from hybrid.evaluation.scoring import score_stamp, scoring_stage
from hybrid.evaluation.summary import failed_catchments, summarise_run
from hybrid.execution.context import Context
from hybrid.execution.runner import StageOutcome, run_stage
from hybrid.execution.session import Session
from hybrid.store import layout, partitions


def run(cfg: Config, session: Session | None = None) -> StageOutcome:
    session = Session.ensure(cfg, session, existing=True)
    cfg, store = session.cfg, session.store
    decoded = partitions.require_manifest(store, layout.PREDICTIONS, "decode")
    accounted = {*decoded["catchments"], *(decoded.get("skipped") or {}),
                 *(decoded.get("failed") or {})}
    not_fitted = [g for g in encoded_catchments(store) if g not in accounted]
    if not_fitted:
        more = f" (and {len(not_fitted) - 1} more)" if len(not_fitted) > 1 else ""
        raise StoreError(f"score: catchment {not_fitted[0]}{more} has no fitted decoder in "
                         f"{store.uri(layout.PREDICTIONS)}; run `hybrid decode` first "
                         "(`hybrid score` never fits)")
    gauges = sorted(decoded["catchments"])
    split = catchment_split(store, cfg)
    sha = model_sha(store)
    context = Context.of(store, cfg, in_training=frozenset(split["train"]),
                         stamps={"score": score_stamp(cfg, sha)})
    scored = run_stage(scoring_stage(cfg, sha), context, gauges, session.executor, force=gauges)
    session.timed("score", scored)
    session.results["score"] = scored
    summary = summarise_run(store, cfg, set(split["train"]), scored, session.results)
    return StageOutcome("score", failed=failed_catchments(summary), summary=summary)
