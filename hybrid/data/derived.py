"""Derived inputs: variables computed from a catchment's own series and attributes while its
canonical table is built, so they are cleaned, normalised and windowed like any other input.

``pet_oudin`` is a temperature-based potential evapotranspiration (Oudin et al., 2005, J.
Hydrol. 303): PE = Re / (lambda rho) * (T + 5) / 100 when T > -5 degC, else 0, with Re the
extraterrestrial radiation from latitude and day of year (FAO-56, Allen et al. 1998, eq. 21-25).
It exists because Caravan's ERA5-Land ``potential_evaporation_sum`` is known to be unrealistic
for many catchments (about 4x precipitation on average in the CAMELS-US subset; Caravan v1.5
replaced it); a formula that needs only daily mean temperature and latitude is available
everywhere.

A config asks for one by name and says which columns feed it::

    derived_inputs: {pet_oudin: {temperature: temperature_2m_mean, latitude: gauge_lat}}
    dynamic_inputs: [total_precipitation_sum, temperature_2m_mean, pet_oudin]

Adding one: a function ``(series, site, options) -> pd.Series`` and a line in ``DERIVED``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hybrid.errors import ConfigError, SkipCatchment

#: solar constant, MJ m-2 min-1 (FAO-56)
SOLAR_CONSTANT = 0.0820
#: latent heat of vaporisation (MJ kg-1) times the density of water (kg m-3), per mm
LAMBDA_RHO_MM = 2.45


def extraterrestrial_radiation(latitude_deg: float, day_of_year: np.ndarray) -> np.ndarray:
    """Daily extraterrestrial radiation Ra (MJ m-2 day-1), FAO-56 equations 21-25; polar day
    and night are handled by clipping the sunset hour angle's argument to [-1, 1]."""
    phi = np.deg2rad(latitude_deg)
    j = np.asarray(day_of_year, dtype=np.float64)
    dr = 1 + 0.033 * np.cos(2 * np.pi * j / 365)
    delta = 0.409 * np.sin(2 * np.pi * j / 365 - 1.39)
    omega = np.arccos(np.clip(-np.tan(phi) * np.tan(delta), -1.0, 1.0))
    return (24 * 60 / np.pi) * SOLAR_CONSTANT * dr * (
        omega * np.sin(phi) * np.sin(delta) + np.cos(phi) * np.cos(delta) * np.sin(omega))


def pet_oudin(series: pd.DataFrame, site: Mapping[str, float], options: Mapping[str, str]
              ) -> pd.Series:
    """Oudin's PE (mm/day) from daily mean temperature (degC) and the catchment's latitude."""
    temperature = series[options["temperature"]].to_numpy(np.float64)
    radiation = extraterrestrial_radiation(float(site[options["latitude"]]),
                                           series.index.day_of_year.to_numpy())
    pe = radiation / LAMBDA_RHO_MM * (temperature + 5.0) / 100.0
    pe = np.where(temperature + 5.0 > 0, pe, 0.0)
    return pd.Series(np.where(np.isfinite(temperature), pe, np.nan), index=series.index)


@dataclass(frozen=True)
class Derived:
    compute: Callable[[pd.DataFrame, Mapping[str, float], Mapping[str, str]], pd.Series]
    #: options naming the series' columns it reads
    columns: tuple[str, ...]
    #: options naming the attributes it reads
    attributes: tuple[str, ...]


DERIVED = {"pet_oudin": Derived(pet_oudin, columns=("temperature",), attributes=("latitude",))}


def check_derived(derived: Mapping[str, Mapping[str, str]]) -> None:
    """Config check: known names and every option each one needs (before any data is read)."""
    for name, options in derived.items():
        if name not in DERIVED:
            raise ConfigError(f"derived_inputs.{name}: unknown derived input; known: "
                              f"{', '.join(sorted(DERIVED))}")
        spec = DERIVED[name]
        wanted = {*spec.columns, *spec.attributes}
        for key in sorted(wanted - set(options)):
            raise ConfigError(f"derived_inputs.{name}.{key}: missing (it names the "
                              f"{'column' if key in spec.columns else 'attribute'} to use)")
        for key in sorted(set(options) - wanted):
            raise ConfigError(f"derived_inputs.{name}.{key}: unknown option; known: "
                              f"{', '.join(sorted(wanted))}")


def site_attributes(derived: Mapping[str, Mapping[str, str]]) -> list[str]:
    """The attribute columns the derived inputs read (latitude ...)."""
    return sorted({options[key] for name, options in derived.items()
                   for key in DERIVED[name].attributes})


def add_derived(derived: Mapping[str, Mapping[str, str]], gauge_id: str, series: pd.DataFrame,
                site: Mapping[str, float] | None) -> pd.DataFrame:
    """``series`` with one column per derived input, computed from its own columns."""
    if not derived:
        return series
    out = series.copy()
    for name, options in derived.items():
        spec = DERIVED[name]
        for key in spec.columns:
            if options[key] not in series.columns:
                raise ConfigError(f"derived_inputs.{name}.{key}: {options[key]!r} is not a "
                                  f"variable of catchment {gauge_id}")
        for key in spec.attributes:
            value = (site or {}).get(options[key])
            if value is None or not np.isfinite(float(value)):
                raise SkipCatchment(gauge_id, f"attribute {options[key]!r} (for derived_inputs."
                                              f"{name}) is missing or not a number")
        out[name] = spec.compute(series, site, options)
    return out
