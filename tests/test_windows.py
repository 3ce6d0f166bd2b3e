"""Sample windows and normalisation (hybrid.data.windows) on hand-made arrays.

Every expectation is computed independently of the code under test: windows are sliced by hand
from the concatenated series, validity is counted day by day, and statistics come from numpy on
the training rows only.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from hybrid.data.windows import (
    CatchmentArrays,
    Scaler,
    WindowSampler,
    valid_targets,
    valid_window_ends,
)
from hybrid.errors import StoreError

INPUTS = ["p", "t"]


def _by_hand_valid_ends(x: np.ndarray, seq_length: int) -> np.ndarray:
    return np.array([end >= seq_length - 1 and np.isfinite(x[end - seq_length + 1:end + 1]).all()
                     for end in range(len(x))])


def test_valid_window_ends_excludes_every_window_covering_a_nan() -> None:
    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    x[7, 1] = np.nan  # one input of one day
    x[15, 0] = np.inf
    ok = valid_window_ends(x, seq_length=4)
    expected = _by_hand_valid_ends(x, 4)
    np.testing.assert_array_equal(ok, expected)
    # spelled out: the first 3 days have no full window, days 7..10 and 15..18 cover a gap
    assert np.flatnonzero(ok).tolist() == [3, 4, 5, 6, 11, 12, 13, 14, 19]


def test_valid_window_ends_seq_length_one_and_all_nan() -> None:
    x = np.ones((5, 1), np.float32)
    x[2] = np.nan
    assert valid_window_ends(x, 1).tolist() == [True, True, False, True, True]
    assert not valid_window_ends(np.full((10, 2), np.nan, np.float32), 3).any()


def test_valid_targets_needs_one_observed_value_in_the_last_n() -> None:
    y = np.array([np.nan, 1.0, np.nan, np.nan, np.nan, 2.0, np.nan, np.nan], np.float32)
    assert valid_targets(y, 1).tolist() == [False, True, False, False, False, True, False, False]
    # with n = 3, a day is valid when any of itself and the 2 days before is observed
    assert valid_targets(y, 3).tolist() == [False, True, True, True, False, True, True, True]


def _catchment(gauge_id: str, start: str, n_days: int, n_static: int, seed: int,
               nan_days: tuple[int, ...] = ()) -> CatchmentArrays:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_days, 2)).astype(np.float32)
    y = rng.normal(size=n_days).astype(np.float32)
    for d in nan_days:
        x[d, 0] = np.nan
    y[::7] = np.nan
    return CatchmentArrays(gauge_id, pd.date_range(start, periods=n_days, freq="D"), x, y,
                           rng.normal(size=n_static).astype(np.float32))


@pytest.mark.parametrize("predict_last_n", [1, 5])
def test_sampler_batches_are_the_windows_sliced_by_hand(predict_last_n: int) -> None:
    seq = 10
    cats = [_catchment("a", "2000-01-01", 50, 3, 0, nan_days=(20,)),
            _catchment("b", "2000-01-01", 35, 3, 1),
            _catchment("c", "2000-01-01", 60, 3, 2, nan_days=(5, 40))]
    sampler = WindowSampler(cats, seq, predict_last_n, dt.date(2000, 1, 1), dt.date(2000, 12, 31))
    x = np.concatenate([c.x for c in cats])
    y = np.concatenate([c.y for c in cats])
    offsets = np.cumsum([0] + [len(c.x) for c in cats])

    # the samples are exactly the valid (window, target) days of each catchment, nothing more
    expected_ends = []
    for i, c in enumerate(cats):
        ok = _by_hand_valid_ends(c.x, seq)
        for end in np.flatnonzero(ok):
            if np.isfinite(c.y[max(0, end - predict_last_n + 1):end + 1]).any():
                expected_ends.append(end + offsets[i])
    assert sampler.ends.tolist() == expected_ends

    idx = np.arange(len(sampler))
    x_d, x_s, y_b = sampler.batch(idx)
    assert x_d.shape == (len(idx), seq, 2)
    assert y_b.shape == (len(idx), predict_last_n)
    for k, end in enumerate(sampler.ends):
        owner = int(np.searchsorted(offsets, end, side="right") - 1)
        # never crosses a catchment boundary
        assert offsets[owner] <= end - seq + 1 and end < offsets[owner + 1]
        assert sampler.owners[k] == owner
        np.testing.assert_array_equal(x_d[k].numpy(), x[end - seq + 1:end + 1])
        np.testing.assert_array_equal(y_b[k].numpy(), y[end - predict_last_n + 1:end + 1])
        np.testing.assert_array_equal(x_s[k].numpy(), cats[owner].static)
        assert np.isfinite(x_d[k].numpy()).all()


def test_sampler_respects_the_period_of_the_window_end() -> None:
    cats = [_catchment("a", "2000-01-01", 100, 1, 0)]
    sampler = WindowSampler(cats, 10, 1, dt.date(2000, 2, 1), dt.date(2000, 2, 29))
    dates = cats[0].dates[sampler.ends]
    assert dates.min() >= pd.Timestamp("2000-02-01")
    assert dates.max() <= pd.Timestamp("2000-02-29")
    assert len(sampler) == 29 - len([d for d in range(31, 60) if d % 7 == 0])


def test_sampler_windows_are_views_not_copies() -> None:
    """Batches are cut from the one concatenated series: a write to it shows through every
    window, which no materialised (samples x seq_length x D) array would do."""
    cats = [_catchment("a", "2000-01-01", 400, 2, 0), _catchment("b", "2000-01-01", 400, 2, 1)]
    sampler = WindowSampler(cats, 365, 1, dt.date(2000, 1, 1), dt.date(2002, 1, 1))
    assert sampler.x.shape == (800, 2)  # O(T x D) for both catchments together
    last = int(np.flatnonzero(sampler.owners == 1)[-1])  # catchment b's last window
    end = int(sampler.ends[last])  # the day that window ends on, in the concatenated series
    sampler.x[end, 0] = 12345.0
    sampler.y[end] = -7.0
    x_d, _, y = sampler.batch(np.array([last]))
    assert x_d[0, -1, 0] == 12345.0 and y[0, -1] == -7.0


# --- Scaler ---------------------------------------------------------------------------------


def _frame(seed: int, start: str = "2000-01-01", n_days: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    index = pd.date_range(start, periods=n_days, freq="D", name="date")
    return pd.DataFrame({"p": rng.gamma(1.0, 3.0, n_days), "t": rng.normal(10, 5, n_days),
                         "q": rng.gamma(2.0, 1.0, n_days)}, index=index)


def _attributes() -> pd.DataFrame:
    return pd.DataFrame({"area": [10.0, 20.0, 60.0, 1000.0], "slope": [1.0, 1.0, 1.0, 1.0]},
                        index=pd.Index(["a", "b", "c", "other"], name="gauge_id"))


START, END = dt.date(2000, 1, 1), dt.date(2000, 9, 30)


def test_scaler_uses_only_the_training_period_of_the_given_catchments() -> None:
    frames = {"a": _frame(0), "b": _frame(1), "c": _frame(2)}
    frames["b"].loc["2000-03-01", "t"] = np.nan
    scaler = Scaler.fit(frames, _attributes(), INPUTS, ["area", "slope"], "q", START, END)
    rows = pd.concat([f.loc["2000-01-01":"2000-09-30"] for f in frames.values()])
    np.testing.assert_allclose(scaler.input_mean, np.nanmean(rows[INPUTS], axis=0))
    np.testing.assert_allclose(scaler.input_std, np.nanstd(rows[INPUTS], axis=0))
    assert scaler.target_mean == pytest.approx(rows["q"].mean())
    assert scaler.target_std == pytest.approx(rows["q"].std(ddof=0))
    # statics of the training catchments only: "other" (area 1000) must not count
    assert scaler.static_mean == pytest.approx([30.0, 1.0])
    assert scaler.static_std == pytest.approx([np.std([10.0, 20.0, 60.0]), 1.0])  # constant -> 1

    # changing the test period (after END) or another catchment changes nothing
    changed = {k: f.copy() for k, f in frames.items()}
    for f in changed.values():
        f.loc["2000-10-01":, ["p", "t", "q"]] *= 100.0
    again = Scaler.fit(changed, _attributes().assign(area=[10.0, 20.0, 60.0, -5.0]), INPUTS,
                       ["area", "slope"], "q", START, END)
    assert again == scaler
    # while changing a training-period value does change it
    changed["a"].loc["2000-05-01", "p"] += 1000.0
    assert Scaler.fit(changed, _attributes(), INPUTS, ["area", "slope"], "q", START,
                      END).input_mean != scaler.input_mean


def test_scaler_constant_input_is_centred_and_says_so() -> None:
    frames = {"a": _frame(0), "b": _frame(1)}
    for f in frames.values():
        f["t"] = 4.0
    scaler = Scaler.fit(frames, _attributes(), INPUTS, ["slope"], "q", START, END)
    assert scaler.input_std[1] == 1.0
    assert scaler.input_mean[1] == pytest.approx(4.0)
    assert scaler.static_std == [1.0]
    # not silent: each fallback is a note the trainer logs
    assert len(scaler.notes) == 2
    assert "variable 't' is constant (4)" in scaler.notes[0]
    assert "static attribute 'slope' is constant" in scaler.notes[1]
    x = scaler.inputs(frames["a"])
    assert x.dtype == np.float32 and np.isfinite(x).all()
    np.testing.assert_allclose(x[:, 1], 0.0)
    assert Scaler.from_dict(scaler.to_dict()) == scaler
    y = scaler.target_values(frames["a"])
    np.testing.assert_allclose(scaler.denormalise(y), frames["a"]["q"], rtol=1e-5)


@pytest.mark.parametrize("data", [None, {}])
def test_scaler_from_nothing_is_a_store_error_naming_the_scaler(data) -> None:
    with pytest.raises(StoreError, match="scaler"):
        Scaler.from_dict(data)


def test_check_inputs_names_the_mismatched_field() -> None:
    scaler = Scaler.fit({"a": _frame(0)}, _attributes(), INPUTS, ["area"], "q", START, END)
    scaler.check_inputs(INPUTS, ["area"])  # the same inputs pass
    with pytest.raises(StoreError, match="dynamic_inputs"):
        scaler.check_inputs(["t", "p"], ["area"])  # order matters: columns feed fixed weights
    with pytest.raises(StoreError, match="static_attributes"):
        scaler.check_inputs(INPUTS, ["area", "slope"])


def test_scaler_treats_infinite_values_as_missing() -> None:
    """One inf (or a value beyond float32) in one training catchment must not turn the whole
    variable's statistics into a silent 0 / 1 fallback for every catchment."""
    frames = {"a": _frame(0), "b": _frame(1)}
    clean = Scaler.fit(frames, _attributes(), INPUTS, ["area"], "q", START, END)
    frames["b"].loc["2000-03-01", "q"] = np.inf
    frames["b"].loc["2000-03-02", "p"] = -np.inf
    scaler = Scaler.fit(frames, _attributes(), INPUTS, ["area"], "q", START, END)
    rows = pd.concat([f.loc["2000-01-01":"2000-09-30"] for f in frames.values()])
    finite_q = rows["q"][np.isfinite(rows["q"])]
    assert scaler.target_mean == pytest.approx(finite_q.mean())
    assert scaler.target_std == pytest.approx(finite_q.std(ddof=0))
    assert scaler.target_mean == pytest.approx(clean.target_mean, rel=0.05)
    assert np.isfinite(scaler.input_mean).all() and scaler.notes == []


def test_scaler_refuses_a_variable_with_no_finite_value() -> None:
    from hybrid.errors import DataError

    frames = {"a": _frame(0), "b": _frame(1)}
    for f in frames.values():
        f.loc[:, "t"] = np.nan
    with pytest.raises(DataError, match="variable 't' has no finite value in the training "
                                        "period"):
        Scaler.fit(frames, _attributes(), INPUTS, ["area"], "q", START, END)
