"""A run folder that never lies: damaged or missing partitions are redone, never trusted.

A finished tiny run (no Ray) is copied for each case; the case damages one catchment's partition
in one folder, reruns the pipeline, and checks that exactly that catchment is redone, every other
partition is left untouched, and the summary ends identical (the pipeline is seeded, so the
healed catchment's numbers come back too).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from hybrid.cli import main
from hybrid.errors import StoreError
from hybrid.stages import run_all
from hybrid.store import layout, partitions
from hybrid.store.runs import run_store

VICTIM = "synthetic_001"
#: folder -> the stage that rebuilds it, as named in the log
FOLDERS = {layout.CATCHMENTS: "prepare", layout.ENCODED: "encode",
           layout.PREDICTIONS: "decode", layout.METRICS: "score"}
STABLE = ["gauge_id", "model", "status", "nse", "kge_2012", "n_train", "n_test"]


@pytest.fixture
def copy(finished_copy):
    """(cfg, store) of a private copy of the finished run."""
    return finished_copy


def _files(store) -> dict[str, tuple[bytes, int]]:
    root = Path(store.path())
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in root.rglob("*.parquet")}


def _summary(store) -> pd.DataFrame:
    return store.read_frame(layout.SUMMARY)[STABLE]


@pytest.mark.parametrize("folder", list(FOLDERS))
@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_a_damaged_partition_is_redone_and_only_it(copy, folder, damage, capsys) -> None:
    cfg, store = copy
    before_summary = _summary(store)
    before = _files(store)
    key = layout.partition_key(folder, VICTIM)
    path = Path(store.path(key))
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        shutil.rmtree(path.parent)
    capsys.readouterr()
    outcome = run_all(cfg)
    err = capsys.readouterr().err
    stage = FOLDERS[folder]
    reason = "its partition is missing" if damage == "delete" else "(cut short or replaced)"
    line = next(x for x in err.splitlines() if x.startswith(f"{stage}: redoing catchment"))
    assert line.startswith(f"{stage}: redoing catchment {VICTIM}: ") and line.endswith(reason)
    assert outcome.exit_code == 0
    redone = [line for line in err.splitlines() if ": redoing catchment" in line]
    assert len(redone) == 1, redone  # nothing else was redone, in any stage
    after = _files(store)
    assert set(after) == set(before)
    changed = {k for k in before if after[k] != before[k]}
    assert changed <= {key, layout.SUMMARY, layout.AGGREGATE} | (
        # a re-scored catchment's metrics rows do not change; a refit rewrites both files
        {layout.partition_key(layout.METRICS, VICTIM)} if folder == layout.PREDICTIONS else set())
    pd.testing.assert_frame_equal(_summary(store), before_summary)


def _flip_middle(path: Path, keep_mtime: bool = False) -> None:
    """Same-size damage in the middle of the file (the data, not the footer)."""
    stat = path.stat()
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 8] = bytes(b ^ 0xFF for b in data[middle:middle + 8])
    path.write_bytes(bytes(data))
    if keep_mtime:  # what a bad disk does: the bytes change, the timestamp does not
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


@pytest.mark.parametrize("folder", list(FOLDERS))
def test_same_size_damage_in_the_middle_is_redone_on_the_next_run(copy, folder, capsys) -> None:
    """Damage the size check cannot see: the file's version changed, so its content hash is
    compared with the manifest's, and the one rerun heals it to identical results."""
    cfg, store = copy
    before = _summary(store)
    key = layout.partition_key(folder, VICTIM)
    _flip_middle(Path(store.path(key)))
    capsys.readouterr()
    outcome = run_all(cfg)
    err = capsys.readouterr().err
    assert outcome.exit_code == 0
    redone = [line for line in err.splitlines() if ": redoing catchment" in line]
    assert len(redone) == 1, redone
    assert redone[0].startswith(f"{FOLDERS[folder]}: redoing catchment {VICTIM}: its content "
                                "hash is crc32:")
    assert "(damaged or rewritten in place)" in redone[0]
    pd.testing.assert_frame_equal(_summary(store), before)
    assert run_all(cfg).exit_code == 0  # and it stays healed


def test_a_partition_copied_without_its_timestamps_is_hashed_not_redone(copy, capsys) -> None:
    """A new version with the recorded bytes (a copy that did not keep mtimes) is kept."""
    cfg, store = copy
    before = _files(store)
    path = Path(store.path(layout.partition_key(layout.ENCODED, VICTIM)))
    path.write_bytes(path.read_bytes())
    capsys.readouterr()
    assert run_all(cfg).exit_code == 0
    assert ": redoing catchment" not in capsys.readouterr().err
    assert {k: v[0] for k, v in _files(store).items()} == {k: v[0] for k, v in before.items()}


def test_damage_that_keeps_size_and_timestamp_is_caught_by_the_reader(copy, capsys) -> None:
    """A bad disk changes bytes but not the mtime: the listing cannot see it, so the Parquet
    page checksums do. The stage that reads the file fails that catchment naming the file,
    deletes it, and the next run rebuilds it."""
    cfg, store = copy
    before = _summary(store)
    key = layout.partition_key(layout.ENCODED, VICTIM)
    path = Path(store.path(key))
    _flip_middle(path, keep_mtime=True)
    shutil.rmtree(Path(store.path(layout.partition_dir(layout.PREDICTIONS, VICTIM))))
    capsys.readouterr()
    outcome = run_all(cfg)
    err = capsys.readouterr().err
    assert outcome.exit_code == 3 and outcome.failed == [VICTIM]
    line = next(x for x in err.splitlines() if f"catchment {VICTIM} failed" in x)
    assert key in line and "not a readable Parquet file" in line
    assert not path.exists()  # deleted, so that it is rebuilt rather than failed on forever
    outcome = run_all(cfg)
    assert outcome.exit_code == 0
    pd.testing.assert_frame_equal(_summary(store), before)


def test_bit_flips_in_a_catchment_partition_never_read_back_silently(copy) -> None:
    """Every single-byte flip of a canonical partition either fails the read (page CRC,
    footer) or reads back the same table: none changes a number silently."""
    import numpy as np

    from hybrid.errors import StoreError as Refused

    _, store = copy
    key = layout.partition_key(layout.CATCHMENTS, VICTIM)
    path = Path(store.path(key))
    good = path.read_bytes()
    table = store.read_table(key)
    rng = np.random.default_rng(0)
    silent = 0
    for _ in range(100):
        data = bytearray(good)
        data[int(rng.integers(4, len(data) - 8))] ^= 1 << int(rng.integers(0, 8))
        path.write_bytes(bytes(data))
        try:
            silent += not store.read_table(key).equals(table)
        except Refused:
            pass
    assert silent == 0


def test_a_damaged_manifest_means_checking_every_partition(copy, capsys) -> None:
    cfg, store = copy
    before = _files(store)
    Path(store.path(layout.manifest_key(layout.ENCODED))).write_text('{"catchments": {')
    capsys.readouterr()
    assert run_all(cfg).exit_code == 0
    err = capsys.readouterr().err
    assert "encoded/_manifest.json: not valid JSON" in err
    assert "checking every partition of encoded instead" in err
    assert "encode: 0 of 4 catchments to encode (4 already done)" in err
    assert _files(store) == before  # every footer was sound: nothing redone
    assert store.read_json(layout.manifest_key(layout.ENCODED))["catchments"]  # rewritten


def test_an_id_from_a_manifest_never_becomes_a_path(copy, tmp_path) -> None:
    """A manifest entry like ``x/../../tmp/y`` is refused, not joined into a file name."""
    cfg, store = copy
    outside = tmp_path / "outside"
    evil = f"camels_x/../../../../../../{outside.relative_to('/')}"
    path = Path(store.path(layout.manifest_key(layout.ENCODED)))
    manifest = json.loads(path.read_text())
    manifest["catchments"][evil] = {"rows": 1, "bytes": 1}
    path.write_text(json.dumps(manifest))
    with pytest.raises(StoreError) as excinfo:
        run_all(cfg)
    message = str(excinfo.value)
    assert "\n" not in message and "is not a usable catchment id" in message
    assert "encoded/_manifest.json" in message
    assert not outside.exists() and not list(tmp_path.rglob("y"))


def test_a_truncated_final_checkpoint_is_one_line_with_what_to_do(copy, capsys) -> None:
    cfg, store = copy
    path = Path(store.path(layout.FINAL))
    path.write_bytes(path.read_bytes()[:200])
    config = Path(store.path(layout.CONFIG))
    root = str(Path(store.path()).parent)  # the recorded config names the template's store
    assert main(["encode", "--config", str(config), "--store", root]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err[-1:]) == 1 and err[-1].startswith("error: ")
    assert "final.pt: not a readable checkpoint" in err[-1] and "hybrid pretrain" in err[-1]


def test_a_partition_from_another_config_is_refused(copy, tiny_config) -> None:
    """Without config.yml and manifests, the partitions' own stamps still say which config
    made them: a rerun with another model size is refused, not mixed in."""
    cfg, store = copy
    for folder in [*FOLDERS, layout.SUMMARY_DIR]:
        manifest = Path(store.path(layout.manifest_key(folder)))
        if manifest.exists():
            manifest.unlink()
    os.remove(store.path(layout.CONFIG))
    with pytest.raises(StoreError) as excinfo:
        run_all(cfg.replace(seq_length=61))
    assert "was written by a run with a different config" in str(excinfo.value)
    assert "catchments/synthetic_0" in str(excinfo.value)


def test_data_dir_cannot_change_while_prepare_is_unfinished(caravan_files, tmp_path) -> None:
    from hybrid.errors import ConfigError
    from hybrid.stages.prepare import prepare
    from hybrid.store.runs import open_run

    caravan_files.write({"x_1": caravan_files.lines(), "x_2": caravan_files.lines()})
    other = tmp_path / "other"
    shutil.copytree(caravan_files.root, other)
    cfg = caravan_files.config(str(tmp_path / "store"))
    store = open_run(cfg)
    prepare(cfg, store)
    store.delete(layout.manifest_key(layout.CATCHMENTS))  # as if interrupted
    moved = cfg.replace(data_dir=str(other))
    with pytest.raises(ConfigError) as excinfo:
        prepare(moved, open_run(moved))
    message = str(excinfo.value)
    assert "data_dir" in message and str(caravan_files.root) in message and str(other) in message
    # once prepare has finished, the data may move: nothing is re-read
    prepare(cfg, store)
    assert prepare(moved, open_run(moved)).ran == []
    assert partitions.read_manifest(store, layout.CATCHMENTS) is not None


@pytest.mark.parametrize("key", [layout.AGGREGATE, layout.SUMMARY, layout.HISTORY, layout.FINAL])
def test_damage_in_a_single_file_is_found_by_its_hash_and_healed(copy, key, tiny_config,
                                                                 tmp_path, capsys) -> None:
    """Summary, aggregate, training history and final checkpoint: damaged in the middle, each
    is rewritten by the next run (one line naming it) to the same bytes, and nothing that
    depends on the model is redone."""
    cfg, store = copy
    if key == layout.FINAL:  # its recorded config names the store: damage a run in place
        cfg = tiny_config(str(tmp_path / "own"), epochs=1)
        assert run_all(cfg).exit_code == 0
        store = run_store(cfg)
    before = _files(store)
    good = Path(store.path(key)).read_bytes()
    _flip_middle(Path(store.path(key)))
    capsys.readouterr()
    assert run_all(cfg).exit_code == 0
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if store.uri(key) in x and "content hash" in x]
    assert len(lines) == 1, err
    assert "not the crc32:" in lines[0] and "(damaged or rewritten in place)" in lines[0]
    assert Path(store.path(key)).read_bytes() == good
    assert ": redoing catchment" not in err
    assert {k: v[0] for k, v in _files(store).items()} == {k: v[0] for k, v in before.items()}


def test_a_damaged_epoch_checkpoint_is_dropped_for_the_one_before(tiny_config, tmp_path,
                                                                  capsys) -> None:
    """A flipped bit in an epoch checkpoint still loads in torch: its recorded hash refuses it."""
    from hybrid.encoder import checkpoints as ckpt
    from hybrid.execution.session import Session
    from hybrid.stages import prepare, pretrain

    cfg = tiny_config(str(tmp_path), epochs=2)
    session = Session.open(cfg)
    try:
        prepare.run(cfg, session)
        pretrain.run(cfg, session)
    finally:
        session.close()
    store = run_store(cfg)
    last = ckpt.epochs(store)[-1]
    _flip_middle(Path(store.path(layout.epoch_key(last))))
    epoch, _ = ckpt.latest_epoch_state(store)
    assert epoch == last - 1
    assert "content hash" in capsys.readouterr().err
