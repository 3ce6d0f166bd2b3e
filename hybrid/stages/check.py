"""``hybrid check``: a config against its data and store, without writing or training anything.

It does what ``prepare`` does up to the point of writing (resolve catchments, read every series,
apply the same checks) and opens the run folder read-only, so a typo, a period outside the data
or an unreachable bucket shows up in seconds, before an hour of pre-training. Reading is not
enough to know that a run can write: a missing bucket lists as empty, and a read-only folder
reads fine. So check writes one small probe object under the run folder and deletes it (a local
folder it had to create is removed again): a missing bucket, refused credentials, a store that
is a file, or a read-only folder fail here with the line ``run`` would print.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from hybrid.config import Config
from hybrid.data import canonical
from hybrid.data.catalog import check_train_count
from hybrid.encoder.base_run import resolve
from hybrid.errors import DataError, HybridError, SkipCatchment
from hybrid.execution.runner import StageOutcome
from hybrid.logs import logger
from hybrid.store.runs import open_run

log = logger()


def run(cfg: Config, session: object = None) -> StageOutcome:
    """``hybrid check``; it opens no session: nothing is written, not even to ``run.log``."""
    return StageOutcome("check", details=check(cfg))


def check(cfg: Config) -> dict:
    """Counts of usable, skipped and failing catchments (with the reasons), or an error."""
    cfg = resolve(cfg)  # a base run's inputs must match before anything else
    store = open_run(cfg, write=False)  # reachable, and not a different run under this id
    store.probe_write()  # the bucket exists and may be written, as the run's first write needs
    dataset = canonical.dataset_for(cfg)
    gauges, skipped = canonical.resolve_basins(cfg, dataset)
    _, bad = canonical.prepare_attributes(cfg, dataset, gauges)
    skipped.update(bad)
    failed: dict[str, str] = {}
    state = canonical.dataset_state(cfg, dataset, gauges)

    def one(gauge_id: str):
        try:
            canonical.canonical_frame(cfg, gauge_id, canonical.read_series(cfg, state, gauge_id))
            return gauge_id, None, None
        except SkipCatchment as skip:
            return gauge_id, skip.reason, None
        except DataError as err:
            return gauge_id, None, str(err)

    usable = 0
    with ThreadPoolExecutor(canonical.PREPARE_THREADS) as pool:
        for gauge_id, reason, error in pool.map(one, [g for g in gauges if g not in skipped]):
            if reason:
                skipped[gauge_id] = reason
            elif error:
                failed[gauge_id] = error
            else:
                usable += 1
    for gauge_id, reason in sorted(skipped.items()):
        log.info(f"check: catchment {gauge_id} would be skipped: {reason}")
    for gauge_id, error in sorted(failed.items()):
        log.info(f"check: catchment {gauge_id} would fail: {error}")
    log.info(f"check: {usable} usable catchment(s), {len(skipped)} skipped, {len(failed)} "
             f"failing; run folder {store.uri()}")
    if not usable:
        raise HybridError("check: no usable catchment")
    check_train_count(cfg, usable)
    return {"usable": usable, "skipped": skipped, "failed": failed}
