"""One writer per run: the run's lock, on a local folder and on S3 (moto), and two real runs.

A held lock stops a second writer in one line naming its holder (exit 2); a lock whose holder is
gone (same host, dead pid; or an expired lease) is taken over with one log line; ``--break-lock``
takes over any lock. Two ``hybrid run`` processes started together on one run id never leave
partitions of two models.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hybrid.cli import main
from hybrid.errors import StoreError
from hybrid.store import layout, lock, partitions
from hybrid.store.runs import run_store
from hybrid.store.storage import Store

REPO = Path(__file__).resolve().parents[1]


def _holder(**changes) -> dict:
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=5)
    return {"host": "elsewhere", "pid": 4242, "command": "hybrid run",
            "since": "2026-01-01T00:00:00+00:00", "token": "theirs",
            "expires": later.isoformat(timespec="seconds"), **changes}


def test_a_held_lock_refuses_a_second_writer_and_is_released(any_store) -> None:
    url, options = any_store
    store = Store(url, options).child("r")
    first = lock.acquire(store, "hybrid run")
    try:
        held = json.loads(store.read_bytes(layout.LOCK))
        assert held["pid"] == os.getpid() and held["host"] == socket.gethostname()
        # another process's view: the registry of this one is not consulted
        with pytest.raises(StoreError) as excinfo:
            lock._held.pop(store.url)
            try:
                lock.acquire(store, "hybrid decode")
            finally:
                lock._held[store.url] = first
        message = str(excinfo.value)
        assert "\n" not in message and "is in use by `hybrid run` on host" in message
        assert f"pid {os.getpid()}" in message and "--break-lock" in message
    finally:
        first.release()
    assert not store.exists(layout.LOCK)


def _write_lock(store: Store, holder: dict) -> None:
    store.write_bytes(layout.LOCK, json.dumps(holder).encode())


def test_a_second_command_on_a_held_run_exits_2_naming_the_holder(tiny_config, tmp_path,
                                                                  capsys) -> None:
    cfg = tiny_config(str(tmp_path / "s"), epochs=1)
    config = tmp_path / "run.yml"
    config.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None))
    store = run_store(cfg)
    _write_lock(store, _holder())
    capsys.readouterr()
    assert main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: run ")
    assert "in use by `hybrid run` on host elsewhere, pid 4242, since 2026-01-01" in err[0]
    assert "--break-lock" in err[0] and str(store.uri(layout.LOCK)) in err[0]
    assert not store.exists(layout.CONFIG)  # nothing was written
    # --break-lock takes it over, says so, and the run goes on
    assert main(["prepare", "--config", str(config), "--break-lock"]) == 0
    assert "taking over the lock" in capsys.readouterr().err
    assert not store.exists(layout.LOCK)


@pytest.mark.parametrize("holder", [
    {"host": socket.gethostname(), "pid": 2**22 + 12345},  # this host, a pid that is gone
    {"expires": "2020-01-01T00:00:00+00:00"},               # another host, lease expired
])
def test_a_stale_lock_is_taken_over_with_one_line(any_store, holder, capsys) -> None:
    url, options = any_store
    store = Store(url, options).child("r")
    _write_lock(store, _holder(**holder))
    capsys.readouterr()
    mine = lock.acquire(store, "hybrid run")
    err = capsys.readouterr().err
    assert err.count("taking over the lock") == 1
    assert "is gone" in err or "lease expired" in err
    assert json.loads(store.read_bytes(layout.LOCK))["token"] == mine.holder["token"]
    mine.release()


def test_the_lock_is_released_on_an_error(tiny_config, tmp_path) -> None:
    from hybrid.execution.session import Session

    cfg = tiny_config(str(tmp_path / "s"), epochs=1)
    session = Session.open(cfg)
    store = session.store
    assert store.exists(layout.LOCK)
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt:
        session.close()
    assert not store.exists(layout.LOCK)


def test_two_runs_at_once_never_leave_outputs_of_two_models(tiny_config, tmp_path) -> None:
    cfg = tiny_config(str(tmp_path / "s"), epochs=2)
    config = tmp_path / "run.yml"
    config.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    runs = [subprocess.Popen([sys.executable, "-m", "hybrid.cli", "run", "--config",
                              str(config)], env=env, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in runs]
    codes = sorted(code for code, _ in results)
    assert codes in ([0, 0], [0, 2]), results
    if codes == [0, 2]:
        refused = next(err for code, err in results if code == 2)
        assert "is in use by `hybrid run`" in refused
    store = run_store(cfg)
    sha = __import__("hashlib").sha256(store.read_bytes(layout.FINAL)).hexdigest()
    for folder in (layout.ENCODED, layout.PREDICTIONS, layout.METRICS):
        for gauge in partitions.present_partitions(store, folder):
            key = layout.partition_key(folder, gauge)
            assert partitions.read_footer_json(store, key)["model"] == sha
        manifest = partitions.read_manifest(store, folder)
        assert {r["model"] for r in manifest["catchments"].values()} == {sha}
    assert not store.exists(layout.LOCK)
