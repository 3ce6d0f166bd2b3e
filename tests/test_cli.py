"""The ``hybrid`` command as a user runs it: a subprocess, its exit code and its output."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hybrid.cli import STAGES, main

REPO = Path(__file__).resolve().parents[1]

OK = """\
run_id: cli
dataset: synthetic
dataset_options: {n_catchments: 2, seed: 3, start_date: "1995-01-01", end_date: "1997-12-31"}
static_attributes: [p_mean, aridity]
train_start_date: 1995-03-01
train_end_date: 1996-06-30
validation_start_date: 1996-07-01
validation_end_date: 1996-12-31
test_start_date: 1997-01-01
test_end_date: 1997-12-31
seq_length: 30
"""


def hybrid(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "hybrid.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd or REPO, env=env, timeout=120)


def test_help_lists_subcommands() -> None:
    result = hybrid("--help")
    assert result.returncode == 0, result.stderr
    for name in ["prepare", "metrics", *STAGES]:
        assert name in result.stdout
    assert "usage: hybrid" in result.stdout


def test_prepare_help() -> None:
    result = hybrid("prepare", "--help")
    assert result.returncode == 0, result.stderr
    for option in ("--config", "--store", "--run-id"):
        assert option in result.stdout
    assert "canonical catchment store" in result.stdout


@pytest.mark.skipif(shutil.which("hybrid") is None, reason="console script not installed")
def test_console_script() -> None:
    result = subprocess.run(["hybrid", "metrics", "--help"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--obs" in result.stdout and "--sim" in result.stdout


def test_no_subcommand_is_a_usage_error() -> None:
    result = hybrid()
    assert result.returncode == 2
    assert "usage: hybrid" in result.stderr


def test_unknown_key_is_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(OK + "decoder:\n  nme: rf\n")
    result = hybrid("prepare", "--config", bad, "--store", tmp_path / "store")
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:")
    assert "'decoder.nme'" in lines[0]
    assert not (tmp_path / "store").exists()


def test_missing_config_file(tmp_path: Path) -> None:
    result = hybrid("prepare", "--config", tmp_path / "nope.yml")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error:") and "nope.yml" in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_prepare_writes_the_store(tmp_path: Path) -> None:
    ok = tmp_path / "ok.yml"
    ok.write_text(OK)
    store = tmp_path / "store"
    result = hybrid("prepare", "--config", ok, "--store", store, "--run-id", "cli2")
    assert result.returncode == 0, result.stderr
    run = store / "cli2"  # --run-id wins over the file's run_id
    manifest = json.loads((run / "catchments" / "_manifest.json").read_text())
    assert sorted(manifest["catchments"]) == ["synthetic_000", "synthetic_001"]
    assert (run / "config.yml").is_file() and (run / "attributes.parquet").is_file()
    for gauge in manifest["catchments"]:
        assert (run / "catchments" / gauge / "part-0.parquet").is_file()


METRICS_CSV = """\
date,observed,a,b
2000-01-01,1,1,2
2000-01-02,2,2,2
2000-01-03,3,3,2
2000-01-04,4,5,2
"""


def _table(stdout: str) -> dict[str, dict[str, str]]:
    lines = [line.split() for line in stdout.splitlines() if line.strip()]
    header = lines[0]
    return {row[1]: dict(zip(header, row)) for row in lines[1:] if len(row) == len(header)}


def test_metrics(tmp_path: Path) -> None:
    path = tmp_path / "flows.csv"
    path.write_text(METRICS_CSV)
    result = hybrid("metrics", path, "--obs", "observed", "--sim", "a", "b")
    assert result.returncode == 0, result.stderr
    table = _table(result.stdout)
    # by hand: mean(obs)=2.5, sum((obs-mean)^2)=5; a: SSE=1 -> 0.8; b: SSE=6 -> -0.2
    assert float(table["a"]["nse"]) == pytest.approx(0.8)
    assert float(table["b"]["nse"]) == pytest.approx(-0.2)
    assert float(table["a"]["rmse"]) == pytest.approx(0.5)
    # without --sim every numeric column but the observed one is scored
    result = hybrid("metrics", path)
    assert result.returncode == 0, result.stderr
    assert set(_table(result.stdout)) == {"a", "b"}


def test_metrics_per_gauge_and_parquet(tmp_path: Path) -> None:
    import pandas as pd

    frame = pd.DataFrame({
        "gauge_id": ["01", "01", "01", "02", "02", "02"],
        "observed": [1.0, 2.0, 3.0, 1.0, 2.0, 3.0],
        "sim": [1.0, 2.0, 3.0, 2.0, 2.0, 2.0],
    })
    path = tmp_path / "flows.parquet"
    frame.to_parquet(path)
    result = hybrid("metrics", path, "--sim", "sim")
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[1:3]]
    assert [(r[0], float(r[2])) for r in rows] == [("01", 1.0), ("02", 0.0)]
    assert "median over catchments" in result.stdout


@pytest.mark.parametrize(
    ("text", "args", "words"),
    [
        (METRICS_CSV, ["--sim", "zz"], ["'zz'"]),
        (METRICS_CSV, ["--obs", "q"], ["'q'"]),
        ("observed\n1\n2\n", [], ["no simulated column"]),
        ("observed,name\n1,x\n2,y\n", ["--sim", "name"], ["'name'", "non-numeric"]),
    ],
    ids=["unknown-sim", "unknown-obs", "no-sim", "text-column"],
)
def test_metrics_errors(tmp_path: Path, capsys, text: str, args: list[str], words: list[str]
                       ) -> None:
    path = tmp_path / "flows.csv"
    path.write_text(text)
    assert main(["metrics", str(path), *args]) == 2  # in-process: the same path, faster
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error:")
    for word in words:
        assert word in err


def test_metrics_missing_file(tmp_path: Path, capsys) -> None:
    assert main(["metrics", str(tmp_path / "none.csv")]) == 2
    assert capsys.readouterr().err.startswith("error: file not found")


def test_metrics_keeps_gauge_id_text(tmp_path: Path, capsys) -> None:
    path = tmp_path / "flows.csv"
    path.write_text("gauge_id,observed,sim\n01022500,1,1\n01022500,2,2\n01022500,3,3\n")
    assert main(["metrics", str(path)]) == 0
    assert "01022500" in capsys.readouterr().out
