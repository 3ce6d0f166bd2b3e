"""Bad numbers in real-looking data: never silent, never allowed to poison other catchments.

Each case writes a small Caravan layout where exactly one thing is wrong and checks what the
user is told (a log line, the manifest's warnings, a skipped row with its reason in the summary
and the report) and that the numbers the model sees are the clean ones.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hybrid.data.catalog import load_catchment
from hybrid.encoder.checkpoints import load_trained
from hybrid.errors import ConfigError
from hybrid.stages import run_all
from hybrid.stages.prepare import prepare
from hybrid.store import layout
from hybrid.store.runs import open_run, run_store


def _with(lines: list[str], day: str, column: int, value: str) -> list[str]:
    """``lines`` with field ``column`` of ``day``'s row replaced by ``value``."""
    out = list(lines)
    for i, line in enumerate(out):
        if line.startswith(day):
            fields = line.split(",")
            fields[column] = value
            out[i] = ",".join(fields)
            return out
    raise AssertionError(f"no row for {day}")


@pytest.mark.parametrize(("column", "value", "words"), [
    (4, "inf", ["1 infinite or out-of-range value(s) of 'streamflow'"]),
    (1, "-inf", ["'total_precipitation_sum'"]),
    (4, "1e40", ["out-of-range", "'streamflow'"]),          # beyond float32: inf when cast
    (4, "-2.5", ["1 negative value(s) of target 'streamflow'"]),
])
def test_bad_values_become_missing_days_with_a_warning(caravan_files, tmp_path, capsys, column,
                                                       value, words) -> None:
    caravan_files.write({"x_1": _with(caravan_files.lines(), "2000-05-01", column, value),
                         "x_2": caravan_files.lines()})
    cfg = caravan_files.config(str(tmp_path / "store"))
    store = open_run(cfg)
    prepare(cfg, store)
    err = capsys.readouterr().err
    warning = next(line for line in err.splitlines() if "catchment x_1:" in line)
    for word in words:
        assert word in warning
    assert "(first on 2000-05-01) treated as missing" in warning
    manifest = store.read_json(layout.manifest_key(layout.CATCHMENTS))
    assert manifest["warnings"]["x_1"] == [warning.split("catchment x_1: ", 1)[1]]
    frame = load_catchment(store, "x_1")
    assert np.isnan(frame.iloc[:, column - 1].loc["2000-05-01"])
    assert np.isfinite(frame.to_numpy()[np.isfinite(frame.to_numpy())]).all()


def test_an_infinite_target_does_not_poison_the_scaler(caravan_files, tmp_path) -> None:
    """One inf in one training catchment used to turn the whole target's scaler into a silent
    0 / 1 fallback for every catchment: the statistics must be those of the finite values."""
    clean = caravan_files.lines()
    caravan_files.write({"x_1": _with(clean, "2000-05-01", 4, "inf"), "x_2": clean})
    cfg = caravan_files.config(str(tmp_path / "a"), n_train_basins=2)
    assert run_all(cfg).exit_code == 0
    scaler = load_trained(run_store(cfg)).scaler
    # by hand: streamflow over the training period of both catchments, that one day missing
    days = pd.date_range(cfg.train_start_date, cfg.train_end_date)
    values = [1.0 + (i % 7) / 10 for i, d in enumerate(pd.date_range("2000-01-01", "2001-12-31"))
              if d in days]
    expected = np.array(values + values[:days.get_loc(pd.Timestamp("2000-05-01"))]
                        + values[days.get_loc(pd.Timestamp("2000-05-01")) + 1:])
    assert scaler.target_mean == pytest.approx(expected.mean(), rel=1e-6)
    assert scaler.target_std == pytest.approx(expected.std(), rel=1e-5)
    assert scaler.target_std != 1.0
    # the one note is the test data's constant evaporation, said out loud, not the target
    assert [n.split(" is ")[0] for n in scaler.notes] == \
        ["variable 'potential_evaporation_sum'"]


def test_a_non_numeric_attribute_skips_that_catchment_in_the_summary_and_report(
        caravan_files, tmp_path, capsys) -> None:
    attributes = "gauge_id,p_mean,aridity\nx_1,2.0,0.5\nx_2,abc,0.7\nx_3,2.2,n/a\nx_4,2,1\n"
    caravan_files.write({g: caravan_files.lines() for g in ("x_1", "x_2", "x_3", "x_4")},
                        attributes=attributes)
    cfg = caravan_files.config(str(tmp_path / "store"))
    outcome = run_all(cfg)
    assert outcome.exit_code == 0  # a skip is data, not a failure
    err = capsys.readouterr().err
    assert "prepare: catchment x_2 skipped: static attribute 'p_mean' is 'abc', not a finite " \
           "number" in err
    # "n/a" is a missing-value marker for pandas: said as such
    assert "prepare: catchment x_3 skipped: static attribute 'aridity' is missing" in err
    rows = outcome.summary[outcome.summary.gauge_id == "x_2"]
    assert set(rows.status) == {"skipped"} and set(rows.stage) == {"prepare"}
    assert set(rows.error) == {"static attribute 'p_mean' is 'abc', not a finite number"}
    assert sorted(outcome.summary.gauge_id.unique()) == ["x_1", "x_2", "x_3", "x_4"]
    report = run_store(cfg).read_text(layout.REPORT)
    assert "## Skipped catchments (2)" in report
    assert "- x_2 at prepare (hybrid, regional): static attribute 'p_mean' is 'abc'" in report


def test_empty_and_header_only_files_are_treated_alike(caravan_files, tmp_path) -> None:
    caravan_files.write({"x_1": caravan_files.lines(), "x_2": "", "x_3": [caravan_files.HEADER]})
    cfg = caravan_files.config(str(tmp_path / "store"))
    store = open_run(cfg)
    result = prepare(cfg, store)
    assert list(result.done) == ["x_1"] and result.failed == {}
    assert result.skipped == {"x_2": "its time series file has no data rows",
                              "x_3": "its time series file has no data rows"}


def test_too_many_training_catchments_is_refused_before_any_work(caravan_files, tmp_path) -> None:
    caravan_files.write({"x_1": caravan_files.lines(), "x_2": caravan_files.lines()})
    cfg = caravan_files.config(str(tmp_path / "store"), basins=["x_1", "x_2"], n_train_basins=3)
    store = open_run(cfg)
    with pytest.raises(ConfigError, match="n_train_basins: 3 training catchments asked for, but "
                                          "the run has only 2"):
        prepare(cfg, store)
    assert not store.exists(layout.CATCHMENTS)
    # skips that leave too few are caught as well, still before any training
    attributes = "gauge_id,p_mean,aridity\nx_1,2.0,0.5\nx_2,,0.7\n"
    caravan_files.write({"x_1": caravan_files.lines(), "x_2": caravan_files.lines()},
                        attributes=attributes)
    fewer = cfg.replace(n_train_basins=2, run_id="fewer")
    with pytest.raises(ConfigError, match="the run has only 1 usable catchment"):
        prepare(fewer, open_run(fewer))
    assert not run_store(fewer).exists(layout.CHECKPOINTS)


def test_a_test_period_outside_the_data_stops_before_training(caravan_files, tmp_path,
                                                              capsys) -> None:
    """It used to train, fail every decoder, and exit 0 with a report."""
    from hybrid.cli import main

    caravan_files.write({"x_1": caravan_files.lines(), "x_2": caravan_files.lines()})
    path = tmp_path / "run.yml"
    cfg = caravan_files.config(str(tmp_path / "store"), test_start_date="2030-01-01",
                               test_end_date="2030-12-31")
    path.write_text(cfg.to_yaml())
    assert main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: prepare: no usable catchment (catchment x_1: no day with "
                              "every input in the test period 2030-01-01..2030-12-31")
    assert not run_store(cfg).exists(layout.CHECKPOINTS)
