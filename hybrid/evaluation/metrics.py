"""Streamflow skill metrics over one catchment's observed and simulated series.

Conventions shared by every metric here, so that scores are comparable with NeuralHydrology and
with the hybrid LSTM-RF paper:

* Arguments are ``(obs, sim)`` in that order (NeuralHydrology's order; ``hydroeval`` uses the
  reverse), both 1-D and of equal length.
* A time step counts only when *both* obs and sim are finite (pairwise deletion): a gap in the
  record must not be scored, and a NaN prediction (e.g. no full input window) must not be either.
* Standard deviations are population ones (``ddof=0``), as in NeuralHydrology and ``hydroeval``.
* A metric that is undefined for the data (fewer than 2 valid pairs, constant observations where
  the metric divides by their spread, zero mean flow where it divides by the mean, ...) is
  ``nan``, never an exception, so one odd catchment cannot stop a batch over hundreds. Only caller
  bugs raise ``ValueError``: mismatched shapes, non-1-D input, thresholds out of range.

``METRICS`` maps stable lowercase names to the functions; ``compute_all`` evaluates all of them.

Adding a metric is one function and one line: write ``my_metric(obs, sim) -> float`` under
``@_quiet`` using ``_valid`` for the pairwise mask (return ``NAN`` where undefined), and add
``"my_metric": my_metric`` to ``METRICS``. It then reaches every table through
``hybrid.evaluation.scoring.metric_row``, the summary gets its column, and a run's next pass
re-scores its catchments (the metrics partitions record which metrics they hold).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike
from scipy import signal

__all__ = [
    "METRICS",
    "alpha_nse",
    "beta_nse",
    "compute_all",
    "fhv",
    "flv",
    "fms",
    "kge_2009",
    "kge_2012",
    "nse",
    "peak_timing",
    "pearson_r",
    "rmse",
]

NAN = float("nan")

#: Flows below this are raised to it before taking logs (FMS, FLV). NeuralHydrology uses the same
#: floor so that zero-flow days and slightly negative simulations do not produce ``-inf``.
LOG_FLOOR = 1e-6


# ----------------------------------------------------------------------------------------------
# input handling


def _as_1d(name: str, values: ArrayLike) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim > 1:
        # accept (n, 1) columns the way NeuralHydrology does, but nothing genuinely 2-D
        arr = np.squeeze(arr)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D series, got shape {np.shape(values)}")
    return arr


def _paired(obs: ArrayLike, sim: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both series as float arrays plus the mask of time steps where both are finite."""
    o = _as_1d("obs", obs)
    s = _as_1d("sim", sim)
    if o.shape != s.shape:
        raise ValueError(
            f"obs and sim must have the same length, got {o.shape[0]} and {s.shape[0]}"
        )
    return o, s, np.isfinite(o) & np.isfinite(s)


def _valid(obs: ArrayLike, sim: ArrayLike) -> tuple[np.ndarray, np.ndarray] | None:
    """The pairwise-valid values, or None when fewer than 2 pairs remain (no metric is defined)."""
    o, s, mask = _paired(obs, sim)
    if np.count_nonzero(mask) < 2:
        return None
    return o[mask], s[mask]


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {value}")


def _quiet(fn: Callable[..., float]) -> Callable[..., float]:
    """Run a metric with numpy's floating-point warnings off.

    Absurd but possible inputs (a diverged model predicting 1e300) overflow in squares and sums;
    the result is then inf/nan, which is the honest answer, and a warning per catchment in a
    batch of hundreds would only bury real problems.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with np.errstate(all="ignore"):
            return fn(*args, **kwargs)

    return wrapper


def _fdc(values: np.ndarray) -> np.ndarray:
    """Flow duration curve: flows sorted from highest (exceedance ~0) to lowest (~1)."""
    return np.sort(values)[::-1]


# ----------------------------------------------------------------------------------------------
# efficiency scores and their components


@_quiet
def nse(obs: ArrayLike, sim: ArrayLike) -> float:
    """Nash-Sutcliffe efficiency (Nash & Sutcliffe, 1970).

    Undefined (``nan``) for constant observations: the benchmark it compares against, the
    observed mean, then has zero error itself.
    """
    pair = _valid(obs, sim)
    if pair is None:
        return NAN
    o, s = pair
    denom = np.sum((o - o.mean()) ** 2)
    if denom == 0.0:
        return NAN
    return float(1.0 - np.sum((s - o) ** 2) / denom)


@_quiet
def rmse(obs: ArrayLike, sim: ArrayLike) -> float:
    """Root mean squared error, in the units of the flows.

    Kept alongside NSE because it is not normalised by the catchment's variance, so it shows
    where absolute errors are large even when NSE looks good.
    """
    pair = _valid(obs, sim)
    if pair is None:
        return NAN
    o, s = pair
    return float(np.sqrt(np.mean((s - o) ** 2)))


@_quiet
def pearson_r(obs: ArrayLike, sim: ArrayLike) -> float:
    """Pearson correlation, the timing/shape component of both KGE variants.

    Computed directly rather than through ``scipy.stats.pearsonr`` so that a constant series
    gives ``nan`` silently instead of a warning.
    """
    pair = _valid(obs, sim)
    if pair is None:
        return NAN
    return _r(*pair)


def _r(o: np.ndarray, s: np.ndarray) -> float:
    do = o - o.mean()
    ds = s - s.mean()
    denom = np.sqrt(np.sum(do**2) * np.sum(ds**2))
    if not 0.0 < denom < np.inf:  # constant series, or spreads too large to square
        return NAN
    # rounding can push |r| a hair past 1 for (anti)perfectly correlated series
    return float(np.clip(np.sum(do * ds) / denom, -1.0, 1.0))


@_quiet
def alpha_nse(obs: ArrayLike, sim: ArrayLike) -> float:
    """Variability ratio std(sim)/std(obs), the alpha term of Gupta et al. (2009).

    This is the KGE-2009 alpha, reported on its own as NeuralHydrology's "Alpha-NSE"; 1 is ideal,
    below 1 means the simulation is too smooth.
    """
    spread = _with_spread(obs, sim)
    if spread is None:
        return NAN
    o, s, so = spread
    return float(s.std() / so)


@_quiet
def beta_nse(obs: ArrayLike, sim: ArrayLike) -> float:
    """Mean bias scaled by the observed spread, (mean(sim) - mean(obs)) / std(obs).

    NeuralHydrology's "Beta-NSE" (from the NSE decomposition of Gupta et al., 2009), not the KGE
    ratio mean(sim)/mean(obs): it is 0 when unbiased and positive when the simulation is too wet,
    and stays defined for catchments whose mean flow is near zero.
    """
    spread = _with_spread(obs, sim)
    if spread is None:
        return NAN
    o, s, so = spread
    return float((s.mean() - o.mean()) / so)


def _with_spread(obs: ArrayLike, sim: ArrayLike) -> tuple[np.ndarray, np.ndarray, float] | None:
    """The valid pairs and the observed std, or None where either is unusable (NaN then)."""
    pair = _valid(obs, sim)
    if pair is None:
        return None
    o, s = pair
    so = float(o.std())
    return None if so == 0.0 else (o, s, so)


def _kge_parts(obs: ArrayLike, sim: ArrayLike) -> tuple[float, float, float, float, float] | None:
    """(r, std_obs, std_sim, mean_obs, mean_sim) or None where KGE cannot be defined."""
    pair = _valid(obs, sim)
    if pair is None:
        return None
    o, s = pair
    r = _r(o, s)
    mo = float(o.mean())
    if np.isnan(r) or mo == 0.0:
        return None
    return r, float(o.std()), float(s.std()), mo, float(s.mean())


@_quiet
def kge_2009(obs: ArrayLike, sim: ArrayLike) -> float:
    """Kling-Gupta efficiency as first defined by Gupta et al. (2009).

    Uses alpha = std(sim)/std(obs) and beta = mean(sim)/mean(obs) with unit weights; this is what
    NeuralHydrology and ``hydroeval.kge`` call KGE. Because alpha is a ratio of standard
    deviations, a pure volume bias also shows up as a variability error; ``kge_2012`` avoids that.
    Undefined when either series is constant (r has no value) or the mean observed flow is zero.
    """
    parts = _kge_parts(obs, sim)
    if parts is None:
        return NAN
    r, so, ss, mo, ms = parts
    alpha = ss / so
    beta = ms / mo
    return float(1.0 - np.sqrt((r - 1.0) ** 2 + (alpha - 1.0) ** 2 + (beta - 1.0) ** 2))


@_quiet
def kge_2012(obs: ArrayLike, sim: ArrayLike) -> float:
    """Modified Kling-Gupta efficiency, KGE' (Kling et al., 2012).

    Replaces alpha by gamma, the ratio of coefficients of variation, so that variability and bias
    are not cross-correlated: ``sim = 2 * obs`` has gamma = 1 and is penalised only through beta.
    This is the variant the hybrid LSTM-RF paper's code reports as "KGE" (``hydroeval.kgeprime``).
    Additionally undefined when the simulated mean is zero (its CV does not exist).
    """
    parts = _kge_parts(obs, sim)
    if parts is None:
        return NAN
    r, so, ss, mo, ms = parts
    if ms == 0.0:
        return NAN
    gamma = (ss / ms) / (so / mo)
    beta = ms / mo
    return float(1.0 - np.sqrt((r - 1.0) ** 2 + (gamma - 1.0) ** 2 + (beta - 1.0) ** 2))


# ----------------------------------------------------------------------------------------------
# flow-duration-curve signatures (Yilmaz, Gupta & Wagener, 2008, WRR 44, W09417)
#
# These compare the two *distributions* of flow (each series sorted on its own), not the paired
# time steps; the pairwise mask still decides which days enter both curves. Segment sizes and
# positions use round(fraction * n), as NeuralHydrology does, so values match its reports.


@_quiet
def fhv(obs: ArrayLike, sim: ArrayLike, high_fraction: float = 0.02) -> float:
    """Percent bias of the peak-flow volume: the top ``high_fraction`` of each FDC.

    Positive when the simulation overestimates the highest flows. Needs at least
    ``1 / high_fraction / 2`` valid days (25 for the default 2 %) to contain any peak flows.
    """
    _check_fraction("high_fraction", high_fraction)
    pair = _valid(obs, sim)
    if pair is None:
        return NAN
    o, s = (_fdc(x) for x in pair)
    k = int(np.round(high_fraction * o.size))
    if k < 1:
        return NAN
    top_obs = np.sum(o[:k])
    if top_obs == 0.0:
        return NAN
    return float(100.0 * np.sum(s[:k] - o[:k]) / top_obs)


@_quiet
def fms(obs: ArrayLike, sim: ArrayLike, lower: float = 0.2, upper: float = 0.7) -> float:
    """Percent bias of the FDC mid-segment slope between exceedance ``lower`` and ``upper``.

    The slope is taken in log flow (flows floored at ``LOG_FLOOR``), so a multiplicative error
    scores 0 and only a change in how flashy the mid-range flows are counts. Positive when the
    simulated mid-range is steeper than observed. ``nan`` when the observed mid-segment is flat.
    """
    _check_fraction("lower", lower)
    _check_fraction("upper", upper)
    if lower >= upper:
        raise ValueError(f"lower ({lower}) must be below upper ({upper})")
    pair = _valid(obs, sim)
    if pair is None:
        return NAN
    o, s = (np.log(np.maximum(_fdc(x), LOG_FLOOR)) for x in pair)
    n = o.size
    i_lo = min(int(np.round(lower * n)), n - 1)
    i_up = min(int(np.round(upper * n)), n - 1)
    slope_obs = o[i_lo] - o[i_up]
    slope_sim = s[i_lo] - s[i_up]
    if slope_obs == 0.0:
        return NAN
    return float(100.0 * (slope_sim - slope_obs) / slope_obs)


@_quiet
def flv(obs: ArrayLike, sim: ArrayLike, low_fraction: float = 0.3) -> float:
    """Percent bias of the low-flow volume: the bottom ``low_fraction`` of each FDC, in log space.

    Follows Yilmaz et al. (2008) as NeuralHydrology implements it: each segment's log flows are
    measured from that segment's own minimum, and the sign is flipped so that a positive value
    means the simulated low-flow segment is *flatter* (less spread above its minimum) than
    observed. Flows are floored at ``LOG_FLOOR``, so catchments with many zero-flow days score
    very large magnitudes, as they do in NeuralHydrology. ``nan`` when the observed low-flow
    segment is constant.
    """
    _check_fraction("low_fraction", low_fraction)
    pair = _valid(obs, sim)
    if pair is None:
        return NAN
    o, s = (np.log(np.maximum(_fdc(x), LOG_FLOOR)) for x in pair)
    k = int(np.round(low_fraction * o.size))
    if k < 1:
        return NAN
    o, s = o[-k:], s[-k:]
    qol = np.sum(o - o.min())
    qsl = np.sum(s - s.min())
    if qol == 0.0:
        return NAN
    return float(-100.0 * (qsl - qol) / qol)


# ----------------------------------------------------------------------------------------------
# timing


@_quiet
def peak_timing(
    obs: ArrayLike,
    sim: ArrayLike,
    window: int = 3,
    distance: int = 100,
    prominence: float | None = None,
) -> float:
    """Mean absolute offset, in time steps, between observed peaks and the simulated peaks.

    The heuristic of Kratzert et al. (2021, HESS 25, 2685, appendix) as NeuralHydrology applies
    it to daily data: observed peaks are those ``scipy.signal.find_peaks`` finds with a prominence
    of at least one observed standard deviation (``prominence`` overrides) and at least
    ``distance`` steps apart. For each, the simulated peak is the simulated value at the same step
    if that is a local maximum, otherwise the maximum within ``window`` steps either side, so an
    offset is at most ``window``. Peaks whose window would leave the series or contain a missing
    obs/sim value are skipped, because with the gap removed the window would span more time than
    it claims. ``nan`` when no peak qualifies.
    """
    if window < 1:
        raise ValueError(f"window must be at least 1 time step, got {window}")
    o_all, s_all, mask = _paired(obs, sim)
    if np.count_nonzero(mask) < 2:
        return NAN
    # Work on the gap-free series (find_peaks is not NaN-safe) but remember each value's original
    # time step, so windows that straddle a removed gap can be recognised and skipped.
    steps = np.flatnonzero(mask)
    o, s = o_all[mask], s_all[mask]
    if prominence is None:
        prominence = float(o.std())
        if prominence == 0.0:
            return NAN
    peaks, _ = signal.find_peaks(o, distance=distance, prominence=prominence)

    offsets = []
    for idx in peaks:
        lo, hi = idx - window, idx + window
        if lo < 0 or hi >= o.size or steps[hi] - steps[lo] != 2 * window:
            continue
        if s[idx] > s[idx - 1] and s[idx] > s[idx + 1]:
            offsets.append(0)
        else:
            offsets.append(abs(int(np.argmax(s[lo : hi + 1])) - window))
    if not offsets:
        return NAN
    return float(np.mean(offsets))


# ----------------------------------------------------------------------------------------------
# registry


#: Stable lowercase names (used in result tables and configs) -> metric function ``f(obs, sim)``.
METRICS: dict[str, Callable[[ArrayLike, ArrayLike], float]] = {
    "nse": nse,
    "kge_2009": kge_2009,
    "kge_2012": kge_2012,
    "alpha_nse": alpha_nse,
    "beta_nse": beta_nse,
    "pearson_r": pearson_r,
    "rmse": rmse,
    "fhv": fhv,
    "fms": fms,
    "flv": flv,
    "peak_timing": peak_timing,
}


def compute_all(obs: ArrayLike, sim: ArrayLike) -> dict[str, float]:
    """Every metric in ``METRICS`` for one catchment, keyed by name, in registry order.

    Meant to run inside batches over hundreds of catchments: a metric that hits a numerical edge
    case the functions do not already turn into ``nan`` is recorded as ``nan`` rather than
    aborting the catchment. Mismatched or non-1-D inputs are a bug in the caller and still raise
    ``ValueError`` (checked once, before any metric runs).
    """
    o, s, _ = _paired(obs, sim)
    results: dict[str, float] = {}
    for name, fn in METRICS.items():
        try:
            results[name] = float(fn(o, s))
        except (ArithmeticError, ValueError, IndexError):
            results[name] = NAN
    return results
