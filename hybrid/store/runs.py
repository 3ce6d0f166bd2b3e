"""The run folder: ``<store>/<run_id>/`` with the resolved config that every stage reads back.

A run id (not a timestamp) names the folder, so rerunning the same config resumes instead of
starting over. Rerunning a run id with a config that changes what would be computed is refused:
mixing two models' outputs under one name is the one mistake a resumable run must never make.
The check does not rest on ``config.yml`` alone: every stage manifest and partition records the
config hash too, so a run whose ``config.yml`` was lost or damaged is still protected.
"""

from __future__ import annotations

from typing import Any

import yaml

from hybrid.config import Config, config_from_dict
from hybrid.errors import StoreError, redact
from hybrid.logs import logger
from hybrid.store import layout
from hybrid.store.provenance import OPERATIONAL_KEYS, computational, config_hash, provenance
from hybrid.store.storage import Store, open_store

log = logger()

#: storage options that may be written into the (shared) run folder: everything else, and in
#: particular every credential (key, secret, token, account_key, sas_token, client_secret,
#: connection_string, password ...), stays in memory only
SAFE_STORAGE_OPTIONS = frozenset({"endpoint_url", "region_name", "anon", "use_ssl",
                                  "requester_pays", "version_aware", "default_block_size",
                                  "default_cache_type", "project", "account_name"})
SAFE_CLIENT_KWARGS = frozenset({"region_name", "endpoint_url", "verify"})

#: stage folders whose manifests record the config hash (checked when config.yml is missing)
STAGE_FOLDERS = (layout.CATCHMENTS, layout.ENCODED, layout.PREDICTIONS, layout.METRICS)
#: run names a "no run" error shows (the rest are counted), and folders looked into for them
SHOWN_RUNS = 8
MAX_LISTED = 1000


def run_store(cfg: Config) -> Store:
    return open_store(cfg.store, cfg.storage_options).child(cfg.run_id)


def open_run(cfg: Config, write: bool = True, existing: bool = False) -> Store:
    """The run's store, its recorded config checked against ``cfg``.

    ``config.yml`` is written when the run has none (or a damaged one), or when only operational
    keys changed. With ``write=False`` (commands that only read a finished run) nothing is
    written, so they work on a read-only copy. With ``existing`` (commands that serve or report
    a run: ``report``, ``score``, ``predict``) a run folder that is not there is an error naming
    the runs that are, instead of a missing manifest later and a stray ``config.yml`` written.
    """
    store = run_store(cfg)
    if existing:
        require_run(cfg, store)
    current = cfg.to_dict()
    previous = _read_recorded(store)
    if previous is None:
        _check_manifests(store, cfg)
    else:
        # compared without default-valued keys: a key added by a newer version of the package
        # (at a default that keeps the old behaviour) is no change
        before, now = computational(previous), computational(current)
        changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        if changed and _has_outputs(store):
            key = changed[0]
            raise StoreError(
                f"run {cfg.run_id!r} in {store.uri()} was made with a different config "
                f"({key}: {previous.get(key)!r} -> {current.get(key)!r}); use a new run_id or "
                "delete the run folder")
        if not changed and _same_operational(previous, current):
            return store
    if write:
        record = {**without_secrets(current),
                  "_provenance": {**provenance(), "config_hash": config_hash(current)}}
        store.write_text(layout.CONFIG, yaml.safe_dump(record, sort_keys=False))
    return store


def require_run(cfg: Config, store: Store) -> None:
    """``StoreError`` when ``store`` (the run folder) is empty or absent: a typo in ``run_id``
    or ``store``; the message lists the runs that do exist there."""
    if store.listdir(""):
        return
    parent = open_store(cfg.store, cfg.storage_options)
    runs = list_runs(parent)
    if runs:
        shown = ", ".join(runs[:SHOWN_RUNS])
        more = f" and {len(runs) - SHOWN_RUNS} more" if len(runs) > SHOWN_RUNS else ""
        there = f"the run(s) there: {shown}{more}"
    elif not parent.bucket_exists():
        bucket = parent.root.split("/", 1)[0]
        raise StoreError(f"no run {cfg.run_id!r} under {parent.uri()}: bucket {bucket!r} does "
                         "not exist; fix the store URL")
    elif parent.is_local and not parent.exists(""):
        there = "that folder does not exist"
    else:
        there = "it holds no run folder"
    raise StoreError(f"no run {cfg.run_id!r} under {parent.uri()}: {there}; check run_id "
                     "(--run-id) and store (--store)")


def list_runs(parent: Store) -> list[str]:
    """Names of the run folders (those with a ``config.yml``) directly under ``parent``."""
    from concurrent.futures import ThreadPoolExecutor

    names = parent.listdir("")[:MAX_LISTED]
    if not names:
        return []
    with ThreadPoolExecutor(min(16, len(names))) as pool:
        found = list(pool.map(lambda n: parent.exists(f"{n}/{layout.CONFIG}"), names))
    return [name for name, ok in zip(names, found) if ok]


def _read_recorded(store: Store) -> dict | None:
    if not store.exists(layout.CONFIG):
        return None
    try:
        data = yaml.safe_load(store.read_text(layout.CONFIG))
    except (yaml.YAMLError, UnicodeDecodeError):
        log.info(f"{store.uri(layout.CONFIG)} is damaged (not valid YAML); checking the stage "
                 "manifests instead and writing it anew")
        return None
    if not isinstance(data, dict):
        log.info(f"{store.uri(layout.CONFIG)} is not a config; checking the stage manifests "
                 "instead and writing it anew")
        return None
    return data


def _same_operational(previous: dict, current: dict) -> bool:
    safe = without_secrets(current)
    return all(previous.get(k) == safe.get(k) for k in OPERATIONAL_KEYS if k in safe)


def _check_manifests(store: Store, cfg: Config) -> None:
    """Without config.yml, the stage manifests still say which config made the outputs."""
    from hybrid.store.partitions import read_manifest

    expected = config_hash(cfg.to_dict())
    for folder in STAGE_FOLDERS:
        manifest = read_manifest(store, folder)
        recorded = ((manifest or {}).get("stamp") or {}).get("config")
        if recorded and recorded != expected:
            raise StoreError(
                f"run {cfg.run_id!r} in {store.uri()} has no readable config.yml, and its "
                f"{folder}/ stage was made with a different config (hash {recorded} vs "
                f"{expected}); use a new run_id or delete the run folder")


def without_secrets(data: dict[str, Any]) -> dict[str, Any]:
    """The config with only the allow-listed, non-secret storage options."""
    options = data.get("storage_options") or {}
    kept = {k: _no_password(v) for k, v in options.items() if k in SAFE_STORAGE_OPTIONS}
    client = options.get("client_kwargs")
    if isinstance(client, dict):
        safe_client = {k: _no_password(v) for k, v in client.items() if k in SAFE_CLIENT_KWARGS}
        if safe_client:
            kept["client_kwargs"] = safe_client
    return {**data, "storage_options": kept}


def _no_password(value: Any) -> Any:
    """An endpoint URL without its ``user:password@`` (the rest of it is worth keeping)."""
    return redact(value) if isinstance(value, str) else value


def _has_outputs(store: Store) -> bool:
    """Whether a run holds anything computed; one that failed before writing anything (a typo in
    ``basins``, a wrong ``dataset``) may have its config fixed and rerun under the same id."""
    store.invalidate()
    ignorable = {layout.CONFIG, layout.TIMINGS, layout.RUN_LOG, layout.LOCK}
    return any(name not in ignorable for name in store.listdir(""))


def load_run_config(store: Store, storage_options: dict | None = None) -> Config:
    """The config a run was made with, for commands that only name the run folder.

    The recorded config holds no credentials: those of the store it was opened with are used.
    """
    if not store.exists(layout.CONFIG):
        raise StoreError(f"{store.uri(layout.CONFIG)} not found: is {store.uri()} a run folder?")
    try:
        data = yaml.safe_load(store.read_text(layout.CONFIG))
    except yaml.YAMLError:
        raise StoreError(f"{store.uri(layout.CONFIG)}: not valid YAML; restore it, or rerun "
                         "the run's own config to rewrite it") from None
    if not isinstance(data, dict):
        raise StoreError(f"{store.uri(layout.CONFIG)}: not a run config")
    data["storage_options"] = {**(data.get("storage_options") or {}),
                               **(storage_options if storage_options is not None
                                  else store.storage_options)}
    return config_from_dict(data)


# ------------------------------------------------------------------------------- timings
def record_time(store: Store, stage: str, seconds: float, **extra) -> None:
    """Wall time per stage, kept in the run so cost comparisons come from the run itself."""
    timings = read_timings(store)
    timings[stage] = {"seconds": round(seconds, 3), **extra}
    store.write_json(layout.TIMINGS, timings)


def read_timings(store: Store) -> dict:
    if not store.exists(layout.TIMINGS):
        return {}
    try:
        timings = store.read_json(layout.TIMINGS)
    except StoreError as err:
        log.info(f"{err}; stage times start afresh")
        return {}
    return timings if isinstance(timings, dict) else {}
