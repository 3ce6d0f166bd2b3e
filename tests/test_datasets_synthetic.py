"""The synthetic dataset: deterministic, physically sane, and learnable from its attributes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hybrid.data.datasets import get_dataset
from hybrid.data.datasets.synthetic import (
    ATTRIBUTES,
    VARIABLES,
    SyntheticDataset,
    draw_design,
    model_parameters,
)
from hybrid.errors import ConfigError, DataError

N_CATCHMENTS = 30


@pytest.fixture(scope="module")
def dataset() -> SyntheticDataset:
    return SyntheticDataset(n_catchments=N_CATCHMENTS, seed=0)


@pytest.fixture(scope="module")
def frames(dataset: SyntheticDataset) -> dict[str, pd.DataFrame]:
    return {gauge_id: dataset.load_timeseries(gauge_id) for gauge_id in dataset.gauge_ids()}


@pytest.fixture(scope="module")
def attributes(dataset: SyntheticDataset) -> pd.DataFrame:
    return dataset.load_attributes()


@pytest.fixture(scope="module")
def summary(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            gauge_id: {
                "p": frame["total_precipitation_sum"].mean(),
                "q": frame["streamflow"].mean(),
            }
            for gauge_id, frame in frames.items()
        }
    ).T


def _spearman(a: pd.Series, b: pd.Series) -> float:
    return float(np.corrcoef(a.rank(), b.rank())[0, 1])


def _nse(obs: np.ndarray, sim: np.ndarray) -> float:
    return float(1.0 - np.sum((obs - sim) ** 2) / np.sum((obs - obs.mean()) ** 2))


# ---------------------------------------------------------------------------- layout and registry


def test_registry_finds_it() -> None:
    ds = get_dataset("synthetic", None, n_catchments=3)
    assert isinstance(ds, SyntheticDataset)
    assert ds.gauge_ids() == ["synthetic_000", "synthetic_001", "synthetic_002"]


def test_defaults() -> None:
    ds = SyntheticDataset()
    assert len(ds.gauge_ids()) == 12
    frame = ds.load_timeseries("synthetic_011")
    assert frame.index[0] == pd.Timestamp("1990-01-01")
    assert frame.index[-1] == pd.Timestamp("2009-12-31")


def test_frame_layout(frames: dict[str, pd.DataFrame]) -> None:
    frame = frames["synthetic_000"]
    assert list(frame.columns) == VARIABLES
    assert isinstance(frame.index, pd.DatetimeIndex)
    assert frame.index.name == "date"
    assert len(frame) == len(pd.date_range("1990-01-01", "2009-12-31", freq="D"))
    assert (frame.index.to_series().diff().dropna() == pd.Timedelta(days=1)).all()
    assert all(dtype == np.float64 for dtype in frame.dtypes)


def test_custom_period() -> None:
    frame = SyntheticDataset(start_date="2000-03-01", end_date="2002-02-28").load_timeseries(
        "synthetic_000"
    )
    assert frame.index[0] == pd.Timestamp("2000-03-01")
    assert frame.index[-1] == pd.Timestamp("2002-02-28")


def test_attribute_table(
    dataset: SyntheticDataset, attributes: pd.DataFrame, frames: dict[str, pd.DataFrame]
) -> None:
    assert attributes.index.name == "gauge_id"
    assert list(attributes.index) == dataset.gauge_ids()
    assert list(attributes.columns) == ATTRIBUTES
    for column in ["p_mean", "pet_mean", "aridity", "frac_snow", "t_mean", "area"]:
        assert column in attributes.columns
    assert all(dtype == np.float64 for dtype in attributes.dtypes)
    assert not attributes.isna().any().any()
    # The climate indices describe the very series load_timeseries returns.
    frame = frames["synthetic_004"]
    row = attributes.loc["synthetic_004"]
    assert row["p_mean"] == pytest.approx(frame["total_precipitation_sum"].mean())
    assert row["pet_mean"] == pytest.approx(frame["potential_evaporation_sum"].mean())
    assert row["t_mean"] == pytest.approx(frame["temperature_2m_mean"].mean())
    assert row["aridity"] == pytest.approx(row["pet_mean"] / row["p_mean"])
    assert ((attributes["frac_snow"] >= 0) & (attributes["frac_snow"] <= 1)).all()
    # A subset comes back in the order asked for, with identical values.
    subset = dataset.load_attributes(["synthetic_007", "synthetic_002"])
    assert list(subset.index) == ["synthetic_007", "synthetic_002"]
    pd.testing.assert_frame_equal(subset, attributes.loc[["synthetic_007", "synthetic_002"]])


@pytest.mark.parametrize("gauge_id", ["synthetic_012", "synthetic_1", "camels_01013500", ""])
def test_unknown_gauge_is_a_data_error(gauge_id: str) -> None:
    ds = SyntheticDataset(n_catchments=12)
    with pytest.raises(DataError, match="unknown catchment") as err:
        ds.load_timeseries(gauge_id)
    assert repr(gauge_id) in str(err.value)
    with pytest.raises(DataError):
        ds.load_attributes([gauge_id])


@pytest.mark.parametrize(
    "options",
    [
        {"n_catchments": 0},
        {"n_catchments": 2.5},
        {"seed": -1},
        {"start_date": "not a date"},
        {"start_date": "2000-01-01", "end_date": "2000-06-30"},
        {"n_basins": 3},
    ],
)
def test_bad_options_are_config_errors(options: dict) -> None:
    with pytest.raises(ConfigError, match="synthetic"):
        SyntheticDataset(**options)


# ---------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_data(frames: dict[str, pd.DataFrame]) -> None:
    again = SyntheticDataset(n_catchments=N_CATCHMENTS, seed=0)
    pd.testing.assert_frame_equal(again.load_timeseries("synthetic_001"), frames["synthetic_001"])
    pd.testing.assert_frame_equal(
        again.load_attributes(), SyntheticDataset(n_catchments=N_CATCHMENTS).load_attributes()
    )


def test_different_seed_gives_different_data(frames: dict[str, pd.DataFrame]) -> None:
    other = SyntheticDataset(n_catchments=N_CATCHMENTS, seed=1).load_timeseries("synthetic_001")
    assert not np.allclose(other["streamflow"], frames["synthetic_001"]["streamflow"])
    assert not np.allclose(
        other["total_precipitation_sum"], frames["synthetic_001"]["total_precipitation_sum"]
    )


def test_catchment_does_not_depend_on_the_others(frames: dict[str, pd.DataFrame]) -> None:
    # Catchment 3 generated alone, from a dataset of another size, equals the one generated
    # after 0..2 in the module fixture: a Ray worker can load any catchment on its own.
    alone = SyntheticDataset(n_catchments=4, seed=0).load_timeseries("synthetic_003")
    pd.testing.assert_frame_equal(alone, frames["synthetic_003"])
    attrs = SyntheticDataset(n_catchments=4, seed=0).load_attributes(["synthetic_003"])
    pd.testing.assert_frame_equal(
        attrs, SyntheticDataset(n_catchments=N_CATCHMENTS).load_attributes(["synthetic_003"])
    )


# ---------------------------------------------------------------------------- physical sanity


def test_series_are_physical(frames: dict[str, pd.DataFrame]) -> None:
    for gauge_id, frame in frames.items():
        assert not frame.isna().any().any(), gauge_id
        assert (frame["streamflow"] >= 0).all(), gauge_id
        assert (frame["total_precipitation_sum"] >= 0).all(), gauge_id
        assert (frame["potential_evaporation_sum"] >= 0).all(), gauge_id
        assert frame["temperature_2m_mean"].between(-60, 50).all(), gauge_id


def test_long_term_water_balance(summary: pd.DataFrame) -> None:
    runoff_ratio = summary["q"] / summary["p"]
    assert (summary["q"] < summary["p"]).all()
    assert runoff_ratio.between(0.05, 0.9).all(), runoff_ratio.sort_values()
    # ... and the catchments differ: not one ratio for all.
    assert runoff_ratio.max() - runoff_ratio.min() > 0.3


def test_snow_catchments_have_a_spring_melt_peak(
    frames: dict[str, pd.DataFrame], attributes: pd.DataFrame
) -> None:
    def melt_ratio(gauge_id: str) -> float:
        frame = frames[gauge_id]
        monthly = frame["streamflow"].groupby(frame.index.month).mean()
        return float(monthly[[5, 6]].mean() / monthly[[1, 2]].mean())

    snowy = attributes.index[attributes["frac_snow"] > 0.5]
    rainy = attributes.index[attributes["frac_snow"] < 0.05]
    assert len(snowy) >= 3 and len(rainy) >= 3
    for gauge_id in snowy:
        frame = frames[gauge_id]
        peak_month = frame["streamflow"].groupby(frame.index.month).mean().idxmax()
        assert 4 <= peak_month <= 7, (gauge_id, peak_month)
        assert melt_ratio(gauge_id) > 5.0, gauge_id
    for gauge_id in rainy:
        assert melt_ratio(gauge_id) < 3.0, gauge_id


# ---------------------------------------------------------------------------- attributes explain


def test_attributes_explain_differences(summary: pd.DataFrame, attributes: pd.DataFrame) -> None:
    assert _spearman(attributes["p_mean"], summary["q"]) > 0.7
    assert _spearman(attributes["aridity"], summary["q"] / summary["p"]) < -0.8


def test_model_parameters_are_functions_of_the_published_attributes(
    attributes: pd.DataFrame,
) -> None:
    # Everything that sets a catchment's response is in the attribute table, so a regional model
    # can learn it; the hidden generator draws only add weather.
    for index in (0, 5, 17):
        published = attributes.iloc[index].to_dict()
        assert model_parameters(published) == pytest.approx(model_parameters(draw_design(0, index)))


def test_streamflow_is_learnable_from_forcing_and_attributes(
    frames: dict[str, pd.DataFrame], attributes: pd.DataFrame
) -> None:
    """A cheap regional model on lagged forcing + attributes generalises to a held-out period.

    This stands in for "an LSTM reaches NSE > 0.7": if gradient-boosted trees on hand-made lags
    already get NSE > 0.5, the signal is there for a sequence model to pick up.
    """
    from sklearn.ensemble import HistGradientBoostingRegressor

    static = [
        "p_mean",
        "aridity",
        "frac_snow",
        "soil_capacity",
        "baseflow_k",
        "slope",
        "area",
        "clay_frac",
        "forest_frac",
    ]

    def features(frame: pd.DataFrame, attrs: pd.Series) -> pd.DataFrame:
        p, t = frame["total_precipitation_sum"], frame["temperature_2m_mean"]
        columns = {f"p{w}": p.rolling(w).mean() for w in (1, 3, 7, 30, 90, 365)}
        columns.update({f"t{w}": t.rolling(w).mean() for w in (1, 7, 30)})
        columns["pet90"] = frame["potential_evaporation_sum"].rolling(90).mean()
        columns["snowfall180"] = (p * (t < 0)).rolling(180).sum()
        table = pd.DataFrame(columns)
        for name in static:
            table[name] = attrs[name]
        table["y"] = frame["streamflow"]
        return table

    gauges = list(frames)[:12]
    table = pd.concat(
        {g: features(frames[g], attributes.loc[g]) for g in gauges}, names=["gauge_id", "date"]
    ).dropna()
    dates = table.index.get_level_values("date")
    train = table[dates < "2005-01-01"].iloc[::3]
    test = table[dates >= "2005-01-01"]
    model = HistGradientBoostingRegressor(max_iter=100, random_state=0)
    model.fit(train.drop(columns="y"), train["y"])
    predicted = model.predict(test.drop(columns="y"))

    assert _nse(test["y"].to_numpy(), predicted) > 0.5
    test_gauges = test.index.get_level_values("gauge_id")
    per_catchment = [
        _nse(test["y"].to_numpy()[test_gauges == g], predicted[test_gauges == g]) for g in gauges
    ]
    assert np.median(per_catchment) > 0.5, per_catchment
