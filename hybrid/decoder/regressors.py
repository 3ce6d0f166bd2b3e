"""Per-catchment decoders: scikit-learn regressors behind one small factory.

A decoder maps the encoder's hidden state on a day to that day's streamflow. The random forest is
the paper's choice; extra trees and histogram gradient boosting are cheaper alternatives worth
comparing. The random forest's defaults come from a measured Pareto front on real CAMELS
catchments (``benchmarks/bench_rf_pareto.py``, BENCHMARKS.md); the paper's TF-DF settings (300
trees, depth 16) cost about 44x the fit time for the same NSE.

Adding a decoder is one function and one line: write ``_my_decoder(n_jobs, seed, params)``
returning an unfitted scikit-learn regressor (project defaults overridden by ``params``, the
config's ``decoder.params``), and add ``"my_decoder": _my_decoder`` to ``_DECODERS``. The config
then accepts ``decoder: {name: my_decoder}`` and checks its params before any work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sklearn.base import RegressorMixin

from hybrid.errors import ConfigError


def _random_forest(n_jobs: int, seed: int, params: dict[str, Any]) -> RegressorMixin:
    from sklearn.ensemble import RandomForestRegressor

    # the knee of the measured Pareto front (BENCHMARKS.md, 40 CAMELS-US catchments): each tree
    # on a quarter of the days (bagging on small samples regularises as well as it saves) and
    # 25 of them match 100 full-sample trees in NSE for a 15th of the fit time and a 10th of
    # the size
    defaults = {"n_estimators": 25, "max_samples": 0.25, "min_samples_leaf": 5,
                "max_features": 0.33}
    return RandomForestRegressor(n_jobs=n_jobs, random_state=seed, **{**defaults, **params})


def _extra_trees(n_jobs: int, seed: int, params: dict[str, Any]) -> RegressorMixin:
    from sklearn.ensemble import ExtraTreesRegressor

    defaults = {"n_estimators": 100, "min_samples_leaf": 5, "max_features": 0.33}
    return ExtraTreesRegressor(n_jobs=n_jobs, random_state=seed, **{**defaults, **params})


def _hist_gradient_boosting(n_jobs: int, seed: int, params: dict[str, Any]) -> RegressorMixin:
    # HistGradientBoosting threads through OpenMP; the task's CPU reservation (OMP_NUM_THREADS,
    # which Ray sets from num_cpus) bounds it, so n_jobs has nothing to set here.
    from sklearn.ensemble import HistGradientBoostingRegressor

    defaults = {"max_iter": 300, "learning_rate": 0.05, "early_stopping": False}
    return HistGradientBoostingRegressor(random_state=seed, **{**defaults, **params})


_DECODERS: dict[str, Callable[[int, int, dict[str, Any]], RegressorMixin]] = {
    "rf": _random_forest,
    "extra_trees": _extra_trees,
    "hist_gradient_boosting": _hist_gradient_boosting,
}


def decoder_names() -> list[str]:
    return sorted(_DECODERS)


def make_decoder(name: str, params: dict[str, Any], n_jobs: int = 1, seed: int = 0):
    """A fresh, unfitted decoder; a bad hyper-parameter is reported as a config error."""
    try:
        factory = _DECODERS[name]
    except KeyError:
        raise ConfigError(f"decoder.name: unknown decoder {name!r}") from None
    try:
        model = factory(n_jobs, seed, dict(params))
    except TypeError as err:  # an unknown keyword
        raise ConfigError(f"decoder.params: {err}") from None
    # scikit-learn checks values only in fit(), i.e. on a worker after pre-training, once per
    # catchment; check them here so a typo fails before any work.
    validate = getattr(model, "_validate_params", None)
    if validate is not None:
        try:
            validate()
        except (ValueError, TypeError) as err:
            raise ConfigError(f"decoder.params: {err}") from None
    return model


def check_decoder(name: str, params: dict[str, Any]) -> None:
    """Raise ``ConfigError`` for an unknown decoder or a bad hyper-parameter (name or value)."""
    make_decoder(name, params)
