"""A run folder written before the package became sub-packages (commit cd84e9f, kept in
``tests/data/run-before-move/``, its report left out) is read by today's code unchanged: a rerun
finds nothing to do and rewrites nothing, ``score`` reproduces its metrics, ``predict`` its
predictions. The same folder shows that ``hybrid score`` never fits a forest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from hybrid.cli import main
from hybrid.store import layout

OLD_RUN = Path(__file__).parent / "data" / "run-before-move"
KEPT = ("catchments", "checkpoints", "encoded", "predictions", "metrics", "decoders",
        "summary", "attributes.parquet")


@pytest.fixture
def old_run(tmp_path: Path) -> tuple[Path, list[str]]:
    store = tmp_path / "store"
    shutil.copytree(OLD_RUN, store / "before-move")
    args = ["--config", str(store / "before-move" / "config.yml"), "--store", str(store)]
    return store / "before-move", args


def _contents(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for name in KEPT
            for p in sorted((run / name).rglob("*") if (run / name).is_dir() else [run / name])
            if p.is_file()}


def test_a_rerun_of_an_old_run_folder_finds_nothing_to_do(old_run) -> None:
    run, args = old_run
    before = _contents(run)
    assert main(["run", *args]) == 0
    assert _contents(run) == before  # no partition, checkpoint, forest or summary rewritten
    assert (run / layout.REPORT).is_file()  # the report (left out of the copy) is written


def test_score_and_predict_reproduce_an_old_run(old_run) -> None:
    run, args = old_run
    summary = pd.read_parquet(run / layout.SUMMARY)
    assert main(["score", *args]) == 0
    again = pd.read_parquet(run / layout.SUMMARY)
    pd.testing.assert_frame_equal(again, summary)
    assert main(["predict", *args, "--start", "1999-01-01", "--end", "1999-12-31"]) == 0
    for gauge_id in sorted(summary.gauge_id.unique()):
        old = pd.read_parquet(run / layout.partition_key(layout.PREDICTIONS, gauge_id))
        new = pd.read_parquet(run / "predict" / "1999-01-01_1999-12-31" / layout.partition_key(
            layout.PREDICTIONS, gauge_id))
        for column in ("date", "observed", "regional", "hybrid"):
            assert (new[column].to_numpy() == old[column].to_numpy()).all(), (gauge_id, column)


def test_score_never_fits_an_undecoded_catchment(old_run, capsys) -> None:
    run, args = old_run
    manifest_key = run / layout.manifest_key(layout.PREDICTIONS)
    manifest = json.loads(manifest_key.read_text())
    lost = sorted(manifest["catchments"])[0]
    del manifest["catchments"][lost]  # encoded, but (as far as the run knows) never decoded
    manifest_key.write_text(json.dumps(manifest))
    shutil.rmtree(run / layout.partition_dir(layout.DECODERS, lost))
    before = _contents(run)
    capsys.readouterr()
    assert main(["score", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: score: catchment ") and lost in err[-1]
    assert "run `hybrid decode` first" in err[-1]
    assert _contents(run) == before  # no forest fitted, no metrics or summary written
    assert not (run / layout.partition_dir(layout.DECODERS, lost)).exists()


def test_score_without_any_decoding_says_which_command_to_run(old_run, capsys) -> None:
    run, args = old_run
    shutil.rmtree(run / layout.PREDICTIONS)
    capsys.readouterr()
    assert main(["score", *args]) == 2
    assert "run `hybrid decode` first" in capsys.readouterr().err
    assert not (run / layout.PREDICTIONS).exists()
