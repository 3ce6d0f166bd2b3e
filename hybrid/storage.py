"""Object storage for a run: every stage reads and writes through one fsspec URL.

A plain path or ``file://`` is the embedded default; ``s3://bucket/prefix`` goes through s3fs, with
the endpoint taken from ``storage_options`` or ``AWS_ENDPOINT_URL`` (MinIO, moto, Ceph ...).
Remote Ray workers rebuild a ``Store`` from its URL and options, so nothing depends on a
driver-local path and the object store is the only disk that stages share.

Writes are atomic per object: a local file is written beside its target and renamed into place,
and an S3 object only appears when its upload completes. A partition that exists is therefore a
finished partition, which is what makes interrupted runs resumable.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from hybrid.errors import StoreError


@dataclass
class Store:
    """A folder in some filesystem, addressed by relative keys like ``catchments/x.parquet``."""

    url: str
    storage_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.url = self.url.rstrip("/")
        protocol, path = _split(self.url)
        self.protocol = protocol
        self.root = path if protocol != "file" else os.path.abspath(path)
        self.fs = fsspec.filesystem(protocol, **_fs_options(protocol, self.storage_options))

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

    # ------------------------------------------------------------------ queries
    def exists(self, key: str) -> bool:
        return self.fs.exists(self.path(key))

    def listdir(self, key: str) -> list[str]:
        """Names directly under ``key`` (empty when it does not exist)."""
        try:
            entries = self.fs.ls(self.path(key), detail=False)
        except FileNotFoundError:
            return []
        return sorted(posixpath.basename(e.rstrip("/")) for e in entries)

    def partitions(self, key: str, column: str = "gauge_id") -> list[str]:
        """Values of a hive partition column with a finished ``part-0.parquet`` under ``key``."""
        self.invalidate(key)
        prefix = column + "="
        files = self.fs.glob(self.path(f"{key}/{prefix}*/part-0.parquet"))
        return sorted(posixpath.basename(posixpath.dirname(f))[len(prefix):] for f in files)

    def invalidate(self, key: str = "") -> None:
        # s3fs caches listings; another process (a Ray worker) may have written since.
        self.fs.invalidate_cache(self.path(key))

    # ------------------------------------------------------------------ bytes
    def read_bytes(self, key: str) -> bytes:
        try:
            with self.fs.open(self.path(key), "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise StoreError(f"not found in store: {self.uri(key)}") from None

    def write_bytes(self, key: str, data: bytes) -> None:
        """Write an object so that readers see either nothing or all of it."""
        target = self.path(key)
        if self.is_local:
            self.fs.makedirs(posixpath.dirname(target), exist_ok=True)
            # A leading dot: Parquet dataset readers skip it if a crash ever leaves one behind.
            folder, name = posixpath.split(target)
            tmp = posixpath.join(folder, f".{name}.tmp-{uuid.uuid4().hex}")
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                os.replace(tmp, target)
            except BaseException:  # disk full, interrupted: leave no stray temporary file
                if os.path.exists(tmp):
                    os.remove(tmp)
                raise
        else:
            # An S3 object appears only once its (multipart) upload completes.
            self.fs.pipe_file(target, data)

    def delete(self, key: str, recursive: bool = False) -> None:
        if self.exists(key):
            self.fs.rm(self.path(key), recursive=recursive)

    # ------------------------------------------------------------------ structured objects
    def write_json(self, key: str, obj: Any) -> None:
        self.write_bytes(key, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())

    def read_json(self, key: str) -> Any:
        return json.loads(self.read_bytes(key))

    def write_text(self, key: str, text: str) -> None:
        self.write_bytes(key, text.encode())

    def read_text(self, key: str) -> str:
        return self.read_bytes(key).decode()

    def write_table(self, key: str, table: pa.Table | pd.DataFrame) -> None:
        if isinstance(table, pd.DataFrame):
            table = pa.Table.from_pandas(table, preserve_index=False)
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        self.write_bytes(key, buf.getvalue())

    def read_table(self, key: str, columns: Iterable[str] | None = None) -> pa.Table:
        try:
            with self.fs.open(self.path(key), "rb") as f:
                return pq.read_table(f, columns=list(columns) if columns else None)
        except FileNotFoundError:
            raise StoreError(f"not found in store: {self.uri(key)}") from None

    def read_frame(self, key: str, columns: Iterable[str] | None = None) -> pd.DataFrame:
        return self.read_table(key, columns).to_pandas()

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


def open_store(url: str, storage_options: dict[str, Any] | None = None) -> Store:
    return Store(url, dict(storage_options or {}))


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
