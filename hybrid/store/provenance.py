"""What made a run: package version, git commit, and a hash of the config that decides results.

Recorded in ``config.yml`` and in every stage manifest and partition, so a run folder says which
code and which settings produced each output, and so a rerun with other settings is refused even
when ``config.yml`` itself is gone.
"""

from __future__ import annotations

import functools
import hashlib
import json
import platform
import subprocess
from pathlib import Path
from typing import Any

import hybrid

#: keys that say where and how fast a run goes, not what it computes: they may change between
#: reruns (resuming on a bigger cluster, with more training time, with the data or the base
#: model moved: the model itself is identified by its checkpoint's sha256)
OPERATIONAL_KEYS = frozenset({"run_id", "store", "storage_options", "resources",
                              "max_train_minutes", "num_threads", "device", "data_dir",
                              "basin_file", "base_run"})


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """The commit of the package's source tree ("+dirty" with local changes), or "unknown"
    for an installed wheel."""
    root = Path(hybrid.__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return "unknown"
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"],
                                capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                "--untracked-files=no", "--", "hybrid"],
                               capture_output=True, text=True, timeout=10)
        return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance() -> dict[str, str]:
    return {"hybrid_version": hybrid.__version__, "git_commit": git_commit(),
            "python": platform.python_version()}


def computational(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a config (as a plain dict) that decides what a run computes, without the
    keys that hold their default value: a newer version of the package that adds a key (with
    a default that keeps the old behaviour) must not turn every existing run into "a different
    config"."""
    from hybrid.config import default_config_dict

    kept = {k: v for k, v in config.items() if k not in OPERATIONAL_KEYS and k != "_provenance"}
    return _without_defaults(kept, default_config_dict())


def _without_defaults(values: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        default = defaults.get(key, _MISSING)
        if isinstance(value, dict) and isinstance(default, dict):
            nested = _without_defaults(value, default)
            if nested:
                out[key] = nested
        elif value != default:
            out[key] = value
    return out


_MISSING = object()


def config_hash(config: dict[str, Any]) -> str:
    """A short, stable hash of the computational part of a config."""
    text = json.dumps(computational(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
