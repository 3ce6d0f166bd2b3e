"""Content hashes of a run's single files (checkpoints, history, summary, aggregate).

Partitions are vouched for by their stage's manifest (``hybrid.store.partitions``); the files
that are not partitions are recorded in the ``files`` section of their own folder's
``_manifest.json``: size, CRC-32 of the bytes written (taken as they are written, no second read)
and the store's version. A reader that trusts such a file compares its hash first, so a
checkpoint or summary damaged in place is found where it would otherwise be used silently: a
checkpoint with a flipped bit still loads, and an aggregate table still reads.

These files are small next to the partitions (one per run, not one per catchment), so they are
hashed whenever they are read rather than trusted by version.
"""

from __future__ import annotations

import posixpath
from typing import Any

from hybrid.errors import StoreError
from hybrid.logs import logger
from hybrid.store import layout
from hybrid.store.storage import Store, content_hash

log = logger()

FILES = "files"


def _manifest_key(key: str) -> str:
    return layout.manifest_key(posixpath.dirname(key) or ".")


def _read(store: Store, key: str) -> dict[str, Any]:
    manifest_key = _manifest_key(key)
    if not store.exists(manifest_key):
        return {}
    try:
        manifest = store.read_json(manifest_key)
    except StoreError:
        return {}  # a damaged manifest vouches for nothing: files are rewritten and recorded
    return manifest if isinstance(manifest, dict) else {}


def recorded(store: Store, key: str) -> dict[str, Any] | None:
    """What the folder's manifest records of ``key`` (None when nothing is recorded)."""
    entry = (_read(store, key).get(FILES) or {}).get(posixpath.basename(key))
    return entry if isinstance(entry, dict) else None


def record(store: Store, key: str, data: bytes, version: str = "") -> None:
    """Record ``key``'s hash in its folder's manifest (the rest of the manifest is kept)."""
    manifest = _read(store, key)
    entries = dict(manifest.get(FILES) or {})
    entry = {"bytes": len(data), "hash": content_hash(data), "version": version}
    if entries.get(posixpath.basename(key)) == entry:
        return
    entries[posixpath.basename(key)] = entry
    store.write_json(_manifest_key(key), {**manifest, FILES: dict(sorted(entries.items()))})


def write(store: Store, key: str, data: bytes) -> None:
    """Write a file and record its hash (the manifest after the file: written last)."""
    record(store, key, data, store.write_bytes(key, data))


def mismatch(store: Store, key: str, data: bytes) -> str | None:
    """Why ``data`` (read from ``key``) is not the file that was recorded; None when it is, or
    when nothing was recorded (a run from before hashes were kept)."""
    entry = recorded(store, key)
    if not entry or not entry.get("hash"):
        return None
    digest = content_hash(data)
    if digest != entry["hash"]:
        return (f"{store.uri(key)}: its content hash is {digest}, not the {entry['hash']} "
                "recorded (damaged or rewritten in place)")
    return None


def read_checked(store: Store, key: str) -> bytes:
    """The bytes of ``key``, or a one-line ``StoreError`` when they are not the recorded ones."""
    data = store.read_bytes(key)
    reason = mismatch(store, key, data)
    if reason:
        raise StoreError(reason)
    return data


def write_if_changed(store: Store, key: str, data: bytes, stage: str) -> bool:
    """Write ``key`` unless it already holds ``data``; a file found damaged is said in one
    line. Returns whether it was written."""
    if store.exists(key):
        current = store.read_bytes(key)
        if current == data:
            if recorded(store, key) is None:
                record(store, key, data)
            return False
        reason = mismatch(store, key, current)
        if reason:
            log.info(f"{stage}: rewriting {reason}")
    write(store, key, data)
    return True


def update_manifest(store: Store, folder: str, fields: dict[str, Any]) -> None:
    """Set ``fields`` of a folder's manifest, keeping the file hashes recorded in it."""
    key = layout.manifest_key(folder)
    kept = _read(store, f"{folder}/x").get(FILES)
    store.write_json(key, {**fields, **({FILES: kept} if kept else {})})
