"""The object store: one API over a local folder and S3 (a real moto server over HTTP)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hybrid.errors import StoreError
from hybrid.store.storage import Store, open_store


def test_roundtrip(any_store) -> None:
    url, options = any_store
    store = open_store(url, options).child("run1")
    assert not store.exists("a/b.bin")
    store.write_bytes("a/b.bin", b"\x00\x01payload")
    assert store.exists("a/b.bin")
    assert store.read_bytes("a/b.bin") == b"\x00\x01payload"
    store.write_bytes("a/b.bin", b"second")  # overwrite
    assert store.read_bytes("a/b.bin") == b"second"

    store.write_json("m.json", {"x": [1, 2.5, None], "when": pd.Timestamp("2001-01-01")})
    assert store.read_json("m.json") == {"x": [1, 2.5, None], "when": "2001-01-01 00:00:00"}
    store.write_text("c.yml", "a: 1\n")
    assert store.read_text("c.yml") == "a: 1\n"

    frame = pd.DataFrame({
        "date": pd.date_range("2000-01-01", periods=4, freq="D"),
        "x": pd.array([1.5, float("nan"), 3.0, 4.0], dtype="float32"),
    })
    store.write_table("t/part-0.parquet", frame)
    back = store.read_frame("t/part-0.parquet")
    pd.testing.assert_frame_equal(back, frame)
    assert store.read_table("t/part-0.parquet", columns=["x"]).column_names == ["x"]
    assert store.read_table("t/part-0.parquet").schema.field("x").type == pa.float32()

    assert store.listdir("") == ["a", "c.yml", "m.json", "t"]
    assert store.listdir("nothing/here") == []
    store.delete("a", recursive=True)
    assert not store.exists("a/b.bin")
    store.delete("never/written")  # deleting what is not there is fine

    with pytest.raises(StoreError) as excinfo:
        store.read_bytes("missing.bin")
    assert "missing.bin" in str(excinfo.value) and "\n" not in str(excinfo.value)
    with pytest.raises(StoreError):
        store.read_table("missing.parquet")


def test_file_url_and_plain_path_are_the_same_folder(tmp_path: Path) -> None:
    plain = open_store(str(tmp_path / "s"))
    url = open_store(f"file://{tmp_path}/s/")
    assert plain.is_local and url.is_local
    assert plain.root == url.root == str(tmp_path / "s")
    url.write_json("k.json", {"v": 1})
    assert (tmp_path / "s" / "k.json").is_file()
    assert plain.read_json("k.json") == {"v": 1}
    assert plain.uri("k.json") == str(tmp_path / "s" / "k.json")


def test_relative_path_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store("runs")
    store.write_text("x.txt", "1")
    assert store.root == str(tmp_path / "runs")
    assert (tmp_path / "runs" / "x.txt").read_text() == "1"


def test_local_writes_are_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(str(tmp_path))
    for i in range(3):
        store.write_bytes(f"d/obj{i}.bin", b"x" * 1000)
        store.write_table(f"d/t{i}.parquet", pd.DataFrame({"a": [i]}))
    names = sorted(p.name for p in (tmp_path / "d").iterdir())
    assert names == [f"obj{i}.bin" for i in range(3)] + [f"t{i}.parquet" for i in range(3)]

    # A write that fails half way leaves neither a target nor a temporary file behind.
    class Boom(Exception):
        pass

    real_open = open

    def failing_open(path, mode="r", *args, **kwargs):
        handle = real_open(path, mode, *args, **kwargs)
        if "w" in mode and ".tmp-" in str(path):
            handle.write(b"partial")
            handle.close()
            raise Boom()
        return handle

    monkeypatch.setattr("builtins.open", failing_open)
    with pytest.raises(Boom):
        store.write_bytes("d/broken.bin", b"y" * 1000)
    monkeypatch.undo()
    assert not (tmp_path / "d" / "broken.bin").exists()
    assert not [p for p in (tmp_path / "d").iterdir() if ".tmp-" in p.name]
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == names


def test_sizes_and_present_partitions(any_store) -> None:
    from hybrid.store.partitions import present_partitions

    url, options = any_store
    store = open_store(url, options)
    table = pd.DataFrame({"x": [1.0]})
    sizes = {g: store.write_table(f"catchments/gauge_id={g}/part-0.parquet", table)
             for g in ("b_2", "a_1", "c_3")}
    # not partitions: a folder without part-0, other files beside them, a bad folder name
    store.write_bytes("catchments/gauge_id=d_4/other.bin", b"")
    store.write_json("catchments/_manifest.json", {})
    store.write_table("catchments/gauge_id=../part-0.parquet", table)
    listed = store.sizes("catchments")
    assert listed["catchments/gauge_id=a_1/part-0.parquet"] == sizes["a_1"]
    assert listed["catchments/_manifest.json"] == 2
    assert present_partitions(store, "catchments") == sizes
    assert present_partitions(store, "nothing") == {}
    # a partition written by another client (a Ray worker) is seen despite listing caches
    other = open_store(url, options)
    other.write_table("catchments/gauge_id=e_5/part-0.parquet", table)
    assert sorted(present_partitions(store, "catchments")) == ["a_1", "b_2", "c_3", "e_5"]


def test_partitions_name_their_catchment_and_old_folders_still_read(any_store) -> None:
    """A file carries its gauge_id as text; one holding another catchment's rows is refused;
    the old ``gauge_id=<id>/`` layout (no column) is read, and moved once by ``verify``."""
    from hybrid.errors import CorruptPartition
    from hybrid.store import layout, partitions

    url, options = any_store
    store = open_store(url, options)
    frame = pd.DataFrame({"date": pd.date_range("2000-01-01", periods=3), "q": [1.0, 2, 3]})
    stamp = {"stage": "s", "config": "c"}
    record = partitions.write_partition(store, "f", "01013500", frame, stamp)
    table = store.read_table("f/01013500/part-0.parquet")
    assert table.column_names[0] == "gauge_id" and table.schema.field(0).type == pa.string()
    assert partitions.read_partition(store, "f", "01013500").column_names == ["date", "q"]
    # another catchment's file at this catchment's place
    store.write_bytes("f/02046000/part-0.parquet", store.read_bytes("f/01013500/part-0.parquet"))
    with pytest.raises(CorruptPartition, match="does not hold catchment '02046000'"):
        partitions.read_partition(store, "f", "02046000")
    with pytest.raises(ValueError, match="must be the text '02046000'"):
        partitions.write_partition(store, "f", "02046000", frame.assign(gauge_id="x"), stamp)
    store.delete("f/02046000", recursive=True)

    # a folder as versions before wrote it, with its manifest
    meta = {partitions.STAMP_KEY: '{"config": "c", "stage": "s"}'}
    old = {g: store.write_table(layout.legacy_partition_key("f", g), frame, meta)
           for g in ("03010655", "04000000")}
    store.delete("f/01013500", recursive=True)
    store.write_json("f/_manifest.json", {"stage": "s", "stamp": stamp, "skipped": {},
                                          "failed": {}, "catchments": {
                                              g: {"rows": 3, "bytes": b} for g, b in old.items()}})
    assert partitions.read_partition(store, "f", "03010655").column_names == ["date", "q"]
    assert partitions.read_folder(store, "f").column("gauge_id").to_pylist() == \
        ["03010655"] * 3 + ["04000000"] * 3
    assert partitions.present_partitions(store, "f") == old
    verdict = partitions.verify(store, "f", ["03010655", "04000000"], stamp)
    assert sorted(verdict.done) == ["03010655", "04000000"] and not verdict.todo
    assert sorted(store.listdir("f")) == ["03010655", "04000000", "_manifest.json"]
    moved = store.read_json("f/_manifest.json")["catchments"]
    assert moved["03010655"]["bytes"] == store.sizes("f")["f/03010655/part-0.parquet"] \
        == record["bytes"]  # the same file as one written in this layout now
    assert partitions.read_footer_json(store, "f/03010655/part-0.parquet") == stamp  # kept
    whole = pd.read_parquet(store.path("f"), filesystem=store.arrow_filesystem())
    assert sorted(whole["gauge_id"].unique()) == ["03010655", "04000000"]


def test_local_writes_are_fsynced_before_the_rename(tmp_path: Path, monkeypatch) -> None:
    """Without fsync, a power cut after the rename can leave a complete-looking empty file."""
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append("replace"),
                                                     real_replace(a, b))[1])
    open_store(str(tmp_path)).write_bytes("x/y.bin", b"data")
    assert calls[:2] == ["fsync", "replace"]


def test_footer_is_read_from_the_tail_and_damage_is_named(tmp_path: Path) -> None:
    from hybrid.errors import CorruptPartition

    store = open_store(str(tmp_path))
    frame = pd.DataFrame({f"h_{i}": pd.array(range(5000), dtype="float32") for i in range(40)})
    key = "encoded/gauge_id=g1/part-0.parquet"
    store.write_table(key, frame, {"hybrid.note": "kept"})
    footer = store.read_footer(key)
    assert footer.num_rows == 5000 and footer.metadata[b"hybrid.note"] == b"kept"
    data = store.read_bytes(key)
    store.write_bytes(key, data[: len(data) // 2])
    for read in (store.read_footer, store.read_table):
        with pytest.raises(CorruptPartition) as excinfo:
            read(key)
        assert excinfo.value.key == key and key in str(excinfo.value)
        assert "rebuilt on the next run" in str(excinfo.value)
    store.write_bytes("summary/summary.parquet", b"PAR1 not really")
    with pytest.raises(StoreError, match="summary.parquet: not a readable Parquet file .*delete"):
        store.read_table("summary/summary.parquet")


def _write_dataset(store: Store) -> None:
    for gauge, value in (("g1", 1.0), ("g2", 2.0)):
        frame = pd.DataFrame({"date": pd.date_range("2000-01-01", periods=3),
                              "q": pd.array([value] * 3, dtype="float32")})
        store.write_table(f"catchments/gauge_id={gauge}/part-0.parquet", frame)


def test_arrow_filesystem_reads_what_the_store_wrote(any_store) -> None:
    import pyarrow.dataset as pads

    url, options = any_store
    store = open_store(url, options).child("r")
    _write_dataset(store)
    fs = store.arrow_filesystem()
    table = pq.read_table(store.path("catchments/gauge_id=g2/part-0.parquet"), filesystem=fs)
    assert table.column("q").to_pylist() == [2.0, 2.0, 2.0]
    dataset = pads.dataset(store.path("catchments"), filesystem=fs, format="parquet",
                           partitioning="hive")
    frame = dataset.to_table().to_pandas()
    assert sorted(frame["gauge_id"].astype(str).unique()) == ["g1", "g2"]
    assert len(frame) == 6


def test_arrow_filesystem_gets_endpoint_explicitly(
    s3_bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pyarrow ignores AWS_ENDPOINT_URL itself; the store must pass the endpoint on."""
    from pyarrow import fs as pafs

    url, options = s3_bucket
    store = open_store(url, options)
    fs = store.arrow_filesystem()
    assert isinstance(fs, pafs.S3FileSystem)
    settings = fs.__reduce__()[1][0]  # pyarrow exposes its options only through pickling
    scheme, host = options["endpoint_url"].split("://")
    assert (settings["endpoint_override"], settings["scheme"]) == (host, scheme)
    assert settings["access_key"] == "testing"
    with_token = open_store(url, {**options, "token": "session", "client_kwargs": {
        "region_name": "eu-central-1"}}).arrow_filesystem().__reduce__()[1][0]
    assert (with_token["session_token"], with_token["region"]) == ("session", "eu-central-1")
    # even with a wrong endpoint in the environment, the configured one is used
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    _write_dataset(store)
    table = pq.read_table(store.path("catchments/gauge_id=g1/part-0.parquet"),
                          filesystem=store.arrow_filesystem())
    assert table.num_rows == 3


def test_endpoint_from_environment(s3_bucket, monkeypatch: pytest.MonkeyPatch) -> None:
    url, options = s3_bucket
    endpoint = options["endpoint_url"]
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    no_endpoint = {k: v for k, v in options.items() if k != "endpoint_url"}
    store = open_store(url, no_endpoint)
    store.write_json("env.json", {"ok": True})
    # written to the moto server, seen by a store configured with the endpoint explicitly
    assert open_store(url, options).read_json("env.json") == {"ok": True}
    # and pyarrow gets it too
    store.write_table("t.parquet", pd.DataFrame({"a": [1, 2]}))
    table = pq.read_table(store.path("t.parquet"), filesystem=store.arrow_filesystem())
    assert table.column("a").to_pylist() == [1, 2]
    # storage_options win over the environment
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    assert open_store(url, options).read_json("env.json") == {"ok": True}


def test_store_survives_pickling(any_store) -> None:
    """Ray ships stores to workers; the copy must address the same objects."""
    import pickle

    url, options = any_store
    store = open_store(url, options).child("p")
    store.write_text("x.txt", "hello")
    copy = pickle.loads(pickle.dumps(store))
    assert copy.read_text("x.txt") == "hello"
    assert copy.uri("x.txt") == store.uri("x.txt")


def test_uri_is_a_full_url(s3_bucket) -> None:
    url, options = s3_bucket
    store = open_store(url, options).child("run")
    assert store.uri("catchments") == url + "/run/catchments"
    assert not store.is_local
    assert os.path.basename(store.path("a/b.parquet")) == "b.parquet"
