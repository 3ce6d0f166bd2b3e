"""The run folder: ``<store>/<run_id>/`` with the resolved config that every stage reads back.

A run id (not a timestamp) names the folder, so rerunning the same config resumes instead of
starting over. Rerunning a run id with a config that changes what would be computed is refused:
mixing two models' outputs under one name is the one mistake a resumable run must never make.
"""

from __future__ import annotations

from hybrid.config import Config, config_from_dict
from hybrid.errors import StoreError
from hybrid.storage import Store, open_store

CONFIG_KEY = "config.yml"

# Keys that say where and how fast a run goes, not what it computes: they may change between
# reruns (e.g. resuming on a bigger cluster, or with more training time).
_OPERATIONAL = {"store", "storage_options", "resources", "max_train_minutes", "num_threads",
                "device", "data_dir"}


TIMINGS = "timings.json"


def record_time(store: Store, stage: str, seconds: float, **extra) -> None:
    """Wall time per stage, kept in the run so cost comparisons come from the run itself."""
    timings = store.read_json(TIMINGS) if store.exists(TIMINGS) else {}
    timings[stage] = {"seconds": round(seconds, 3), **extra}
    store.write_json(TIMINGS, timings)


def run_store(cfg: Config) -> Store:
    return open_store(cfg.store, cfg.storage_options).child(cfg.run_id)


def open_run(cfg: Config) -> Store:
    """The run's store, with the resolved config written (or checked against the one there)."""
    import yaml

    store = run_store(cfg)
    if store.exists(CONFIG_KEY):
        previous = yaml.safe_load(store.read_text(CONFIG_KEY)) or {}
        current = cfg.to_dict()
        changed = sorted(k for k in set(previous) | set(current)
                         if k not in _OPERATIONAL and previous.get(k) != current.get(k))
        if changed and _has_outputs(store):
            key = changed[0]
            raise StoreError(
                f"run {cfg.run_id!r} in {store.uri()} was made with a different config "
                f"({key}: {previous.get(key)!r} -> {current.get(key)!r}); "
                "use a new run_id or delete the run folder")
    store.write_text(CONFIG_KEY, yaml.safe_dump(_without_secrets(cfg.to_dict()), sort_keys=False))
    return store


#: storage_options entries that are credentials: never written into the (shared) run folder
_SECRETS = {"key", "secret", "token", "password", "aws_access_key_id", "aws_secret_access_key",
            "aws_session_token"}


def _without_secrets(data: dict) -> dict:
    def clean(options: dict) -> dict:
        return {k: clean(v) if isinstance(v, dict) else v
                for k, v in options.items() if k not in _SECRETS}

    return {**data, "storage_options": clean(data.get("storage_options") or {})}


def _has_outputs(store: Store) -> bool:
    """Whether a run holds anything computed; one that failed before writing anything (a typo in
    ``basins``, a wrong ``dataset``) may have its config fixed and rerun under the same id."""
    store.invalidate()
    return any(name not in (CONFIG_KEY, TIMINGS) for name in store.listdir(""))


def load_run_config(store: Store) -> Config:
    """The config a run was made with (remote workers read it instead of receiving it)."""
    import yaml

    return config_from_dict(yaml.safe_load(store.read_text(CONFIG_KEY)))
