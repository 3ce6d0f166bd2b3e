"""Derived inputs (``hybrid.data.derived``): Oudin's temperature-based PET, checked against
hand-computed values, and computed into the canonical tables like any other input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hybrid.data.catalog import load_catchment
from hybrid.data.derived import extraterrestrial_radiation, pet_oudin
from hybrid.errors import ConfigError
from hybrid.stages.prepare import prepare
from hybrid.store import layout
from hybrid.store.runs import open_run

OUDIN = {"pet_oudin": {"temperature": "temperature_2m_mean", "latitude": "gauge_lat"}}


def test_extraterrestrial_radiation_matches_fao56_example_8() -> None:
    # FAO-56, example 8: 20 degrees south on 3 September (day 246): Ra = 32.2 MJ m-2 day-1
    assert extraterrestrial_radiation(-20.0, np.array([246]))[0] == pytest.approx(32.2, abs=0.05)
    # polar night: no sun at 80 N in late December; polar day is finite
    assert extraterrestrial_radiation(80.0, np.array([355]))[0] == pytest.approx(0.0, abs=1e-6)
    assert np.isfinite(extraterrestrial_radiation(80.0, np.array([172]))[0])


def test_oudin_pet_by_hand() -> None:
    series = pd.DataFrame({"t": [15.0, -5.0, -10.0, np.nan]},
                          index=pd.DatetimeIndex(["2001-09-03"] * 4, name="date"))
    pe = pet_oudin(series, {"lat": -20.0}, {"temperature": "t", "latitude": "lat"}).to_numpy()
    ra = extraterrestrial_radiation(-20.0, np.array([246]))[0]
    # Re / (lambda rho) * (T + 5) / 100, in mm/day: 32.2 / 2.45 * 0.20 = 2.63 mm/day
    assert pe[0] == pytest.approx(ra / 2.45 * 20 / 100) and pe[0] == pytest.approx(2.63, abs=0.01)
    assert pe[1] == 0.0 and pe[2] == 0.0  # no PE at or below -5 degC
    assert np.isnan(pe[3])  # a missing temperature stays missing


def test_unknown_or_incomplete_derived_inputs_are_config_errors(tiny_config) -> None:
    with pytest.raises(ConfigError, match="derived_inputs.pet_hamon: unknown derived input"):
        tiny_config(derived_inputs={"pet_hamon": {}})
    with pytest.raises(ConfigError, match="derived_inputs.pet_oudin.latitude: missing"):
        tiny_config(derived_inputs={"pet_oudin": {"temperature": "t"}})


def test_prepare_writes_the_derived_column(caravan_files, tmp_path) -> None:
    attributes = "gauge_id,p_mean,aridity,gauge_lat\nx_1,2.0,0.5,44.6\nx_2,3.0,0.6,\n"
    caravan_files.write({"x_1": caravan_files.lines(), "x_2": caravan_files.lines()},
                        attributes=attributes)
    cfg = caravan_files.config(str(tmp_path / "store"), derived_inputs=OUDIN,
                               dynamic_inputs=["total_precipitation_sum", "temperature_2m_mean",
                                               "pet_oudin"])
    store = open_run(cfg)
    result = prepare(cfg, store)
    assert sorted(result.done) == ["x_1"]
    assert "gauge_lat" in result.skipped["x_2"]  # no latitude: skipped, with why
    frame = load_catchment(store, "x_1")
    assert list(frame.columns) == ["total_precipitation_sum", "temperature_2m_mean",
                                   "pet_oudin", "streamflow"]
    day = frame.index[200]
    expected = pet_oudin(frame.loc[[day]], {"lat": 44.6},
                         {"temperature": "temperature_2m_mean", "latitude": "lat"}).iloc[0]
    assert frame.loc[day, "pet_oudin"] == pytest.approx(expected, rel=1e-5)
    assert store.exists(layout.manifest_key(layout.CATCHMENTS))
