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
#: files whose bytes a rerun must not touch: the trained model, its forests, the attributes
UNTOUCHED = ("checkpoints", "decoders", "attributes.parquet")
#: partitioned folders whose rows a rerun must keep (a newer layout may move or re-stamp them)
KEPT_ROWS = (layout.CATCHMENTS, layout.ENCODED, layout.PREDICTIONS)


@pytest.fixture
def old_run(tmp_path: Path) -> tuple[Path, list[str]]:
    store = tmp_path / "store"
    shutil.copytree(OLD_RUN, store / "before-move")
    args = ["--config", str(store / "before-move" / "config.yml"), "--store", str(store)]
    return store / "before-move", args


def _contents(run: Path, names=UNTOUCHED) -> dict[str, bytes]:
    """Bytes of the model's weights, forests and attributes (files a newer version records
    hashes of, such as the training history, may be rewritten with the same content)."""
    return {str(p.relative_to(run)): p.read_bytes() for name in names
            for p in sorted((run / name).rglob("*") if (run / name).is_dir() else [run / name])
            if p.is_file() and p.suffix in (".pt", ".joblib", ".skops", ".parquet")
            and p.name != "history.parquet"}


def _all_files(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*"))
            if p.is_file() and p.name not in ("run.log", "config.yml")}


def _rows(run: Path, folder: str) -> dict[str, pd.DataFrame]:
    """Every catchment's rows of ``folder``, whatever the partitions' layout."""
    from hybrid.store import partitions
    from hybrid.store.storage import Store

    store = Store(str(run))
    gauges = json.loads((run / layout.manifest_key(folder)).read_text())["catchments"]
    return {g: partitions.read_partition(store, folder, g).to_pandas() for g in sorted(gauges)}


def _same_rows(a: dict[str, pd.DataFrame], b: dict[str, pd.DataFrame]) -> None:
    assert a.keys() == b.keys()
    for gauge_id in a:
        pd.testing.assert_frame_equal(a[gauge_id], b[gauge_id], check_like=True)


def _metric_values(summary: pd.DataFrame) -> pd.DataFrame:
    old = pd.read_parquet(OLD_RUN / layout.SUMMARY)
    return summary[list(old.columns)].reset_index(drop=True)


def test_a_rerun_of_an_old_run_folder_keeps_every_result(old_run) -> None:
    run, args = old_run
    before = _contents(run)
    rows = {folder: _rows(run, folder) for folder in KEPT_ROWS}
    summary = pd.read_parquet(run / layout.SUMMARY)
    assert main(["run", *args]) == 0
    assert _contents(run) == before  # no training, no forest refitted
    pd.testing.assert_frame_equal(pd.read_parquet(run / layout.HISTORY),
                                  pd.read_parquet(OLD_RUN / layout.HISTORY))
    for folder in KEPT_ROWS:  # nothing re-read, re-encoded or re-predicted
        _same_rows(_rows(run, folder), rows[folder])
    # columns added since (n_negative) re-score the metrics from the kept predictions; every
    # value the old run had is the same
    pd.testing.assert_frame_equal(_metric_values(pd.read_parquet(run / layout.SUMMARY)),
                                  summary)
    assert (run / layout.REPORT).is_file()  # the report (left out of the copy) is written
    again = _all_files(run)
    assert main(["run", *args]) == 0  # and now there is nothing left to do
    assert _all_files(run) == again


def test_score_and_predict_reproduce_an_old_run(old_run, capsys) -> None:
    run, args = old_run
    summary = pd.read_parquet(run / layout.SUMMARY)
    assert main(["score", *args]) == 0
    pd.testing.assert_frame_equal(_metric_values(pd.read_parquet(run / layout.SUMMARY)),
                                  summary)
    period = ["--start", "1999-01-01", "--end", "1999-12-31"]
    old = _rows(run, layout.PREDICTIONS)
    # its forests are pickles, which are never loaded (they could run code): one line says how
    # to refit them, and the refit (seeded) serves exactly the old predictions
    capsys.readouterr()
    assert main(["predict", *args, *period]) == 2
    assert "model.joblib" in capsys.readouterr().err
    for folder in (layout.PREDICTIONS, layout.DECODERS, "predict"):
        shutil.rmtree(run / folder, ignore_errors=True)
    assert main(["decode", *args]) == 0
    assert main(["predict", *args, *period]) == 0
    new = _rows(run, "predict/1999-01-01_1999-12-31/" + layout.PREDICTIONS)
    for gauge_id in old:
        for column in ("date", "observed", "regional", "hybrid"):
            assert (new[gauge_id][column].to_numpy() == old[gauge_id][column].to_numpy()).all()


def test_score_never_fits_an_undecoded_catchment(old_run, capsys) -> None:
    run, args = old_run
    manifest_key = run / layout.manifest_key(layout.PREDICTIONS)
    manifest = json.loads(manifest_key.read_text())
    lost = sorted(manifest["catchments"])[0]
    del manifest["catchments"][lost]  # encoded, but (as far as the run knows) never decoded
    manifest_key.write_text(json.dumps(manifest))
    shutil.rmtree(run / layout.hive_dir(layout.DECODERS, lost))
    before = _all_files(run)
    capsys.readouterr()
    assert main(["score", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: score: catchment ") and lost in err[-1]
    assert "run `hybrid decode` first" in err[-1]
    assert _all_files(run) == before  # no forest fitted, no metrics or summary written
    assert not (run / layout.hive_dir(layout.DECODERS, lost)).exists()


def test_score_without_any_decoding_says_which_command_to_run(old_run, capsys) -> None:
    run, args = old_run
    shutil.rmtree(run / layout.PREDICTIONS)
    capsys.readouterr()
    assert main(["score", *args]) == 2
    assert "run `hybrid decode` first" in capsys.readouterr().err
    assert not (run / layout.PREDICTIONS).exists()
