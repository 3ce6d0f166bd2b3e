"""Which catchment partitions of a run can be trusted, and the manifests that say so.

A partition is *done* only if it is the file its stage promised: present, complete, unchanged,
and made from this run's config, inputs and model. Every partition carries a *stamp* in its
Parquet footer (the stage, the config hash, and the lineage: e.g. the checkpoint it was encoded
with), and every stage ends by writing ``<folder>/_manifest.json`` with, for each partition it
vouches for: its size, row count, content hash (CRC-32 of the bytes written, computed as they
are written), the version the store gave it (local mtime, S3 ETag) and the model it was made from.

Checking is cheap where it can be and thorough where it must be:

* after a finished stage, one recursive listing of the folder (a request per 1,000 objects on
  S3) gives every partition's size and version. A partition whose size and version are the ones
  recorded has not been written since its hash was taken: it is trusted without being read. One
  whose version changed (rewritten, damaged in place, copied without its timestamps) is read
  and its hash compared: same bytes, kept (and its new version recorded); other bytes, redone;
* after an interrupted stage (no manifest yet) every partition present is read in parallel:
  a file cut short has no footer, a stamp from another config is refused, and the hash of what
  was read goes into the new manifest;
* every Parquet read checks the CRC of each data page (``hybrid.store.storage``): damage that
  keeps the size and the version (a bad disk, a timestamp put back by hand) fails the stage
  that reads the file (``CorruptPartition``), which deletes it so the next run rebuilds it.

Hashing every partition on every resume was measured instead (``benchmarks/bench_resume.py``,
BENCHMARKS.md section 6): it reads the whole run folder (for ``encoded/`` at 10,000 catchments,
gigabytes) each time a stage resumes, where the listing reads none of it.
"""

from __future__ import annotations

import datetime as dt
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa

from hybrid.errors import CorruptPartition, StoreError
from hybrid.logs import logger
from hybrid.store import layout
from hybrid.store.provenance import provenance
from hybrid.store.storage import Store, content_hash, parquet_format, table_bytes

log = logger()

STAMP_KEY = "hybrid.stamp"
INFO_KEY = "hybrid.info"
#: parallel footer reads when an unfinished stage is resumed (S3 latency, not CPU, bounds it)
FOOTER_THREADS = 32


def write_partition(store: Store, folder: str, gauge_id: str, table: pa.Table | pd.DataFrame,
                    stamp: dict[str, str], info: dict[str, str] | None = None
                    ) -> dict[str, int]:
    """Write one catchment's partition with its stamp; returns what the manifest records.

    ``info`` goes into the footer beside the stamp without deciding whether the partition is
    current (e.g. the data folder it was read from). The file carries its own ``gauge_id`` as a
    text column (``hybrid.store.layout`` says why).
    """
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    key = layout.partition_key(folder, gauge_id)
    table = with_gauge_id(table, gauge_id, store.uri(key))
    metadata = {STAMP_KEY: json.dumps(stamp, sort_keys=True)}
    if info:
        metadata[INFO_KEY] = json.dumps(info, sort_keys=True)
    data = table_bytes(table, metadata)
    version = store.write_bytes(key, data)
    return file_record(data, version, rows=table.num_rows, model=stamp.get("model"))


def file_record(data: bytes, version: str, **extra: Any) -> dict[str, Any]:
    """What a manifest records of a file just written: size, content hash, store version."""
    record = {"bytes": len(data), "hash": content_hash(data), "version": version}
    record.update({k: v for k, v in extra.items() if v is not None})
    return record


def with_gauge_id(table: pa.Table, gauge_id: str, where: str) -> pa.Table:
    """``table`` with a text ``gauge_id`` column first; one already there must name the same
    catchment on every row (a partition holds one catchment, whatever it was built from)."""
    key = layout.PARTITION_KEY
    if key in table.column_names:
        column = table.column(key)
        text = pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
        if not text or not _all_equal(column, gauge_id):
            raise ValueError(f"{where}: its {key!r} column must be the text {gauge_id!r} on "
                             "every row")
        table = table.drop_columns([key])
    return table.add_column(0, pa.field(key, pa.string()),
                            pa.repeat(pa.scalar(gauge_id, pa.string()), table.num_rows))


def _all_equal(column: pa.ChunkedArray, gauge_id: str) -> bool:
    import pyarrow.compute as pc

    return column.null_count == 0 and pc.all(pc.equal(column, gauge_id)).as_py() is not False


def read_partition(store: Store, folder: str, gauge_id: str,
                   columns: list[str] | None = None) -> pa.Table:
    """One catchment's partition without its ``gauge_id`` column; ``CorruptPartition`` (naming
    the file) if it is damaged or holds another catchment's rows.

    A run folder written before the id was stored in the files is read as it is.
    """
    key = layout.partition_key(folder, gauge_id)
    wanted = None if columns is None else [c for c in columns if c != layout.PARTITION_KEY]
    try:
        table = store.read_table(key, None if wanted is None else [layout.PARTITION_KEY, *wanted])
    except CorruptPartition:
        raise
    except StoreError:
        legacy = layout.legacy_partition_key(folder, gauge_id)
        if store.exists(key) or not store.exists(legacy):
            raise
        return store.read_table(legacy, wanted)
    if layout.PARTITION_KEY not in table.column_names \
            or not _all_equal(table.column(layout.PARTITION_KEY), gauge_id):
        raise CorruptPartition(f"{store.uri(key)}: does not hold catchment {gauge_id!r}'s rows "
                               "(copied from another catchment?); it is deleted and rebuilt on "
                               "the next run", key)
    return table.drop_columns([layout.PARTITION_KEY])


def locate(store: Store, folder: str, gauge_id: str) -> str | None:
    """The key of a catchment's partition in either layout, or None when it has none."""
    for key in (layout.partition_key(folder, gauge_id),
                layout.legacy_partition_key(folder, gauge_id)):
        if store.exists(key):
            return key
    return None


def read_folder(store: Store, folder: str, gauges: list[str] | None = None) -> pa.Table:
    """Every partition of ``folder`` (or those of ``gauges``) as one table with a text
    ``gauge_id`` column, in one ``pyarrow.dataset`` read per layout present."""
    import pyarrow.dataset as ds

    current, legacy = _scan(store, folder)
    wanted = set(current) | set(legacy) if gauges is None else set(gauges)
    fs, parquet = store.arrow_filesystem(), parquet_format()  # page CRCs checked as read
    tables = []
    paths = [store.path(layout.partition_key(folder, g)) for g in sorted(wanted & set(current))]
    old = [store.path(layout.legacy_partition_key(folder, g))
           for g in sorted(wanted & set(legacy) - set(current))]
    with store.errors(folder, "parse"):
        if paths:
            tables.append(ds.dataset(paths, format=parquet, filesystem=fs).to_table())
        if old:
            tables.append(ds.dataset(old, format=parquet, filesystem=fs,
                                     partitioning=layout.partitioning(),
                                     partition_base_dir=store.path(folder)).to_table())
    if not tables:
        return pa.table({layout.PARTITION_KEY: pa.array([], pa.string())})
    return pa.concat_tables(tables, promote_options="permissive")


def table_json(table: pa.Table, name: str = INFO_KEY) -> dict[str, Any]:
    """A JSON entry of the footer of the partition ``table`` was read from, {} when absent."""
    return _parse_json((table.schema.metadata or {}).get(name.encode()))


def read_footer_json(store: Store, key: str, name: str = STAMP_KEY) -> dict[str, Any]:
    """A JSON entry of a partition's footer (its stamp or info), {} when absent."""
    return _parse_json((store.read_footer(key).metadata or {}).get(name.encode()))


def _parse_json(raw: bytes | None) -> dict[str, Any]:
    if raw is None:
        return {}
    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


# ---------------------------------------------------------------------------------- manifests
def write_manifest(store: Store, folder: str, stage: str, stamp: dict[str, str],
                   catchments: dict[str, dict], skipped: dict[str, str] | None = None,
                   failed: dict[str, str] | None = None, **extra: Any) -> dict:
    """The stage's word that it went over every catchment: written last.

    Not rewritten when it would say the same again (a rerun with nothing to do writes nothing,
    so a finished run can be read from a read-only store).
    """
    manifest = {
        "stage": stage,
        "folder": folder,
        "stamp": stamp,
        "provenance": provenance(),
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "catchments": dict(sorted(catchments.items())),
        "skipped": dict(sorted((skipped or {}).items())),
        "failed": dict(sorted((failed or {}).items())),
        **extra,
    }
    previous = read_manifest(store, folder, quiet=True)
    volatile = ("provenance", "finished_at")
    if previous is not None and {k: v for k, v in previous.items() if k not in volatile} \
            == json.loads(json.dumps({k: v for k, v in manifest.items() if k not in volatile},
                                     default=str)):
        return previous
    store.write_json(layout.manifest_key(folder), manifest)
    return manifest


def read_manifest(store: Store, folder: str, quiet: bool = False) -> dict | None:
    """A stage's manifest, or None when absent or damaged (then every partition is checked).

    Every catchment id in it is validated before it can be used in a path.
    """
    key = layout.manifest_key(folder)
    if not store.exists(key):
        return None
    try:
        manifest = store.read_json(key)
    except StoreError as err:
        if not quiet:
            log.info(f"{err}; checking every partition of {folder} instead")
        return None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("catchments"), dict):
        if not quiet:
            log.info(f"{store.uri(key)} is not a stage manifest; checking every partition of "
                     f"{folder} instead")
        return None
    where = store.uri(key)
    for section in ("catchments", "skipped", "failed"):
        entries = manifest.get(section) or {}
        if not isinstance(entries, dict):
            raise StoreError(f"{where}: {section!r} is not a mapping; delete the manifest and "
                             "rerun to rebuild it")
        for gauge_id in entries:
            try:
                layout.check_gauge_id(gauge_id, f"{where} ({section})")
            except ValueError as err:
                raise StoreError(f"{err}; the manifest was altered: delete it and rerun") \
                    from None
    return manifest


def require_manifest(store: Store, folder: str, command: str) -> dict:
    manifest = read_manifest(store, folder)
    if manifest is None:
        raise StoreError(f"{store.uri(layout.manifest_key(folder))} not found: run "
                         f"`hybrid {command}` first")
    return manifest


# ---------------------------------------------------------------------------------- checking
@dataclass
class Verdict:
    """What a folder holds for the catchments a stage is about to run."""

    done: dict[str, dict[str, int]] = field(default_factory=dict)
    #: catchments whose partition must be (re)made, with the reason when one was expected
    redo: dict[str, str] = field(default_factory=dict)
    todo: list[str] = field(default_factory=list)
    #: decisions of an earlier finished pass that still hold
    skipped: dict[str, str] = field(default_factory=dict)


def present_partitions(store: Store, folder: str) -> dict[str, int]:
    """gauge id -> size of every catchment partition under ``folder`` (either layout)."""
    current, legacy = _scan(store, folder)
    return {g: size for g, (size, _) in {**legacy, **current}.items()}


def _scan(store: Store, folder: str
          ) -> tuple[dict[str, tuple[int, str]], dict[str, tuple[int, str]]]:
    """(``<id>/part-0.parquet``, old ``gauge_id=<id>/part-0.parquet``) as (size, version), in
    one listing."""
    current: dict[str, tuple[int, str]] = {}
    legacy: dict[str, tuple[int, str]] = {}
    old = f"{layout.PARTITION_KEY}="
    for key, found in store.listing(folder).items():
        parts = key[len(folder) + 1:].split("/")
        if len(parts) != 2 or parts[1] != layout.PARTITION_FILE:
            continue
        name = parts[0]
        into = legacy if name.startswith(old) else current
        gauge_id = name.removeprefix(old)
        if layout.is_gauge_id(gauge_id):
            into[gauge_id] = found
    return current, legacy


def migrate_legacy(store: Store, folder: str, legacy: dict[str, tuple[int, str]],
                   manifest: dict | None) -> dict | None:
    """Move the partitions of a folder written before the id was stored in the files into this
    layout, once: each file gains its ``gauge_id`` column and keeps its stamp, so nothing is
    recomputed; an unreadable one is deleted and so redone. Returns the manifest with the moved
    files' records (size, hash, version), written at once so that an interruption does not make
    them look replaced."""
    log.info(f"{store.uri(folder)}: moving {len(legacy)} partition(s) from the old layout "
             f"{layout.PARTITION_KEY}=<id>/ to <id>/ with a text {layout.PARTITION_KEY} column "
             "(once; nothing is recomputed)")

    def one(gauge_id: str) -> tuple[str, dict | None]:
        old = layout.legacy_partition_key(folder, gauge_id)
        try:
            table = store.read_table(old)
        except CorruptPartition:
            record = None
        else:
            key = layout.partition_key(folder, gauge_id)
            data = table_bytes(with_gauge_id(table, gauge_id, store.uri(key)))
            record = file_record(data, store.write_bytes(key, data), rows=table.num_rows)
        store.delete(layout.hive_dir(folder, gauge_id), recursive=True)
        return gauge_id, record

    with ThreadPoolExecutor(min(FOOTER_THREADS, len(legacy))) as pool:
        moved = dict(pool.map(one, sorted(legacy)))
    if not manifest:
        return manifest
    entries = dict(manifest["catchments"])
    for gauge_id, record in moved.items():
        entry = entries.get(gauge_id)
        if record is not None and entry is not None \
                and int(entry.get("bytes", -1)) == legacy[gauge_id][0]:
            entries[gauge_id] = {**entry, **record}
    manifest = {**manifest, "catchments": entries}
    store.write_json(layout.manifest_key(folder), manifest)
    return manifest


def verify(store: Store, folder: str, gauges: list[str], stamp: dict[str, str],
           known: dict[str, dict[str, int]] | None = None,
           manifest: dict | None = None) -> Verdict:
    """Sort ``gauges`` into done and to-do for a stage whose partitions carry ``stamp``.

    ``known`` are partitions this process wrote or checked moments ago (size, hash, version),
    which need no second look. ``manifest`` defaults to the folder's own.
    """
    manifest = read_manifest(store, folder) if manifest is None else manifest
    _refuse_other_config(store, folder, manifest, stamp)
    present, legacy = _scan(store, folder)
    if legacy:
        manifest = migrate_legacy(store, folder, legacy, manifest)
        present, _ = _scan(store, folder)
    same = bool(manifest) and manifest.get("stamp") == stamp
    trusted = manifest["catchments"] if same else {}
    known = known or {}
    verdict = Verdict()
    deep, rehash = [], []
    for gauge_id in gauges:
        found = present.get(gauge_id)
        expected = known.get(gauge_id) or trusted.get(gauge_id)
        if found is None:
            if expected is not None:
                verdict.redo[gauge_id] = "its partition is missing"
            elif same and gauge_id in manifest["skipped"]:
                verdict.skipped[gauge_id] = manifest["skipped"][gauge_id]
                continue
            verdict.todo.append(gauge_id)
        elif expected is None:
            deep.append((gauge_id, found))
        else:
            reason = _mismatch(expected, found, stamp)
            if reason is None:
                verdict.done[gauge_id] = dict(expected)
            elif reason == "":
                rehash.append((gauge_id, found, expected))
            else:
                verdict.redo[gauge_id] = reason
                verdict.todo.append(gauge_id)
    outcomes = _check_footers(store, folder, deep, stamp) + _rehash(store, folder, rehash)
    for gauge_id, outcome in outcomes:
        if isinstance(outcome, str):
            verdict.redo[gauge_id] = outcome
            verdict.todo.append(gauge_id)
        else:
            verdict.done[gauge_id] = outcome
    order = {g: i for i, g in enumerate(gauges)}
    verdict.todo.sort(key=order.__getitem__)
    return verdict


def _mismatch(expected: dict, found: tuple[int, str], stamp: dict[str, str]) -> str | None:
    """Why a recorded partition cannot be trusted; "" when only reading it can tell."""
    size, version = found
    if int(expected.get("bytes", -1)) != size:
        return (f"its partition has {size} bytes, not the {expected.get('bytes')} recorded "
                "(cut short or replaced)")
    if stamp.get("model") and expected.get("model", stamp["model"]) != stamp["model"]:
        return (f"its partition was made from another model ({expected.get('model')}, not "
                f"{stamp['model']})")
    if not expected.get("hash") or not version or expected.get("version") != version:
        return ""  # written since it was recorded (or recorded without a hash): read it
    return None


def _rehash(store: Store, folder: str, items: list[tuple[str, tuple[int, str], dict]]
            ) -> list[tuple[str, Any]]:
    """Partitions whose version changed since their hash was recorded: read and compare."""
    def one(item: tuple[str, tuple[int, str], dict]) -> tuple[str, Any]:
        gauge_id, (_, version), expected = item
        key = layout.partition_key(folder, gauge_id)
        digest = content_hash(store.read_bytes(key))
        if expected.get("hash") and digest != expected["hash"]:
            return gauge_id, (f"its content hash is {digest}, not the {expected['hash']} "
                              "recorded (damaged or rewritten in place)")
        return gauge_id, {**expected, "hash": digest, "version": version}

    if not items:
        return []
    with ThreadPoolExecutor(min(FOOTER_THREADS, len(items))) as pool:
        return list(pool.map(one, items))


def _refuse_other_config(store: Store, folder: str, manifest: dict | None,
                         stamp: dict[str, str]) -> None:
    if not manifest:
        return
    recorded = (manifest.get("stamp") or {}).get("config")
    if recorded and recorded != stamp.get("config"):
        raise StoreError(
            f"{store.uri(layout.manifest_key(folder))} was made with a different config "
            f"(hash {recorded} vs {stamp.get('config')} now); use a new run_id, or delete the "
            "run folder to start over")


def _check_footers(store: Store, folder: str, items: list[tuple[str, tuple[int, str]]],
                   stamp: dict[str, str]) -> list[tuple[str, Any]]:
    """Partitions no manifest vouches for: each is read whole (its hash goes into the new
    manifest), its footer parsed and its stamp compared."""
    def one(item: tuple[str, tuple[int, str]]) -> tuple[str, Any]:
        gauge_id, (_, version) = item
        key = layout.partition_key(folder, gauge_id)
        data = store.read_bytes(key)
        try:
            footer = store.read_footer(key, data)
        except CorruptPartition as err:
            return gauge_id, f"its partition is unreadable ({_short(err)})"
        found = json.loads((footer.metadata or {}).get(STAMP_KEY.encode(), b"{}") or b"{}")
        if found.get("config") != stamp.get("config"):
            raise StoreError(
                f"{store.uri(key)} was written by a run with a different config (hash "
                f"{found.get('config') or 'none'} vs {stamp.get('config')} now); use a new "
                "run_id, or delete the run folder to start over")
        if found != stamp:
            changed = sorted(k for k in set(found) | set(stamp) if found.get(k) != stamp.get(k))
            return gauge_id, f"its partition was made from other inputs ({', '.join(changed)})"
        info = json.loads((footer.metadata or {}).get(INFO_KEY.encode(), b"{}") or b"{}")
        return gauge_id, {**info, **file_record(data, version, rows=footer.num_rows,
                                                model=stamp.get("model"))}

    if not items:
        return []
    with ThreadPoolExecutor(min(FOOTER_THREADS, len(items))) as pool:
        return list(pool.map(one, items))


def _short(err: BaseException) -> str:
    text = str(err)
    return text.split("(", 1)[1].split(")", 1)[0] if "(" in text else text
