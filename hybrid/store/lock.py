"""One writer per run: a lock object in the run folder, taken by every command that writes.

Two commands writing one run at once would each train, overwrite one ``final.pt`` and leave
partitions made from two models, which later runs trust. So a writing ``Session`` first creates
``<run>/_lock.json`` *exclusively*, and deletes it when it closes (also on an error or Ctrl-C):

* local store: ``open(O_CREAT | O_EXCL)``, atomic on every POSIX filesystem (NFS v3+ included);
* S3: a conditional put (``If-None-Match: *``), which AWS S3 and moto honour. A store that
  ignored the condition would let both writes succeed; the lock is therefore read back and must
  hold this holder's token. That read-back cannot catch two writers whose writes and read-backs
  interleave exactly (A writes, A reads, B writes, B reads): on such a store the lock narrows
  the window but cannot close it.

The lock says who holds it (host, pid, command, since when) and until when: its holder renews
the lease every ``LEASE_SECONDS / 3`` from a daemon thread. A lock is *stale*, and is taken
over with one log line, when its holder is on this host and its process is gone, or when its
lease has expired (the holder's machine died). Any other held lock stops the command in one
line (exit 2) saying who holds it and how to take it over: ``--break-lock``, or deleting the
lock object, once you know that holder is gone.
"""

from __future__ import annotations

import atexit
import datetime as dt
import json
import os
import socket
import threading
import uuid
from dataclasses import dataclass, field

from hybrid.errors import StoreError
from hybrid.logs import logger
from hybrid.store import layout
from hybrid.store.storage import Store

log = logger()

LOCK = layout.LOCK
#: a holder renews its lease three times per lease; a machine that died frees it after this
LEASE_SECONDS = 600.0

_held: dict[str, "RunLock"] = {}
_held_guard = threading.Lock()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass
class RunLock:
    store: Store
    holder: dict
    #: sessions of this process sharing the lock (stages called inside ``hybrid run``)
    users: int = 1
    _stop: threading.Event = field(default_factory=threading.Event)

    def _renew_forever(self) -> None:
        while not self._stop.wait(LEASE_SECONDS / 3):
            try:
                if _read(self.store).get("token") != self.holder["token"]:
                    return  # broken by someone else: never write over their lock
                self.holder["expires"] = (_now() + dt.timedelta(seconds=LEASE_SECONDS)
                                          ).isoformat(timespec="seconds")
                self.store.write_bytes(LOCK, json.dumps(self.holder).encode())
            except StoreError:
                continue  # a passing store outage: the lease has time to spare

    def release(self) -> None:
        if self._stop.is_set() and self.store.url not in _held:
            return  # never held (a read-only store), or released already
        with _held_guard:
            self.users -= 1
            if self.users > 0:
                return
            _held.pop(self.store.url, None)
        self._stop.set()
        try:
            if _read(self.store).get("token") == self.holder["token"]:
                self.store.delete(LOCK)
        except StoreError as err:
            log.info(f"warning: the run's lock was not removed ({err}); the next command takes "
                     "it over as stale")


def acquire(store: Store, command: str, break_lock: bool = False) -> RunLock:
    """The run's lock for this process (shared by its sessions), or a one-line ``StoreError``."""
    with _held_guard:
        mine = _held.get(store.url)
        if mine is not None:
            mine.users += 1
            return mine
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "command": command,
              "since": _now().isoformat(timespec="seconds"), "token": uuid.uuid4().hex,
              "expires": (_now() + dt.timedelta(seconds=LEASE_SECONDS)
                          ).isoformat(timespec="seconds")}
    for _ in range(2):
        created = store.create_exclusive(LOCK, json.dumps(holder).encode())
        if created is None:  # a read-only store: nothing can be written, so no one to exclude
            return RunLock(store, holder, _stop=_stopped())
        if created and _read(store).get("token") == holder["token"]:
            return _hold(store, holder)
        current = _read(store)
        reason = "you asked to break it (--break-lock)" if break_lock else _stale(current)
        if reason is None:
            raise StoreError(_held_message(store, current))
        log.info(f"taking over the lock {store.uri(LOCK)} of {_who(current)}: {reason}")
        store.delete(LOCK)
    raise StoreError(_held_message(store, _read(store)))


def _stopped() -> threading.Event:
    event = threading.Event()
    event.set()
    return event


def _hold(store: Store, holder: dict) -> RunLock:
    lock = RunLock(store, holder)
    with _held_guard:
        _held[store.url] = lock
    threading.Thread(target=lock._renew_forever, daemon=True, name="hybrid-lock").start()
    return lock


def _read(store: Store) -> dict:
    try:
        data = json.loads(store.read_bytes(LOCK)) if store.exists(LOCK) else {}
    except (StoreError, json.JSONDecodeError, UnicodeDecodeError):
        return {"unreadable": True}
    return data if isinstance(data, dict) else {"unreadable": True}


def _stale(current: dict) -> str | None:
    """Why the lock's holder is certainly gone, or None while it may be alive."""
    if not current:
        return "it was released meanwhile"
    if current.get("unreadable"):
        return None  # being written this instant, or damaged: only a person can tell
    try:
        if _now() > dt.datetime.fromisoformat(current["expires"]):
            return f"its lease expired at {current['expires']}"
    except (KeyError, TypeError, ValueError):
        return None
    if current.get("host") == socket.gethostname() and isinstance(current.get("pid"), int):
        try:
            os.kill(current["pid"], 0)
        except ProcessLookupError:
            return f"process {current['pid']} is gone"
        except PermissionError:
            return None  # alive, under another user
    return None


def _who(current: dict) -> str:
    if current.get("unreadable"):
        return "an unknown holder (the lock cannot be read)"
    return (f"`{current.get('command', '?')}` on host {current.get('host', '?')}, pid "
            f"{current.get('pid', '?')}, since {current.get('since', '?')}")


def _held_message(store: Store, current: dict) -> str:
    return (f"run {store.uri()} is in use by {_who(current)}; wait for it to finish, or if that "
            f"process is gone, rerun with --break-lock (or delete {store.uri(LOCK)})")


@atexit.register
def _release_all() -> None:
    """Locks of sessions that were never closed (a stage called on its own) go with the
    process, so its next command does not have to take them over."""
    for lock in list(_held.values()):
        lock.users = 1
        lock.release()
