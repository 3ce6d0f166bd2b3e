"""Object storage for a run: every stage reads and writes through one fsspec URL.

A plain path or ``file://`` is the embedded default; ``s3://bucket/prefix`` goes through s3fs, with
the endpoint taken from ``storage_options`` or ``AWS_ENDPOINT_URL`` (MinIO, moto, Ceph ...).
Remote Ray workers rebuild a ``Store`` from its URL and options, so nothing depends on a
driver-local path and the object store is the only disk that stages share.

Writes are atomic per object: a local file is written beside its target, fsynced and renamed
into place, and an S3 object only appears when its upload completes. Whether a finished object is
also the *right* object (not truncated by a bad copy, not from another config) is the business of
``hybrid.store.partitions``.

Every filesystem failure leaves this module as a one-line ``StoreError`` that names the URL and
says what to do; the raw exceptions of fsspec, s3fs and botocore name neither bucket nor file.
URLs in messages never carry credentials (``redact``).

Every write returns the object's *version* as the store reports it (a local file's mtime, an S3
ETag), and a listing returns the same marker for each object, so a later command can tell an
object that nobody touched since it was written from one that was rewritten or damaged in place
without reading it (``hybrid.store.partitions``). Parquet files carry a CRC per data page, which
every read checks, so damage that slipped past every other check still fails loudly.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import posixpath
import uuid
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from hybrid.errors import CorruptPartition, StoreError, redact
from hybrid.store import layout

#: bytes read from a Parquet file's end to get its footer (a catchment's footer is a few KiB)
_FOOTER_READ = 64 * 1024
def content_hash(data: bytes) -> str:
    """The checksum a manifest records for a file's bytes.

    CRC-32 (zlib, in the standard library) runs at ~3 GB/s here, 5x SHA-256: it is computed from
    the bytes being written (no second read), and it is meant to catch damage, not forgery
    (forests load without running code whatever their bytes; ``hybrid.decoder.fit``).
    """
    return f"crc32:{zlib.crc32(data):08x}"


@dataclass
class Store:
    """A folder in some filesystem, addressed by relative keys like ``catchments/x.parquet``."""

    url: str
    storage_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.url = self.url.rstrip("/")
        if redact(self.url) != self.url:
            raise StoreError(
                f"store {redact(self.url)}: credentials inside the URL are refused (they would "
                "end up in logs and in the run folder); give them as storage_options key and "
                "secret, or through the environment")
        protocol, path = _split(self.url)
        self.protocol = protocol
        self.root = path if protocol != "file" else os.path.abspath(os.path.expanduser(path))
        try:
            self.fs = fsspec.filesystem(protocol, **_fs_options(protocol, self.storage_options))
        except ValueError as err:
            if "Protocol not known" in str(err):
                raise StoreError(
                    f"store {self.url}: unknown protocol {protocol!r}; use a folder path, "
                    "file://..., or s3://bucket/prefix") from None
            raise StoreError(f"store {self.url}: {redact(_first_line(err))}") from None
        except ImportError as err:
            raise StoreError(f"store {self.url}: the {protocol!r} filesystem needs a package "
                             f"that is not installed ({_first_line(err)})") from None
        except (TypeError, KeyError, AttributeError) as err:
            raise StoreError(f"store {self.url}: bad storage_options "
                             f"({redact(_first_line(err))})") from None

    # ------------------------------------------------------------------ addressing
    def child(self, *parts: str) -> "Store":
        """A store rooted at a sub-folder (e.g. one run inside the user's bucket)."""
        return Store(self.url + "/" + "/".join(p.strip("/") for p in parts), self.storage_options)

    def path(self, key: str = "") -> str:
        return posixpath.join(self.root, key) if key else self.root

    def uri(self, key: str = "") -> str:
        """A full URL for messages and for tools outside this package (DuckDB, pandas ...)."""
        p = self.path(key)
        return p if self.protocol == "file" else f"{self.protocol}://{p}"

    @property
    def is_local(self) -> bool:
        return self.protocol == "file"

    @contextlib.contextmanager
    def errors(self, key: str = "", action: str = "read") -> Iterator[None]:
        """Turn any filesystem failure inside the block into a ``StoreError`` naming ``key``."""
        try:
            yield
        except StoreError:
            raise
        except Exception as err:  # noqa: BLE001 - translated or re-raised below
            translated = _translate(err, self, key, action)
            if translated is None:
                raise
            raise translated from None

    # ------------------------------------------------------------------ queries
    def exists(self, key: str) -> bool:
        with self.errors(key):
            return self.fs.exists(self.path(key))

    def listdir(self, key: str) -> list[str]:
        """Names directly under ``key`` (empty when it does not exist)."""
        with self.errors(key):
            try:
                entries = self.fs.ls(self.path(key), detail=False)
            except FileNotFoundError:
                return []
        return sorted(posixpath.basename(e.rstrip("/")) for e in entries)

    def sizes(self, key: str) -> dict[str, int]:
        """Every object under ``key`` (recursively), as relative key -> size in bytes."""
        return {k: size for k, (size, _) in self.listing(key).items()}

    def listing(self, key: str) -> dict[str, tuple[int, str]]:
        """Every object under ``key`` (recursively), as relative key -> (size, version).

        One recursive listing (S3: a page per 1,000 objects), so checking 10,000 partitions
        against their recorded sizes and versions costs a few requests, not 10,000.
        """
        self.invalidate(key)
        base = self.path(key).rstrip("/") + "/"
        with self.errors(key):
            try:
                found = self.fs.find(self.path(key), detail=True)
            except FileNotFoundError:
                return {}
        out = {}
        for name, info in found.items():
            name = name if self.is_local else name.lstrip("/")
            rel = name[len(base):] if name.startswith(base) else name[len(base.lstrip("/")):]
            if info.get("type", "file") != "directory":
                out[f"{key}/{rel}"] = (int(info.get("size") or 0), _version(info))
        return out

    def invalidate(self, key: str = "") -> None:
        # s3fs caches listings; another process (a Ray worker) may have written since.
        self.fs.invalidate_cache(self.path(key))

    # ------------------------------------------------------------------ bytes
    def read_bytes(self, key: str) -> bytes:
        with self.errors(key):
            with self.fs.open(self.path(key), "rb") as f:
                return f.read()

    def write_bytes(self, key: str, data: bytes) -> str:
        """Write an object so that readers see either nothing or all of it; returns its version
        (what ``listing`` will report for it until someone rewrites it)."""
        target = self.path(key)
        with self.errors(key, "write"):
            if self.is_local:
                _write_local(target, data)
                return _version({"mtime": os.stat(target).st_mtime})
            # An S3 object appears only once its (multipart) upload completes.
            response = self.fs.pipe_file(target, data)
            if isinstance(response, dict) and response.get("ETag"):
                return _version(response)
            return _version(self.fs.info(target))

    def create_exclusive(self, key: str, data: bytes) -> bool | None:
        """Write ``key`` only if no object is there; False when one is (a lock is held), None
        when the store cannot be written at all (a read-only copy of a finished run).

        Local: ``O_CREAT | O_EXCL``. S3: a conditional put (``If-None-Match: *``), which AWS
        S3 and moto honour; a store that ignores the condition is caught by reading the object
        back (``hybrid.store.lock``).
        """
        target = self.path(key)
        with self.errors(key, "write"):
            if self.is_local:
                try:
                    os.makedirs(posixpath.dirname(target), exist_ok=True)
                    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    return False
                except PermissionError:
                    return None
                except OSError as err:
                    if err.errno == errno.EROFS:
                        return None
                    raise
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                return True
            try:
                self.fs.pipe_file(target, data, mode="create")
            except FileExistsError:
                return False
            except PermissionError:
                return None
            return True

    def write_if_changed(self, key: str, data: bytes) -> bool:
        """Write unless the object already holds exactly ``data`` (a rerun that changes nothing
        writes nothing, so a finished run can live in a read-only store)."""
        if self.exists(key) and self.read_bytes(key) == data:
            return False
        self.write_bytes(key, data)
        return True

    def delete(self, key: str, recursive: bool = False) -> None:
        with self.errors(key, "write"):
            if self.fs.exists(self.path(key)):
                self.fs.rm(self.path(key), recursive=recursive)

    def probe_write(self) -> None:
        """Write a small object under this folder and delete it: the bucket exists, the
        credentials may write there, and no path on the way is a file. A failure is the same
        one-line ``StoreError`` a run would meet at its first write; a local folder created for
        the probe is removed again, so a check leaves nothing behind."""
        key = f".hybrid-probe-{uuid.uuid4().hex}"
        created = None
        if self.is_local:
            created = self.root
            while not os.path.exists(posixpath.dirname(created)):
                created = posixpath.dirname(created)
            if os.path.exists(created):
                created = None
        try:
            self.write_bytes(key, b"probe")
            self.delete(key)
        finally:
            if created:
                with contextlib.suppress(OSError):
                    _remove_empty_dirs(self.root, created)

    def bucket_exists(self) -> bool:
        """Whether an object store's bucket exists (a local folder is always "there")."""
        if self.is_local:
            return True
        bucket = self.root.split("/", 1)[0]
        with self.errors():
            return bool(self.fs.exists(bucket))

    # ------------------------------------------------------------------ structured objects
    def write_json(self, key: str, obj: Any) -> None:
        self.write_bytes(key, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())

    def read_json(self, key: str) -> Any:
        data = self.read_bytes(key)
        try:
            return json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise StoreError(f"{self.uri(key)}: not valid JSON ({_first_line(err)}); it is "
                             "damaged: delete it and rerun to rebuild it") from None

    def write_text(self, key: str, text: str) -> None:
        self.write_bytes(key, text.encode())

    def read_text(self, key: str) -> str:
        return self.read_bytes(key).decode()

    def write_table(self, key: str, table: pa.Table | pd.DataFrame,
                    metadata: dict[str, str] | None = None) -> int:
        """Write Parquet (zstd); ``metadata`` goes into the file's footer. Returns the size."""
        data = table_bytes(table, metadata)
        self.write_bytes(key, data)
        return len(data)

    def read_table(self, key: str, columns: Iterable[str] | None = None) -> pa.Table:
        data = self.read_bytes(key)  # transport errors are told apart from damaged files
        with self.errors(key, "parse"):
            return pq.read_table(pa.BufferReader(data), columns=list(columns) if columns else None,
                                 page_checksum_verification=True)

    def read_frame(self, key: str, columns: Iterable[str] | None = None) -> pd.DataFrame:
        return self.read_table(key, columns).to_pandas()

    def read_footer(self, key: str, data: bytes | None = None) -> pq.FileMetaData:
        """The Parquet footer alone, from one read of the file's tail (not the whole file), or
        from ``data`` when the whole file was read already."""
        if data is not None:
            with self.errors(key, "parse"):
                return pq.read_metadata(pa.BufferReader(data))
        with self.errors(key):
            with self.fs.open(self.path(key), "rb") as f:
                size = f.size if isinstance(getattr(f, "size", None), int) else f.seek(0, 2)
                f.seek(max(0, size - _FOOTER_READ))
                tail = f.read()
        with self.errors(key, "parse"):
            if len(tail) < size and len(tail) >= 8:
                footer = int.from_bytes(tail[-8:-4], "little")
                if footer + 8 > len(tail):  # a footer larger than the tail: read it all
                    tail = self.read_bytes(key)
            return pq.read_metadata(pa.BufferReader(tail))

    def arrow_filesystem(self):
        """A native pyarrow filesystem for bulk readers (pyarrow.dataset, Ray Data).

        pyarrow's own S3 client ignores ``AWS_ENDPOINT_URL`` when constructed directly, so the
        endpoint is passed explicitly.
        """
        from pyarrow import fs as pafs

        if self.is_local:
            return pafs.LocalFileSystem()
        if self.protocol == "s3":
            opts = _fs_options("s3", self.storage_options)
            endpoint = opts.get("endpoint_url")
            kwargs: dict[str, Any] = {}
            if endpoint:
                scheme, _, host = endpoint.partition("://")
                kwargs.update(endpoint_override=host or scheme,
                              scheme=scheme if host else "https")
            if opts.get("key"):
                kwargs.update(access_key=opts["key"], secret_key=opts.get("secret"))
                if opts.get("token"):
                    kwargs["session_token"] = opts["token"]
            if opts.get("anon"):
                kwargs["anonymous"] = True
            region = opts.get("client_kwargs", {}).get("region_name")
            if region:
                kwargs["region"] = region
            return pafs.S3FileSystem(**kwargs)
        return pafs.PyFileSystem(pafs.FSSpecHandler(self.fs))


def parquet_format():
    """The Parquet format for ``pyarrow.dataset`` readers, checking every data page's CRC."""
    import pyarrow.dataset as ds

    return ds.ParquetFileFormat(default_fragment_scan_options=ds.ParquetFragmentScanOptions(
        page_checksum_verification=True))


def open_store(url: str, storage_options: dict[str, Any] | None = None) -> Store:
    return Store(url, dict(storage_options or {}))


def table_bytes(table: pa.Table | pd.DataFrame, metadata: dict[str, str] | None = None) -> bytes:
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    if metadata:
        merged = dict(table.schema.metadata or {})
        merged.update({k.encode(): v.encode() for k, v in metadata.items()})
        table = table.replace_schema_metadata(merged)
    buf = io.BytesIO()
    # a CRC per data page: a flipped bit anywhere in the data fails the read instead of
    # changing a number (readers pass page_checksum_verification)
    pq.write_table(table, buf, compression="zstd", write_page_checksum=True)
    return buf.getvalue()


def _version(info: dict) -> str:
    """An object's version as a listing or a write reports it: the S3 ETag, or the mtime."""
    etag = info.get("ETag") or info.get("etag")
    if etag:
        return "etag:" + str(etag).strip('"')
    mtime = info.get("mtime") or info.get("LastModified") or info.get("created")
    return f"mtime:{mtime!r}" if isinstance(mtime, float) else (f"mtime:{mtime}" if mtime else "")


def _write_local(target: str, data: bytes) -> None:
    folder, name = posixpath.split(target)
    os.makedirs(folder, exist_ok=True)
    # A leading dot: Parquet dataset readers skip it if a crash ever leaves one behind.
    tmp = posixpath.join(folder, f".{name}.tmp-{uuid.uuid4().hex}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            # Without fsync a power cut after the rename can leave a renamed, empty file:
            # "exists" would then mean nothing.
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:  # disk full, interrupted: leave no stray temporary file
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    with contextlib.suppress(OSError):  # the rename itself, on filesystems that allow it
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove_empty_dirs(deepest: str, top: str) -> None:
    """Remove ``deepest`` and its parents up to and including ``top``, if they are empty."""
    path = deepest
    while True:
        os.rmdir(path)
        if path == top:
            return
        path = posixpath.dirname(path)


def _split(url: str) -> tuple[str, str]:
    if "://" not in url:
        return "file", url
    protocol, path = url.split("://", 1)
    if protocol in ("file", "local"):
        return "file", path
    if protocol in ("s3", "s3a"):
        return "s3", path
    return protocol, path


def _fs_options(protocol: str, options: dict[str, Any]) -> dict[str, Any]:
    opts = dict(options)
    if protocol == "s3":
        endpoint = opts.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL_S3") \
            or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            opts["endpoint_url"] = endpoint
    return opts


def _first_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text or type(err).__name__


_CREDENTIALS_HELP = (
    "s3fs looks for credentials in storage_options (key, secret, token), then "
    "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, then ~/.aws/credentials (AWS_PROFILE), then an "
    "instance or pod role")


def _translate(err: Exception, store: Store, key: str, action: str) -> StoreError | None:
    """A one-line, actionable ``StoreError`` for a filesystem failure, or None for a bug."""
    where = store.uri(key)
    name = type(err).__name__
    text = redact(_first_line(err))
    bucket = store.root.split("/", 1)[0]
    if name == "NoCredentialsError":
        return StoreError(f"{where}: no S3 credentials found; {_CREDENTIALS_HELP}")
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError",
                "ConnectionError", "ConnectionRefusedError", "ReadTimeoutError",
                "HTTPClientError"):
        endpoint = _fs_options(store.protocol, store.storage_options).get("endpoint_url")
        shown = redact(str(endpoint or "(AWS default)"))
        return StoreError(f"{where}: cannot reach the store's endpoint {shown} ({text}); is it "
                          "running and is endpoint_url right?")
    if isinstance(err, FileNotFoundError):
        if "bucket does not exist" in text or "NoSuchBucket" in text:
            return StoreError(f"{where}: bucket {bucket!r} does not exist; create it or fix "
                              "the store URL")
        return StoreError(f"not found in store: {where}")
    if isinstance(err, PermissionError):
        if store.is_local:
            return StoreError(f"{where}: permission denied to {action} (is the folder "
                              "read-only?)")
        return StoreError(f"{where}: access denied to {action} ({text}); check the "
                          f"credentials and the bucket policy: {_CREDENTIALS_HELP}")
    if isinstance(err, (NotADirectoryError, FileExistsError, IsADirectoryError)):
        return StoreError(f"{where}: a path in the store is a file where a folder is needed "
                          f"(or the reverse): {text}")
    # parsing bytes already in memory: any OSError there ("Unexpected end of stream") is damage
    if isinstance(err, pa.ArrowException) or (action == "parse" and isinstance(err, OSError)):
        message = (f"{where}: not a readable Parquet file ({text}); it was cut short or damaged")
        if layout.is_partition_key(key):  # a catchment partition: the run can rebuild it
            return CorruptPartition(message + "; it is deleted and rebuilt on the next run", key)
        return StoreError(message + ": delete it and rerun to rebuild it")
    if isinstance(err, OSError):
        return StoreError(f"{where}: cannot {action} ({text})")
    if isinstance(err, TypeError) and "unexpected keyword argument" in text:
        # botocore checks storage_options' config_kwargs / client_kwargs on first use
        return StoreError(f"store {redact(store.url)}: bad storage_options ({text})")
    return None
