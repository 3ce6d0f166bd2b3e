"""Metrics: hand-computed values, ideal and benchmark scores, NaN handling, hydroeval agreement."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from hybrid.evaluation import metrics as m

hydroeval = pytest.importorskip("hydroeval")

OBS = np.array([1.0, 2.0, 3.0, 4.0])
SIM = np.array([1.0, 3.0, 2.0, 5.0])


@pytest.fixture(autouse=True)
def _warnings_are_errors():
    """Any numpy/scipy RuntimeWarning (0/0, mean of empty slice, ...) fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def _flow_series(seed: int, n: int = 1500) -> np.ndarray:
    """Positive, skewed, autocorrelated 'daily flow' with some clear peaks."""
    rng = np.random.default_rng(seed)
    rain = rng.gamma(0.3, 8.0, n)
    q = np.empty(n)
    store = 5.0
    for t in range(n):
        store = 0.9 * store + rain[t]
        q[t] = 0.1 * store
    return q + 0.05


# ----------------------------------------------------------------------------------------------
# hand-computed values on obs = [1, 2, 3, 4], sim = [1, 3, 2, 5]


def test_nse_by_hand():
    # mean obs 2.5; sum (obs - mean)^2 = 2.25 + 0.25 + 0.25 + 2.25 = 5; errors 0, 1, -1, 1 -> SSE 3
    assert m.nse(OBS, SIM) == pytest.approx(1 - 3 / 5)


def test_rmse_by_hand():
    assert m.rmse(OBS, SIM) == pytest.approx(math.sqrt(3 / 4))


def test_components_by_hand():
    # obs deviations -1.5, -0.5, 0.5, 1.5 (sum sq 5); sim mean 11/4 = 2.75,
    # sim deviations -1.75, 0.25, -0.75, 2.25 (sum sq 3.0625 + 0.0625 + 0.5625 + 5.0625 = 8.75)
    cov = (-1.5 * -1.75) + (-0.5 * 0.25) + (0.5 * -0.75) + (1.5 * 2.25)  # 5.5
    r = cov / math.sqrt(5 * 8.75)
    alpha = math.sqrt(8.75 / 4) / math.sqrt(5 / 4)
    assert m.pearson_r(OBS, SIM) == pytest.approx(r)
    assert m.alpha_nse(OBS, SIM) == pytest.approx(alpha)
    assert m.beta_nse(OBS, SIM) == pytest.approx((2.75 - 2.5) / math.sqrt(5 / 4))


def test_kge_variants_by_hand():
    r = 5.5 / math.sqrt(5 * 8.75)
    std_obs, std_sim = math.sqrt(5 / 4), math.sqrt(8.75 / 4)
    mean_obs, mean_sim = 2.5, 2.75
    alpha = std_sim / std_obs
    beta = mean_sim / mean_obs
    gamma = (std_sim / mean_sim) / (std_obs / mean_obs)
    assert m.kge_2009(OBS, SIM) == pytest.approx(
        1 - math.sqrt((r - 1) ** 2 + (alpha - 1) ** 2 + (beta - 1) ** 2)
    )
    assert m.kge_2012(OBS, SIM) == pytest.approx(
        1 - math.sqrt((r - 1) ** 2 + (gamma - 1) ** 2 + (beta - 1) ** 2)
    )


def test_kge_variants_differ_on_pure_scaling():
    # sim = 2 obs: r = 1, beta = 2; KGE-2009 also sees alpha = 2, KGE' sees gamma = 1
    obs = _flow_series(0)
    assert m.kge_2009(obs, 2 * obs) == pytest.approx(1 - math.sqrt(2))
    assert m.kge_2012(obs, 2 * obs) == pytest.approx(0.0, abs=1e-12)


# ----------------------------------------------------------------------------------------------
# ideal and benchmark simulations


def test_perfect_simulation():
    obs = _flow_series(1)
    res = m.compute_all(obs, obs.copy())
    assert res["nse"] == 1.0
    assert res["kge_2009"] == pytest.approx(1.0)
    assert res["kge_2012"] == pytest.approx(1.0)
    assert res["pearson_r"] == pytest.approx(1.0)
    assert res["alpha_nse"] == 1.0
    assert res["beta_nse"] == 0.0
    assert res["rmse"] == 0.0
    assert res["fhv"] == 0.0
    assert res["fms"] == 0.0
    assert res["flv"] == 0.0
    assert res["peak_timing"] == 0.0


def test_mean_simulation_scores_zero_nse():
    obs = _flow_series(2)
    sim = np.full_like(obs, obs.mean())
    assert m.nse(obs, sim) == pytest.approx(0.0, abs=1e-12)
    assert m.beta_nse(obs, sim) == pytest.approx(0.0, abs=1e-12)
    # a constant simulation has no correlation, so both KGE variants are undefined
    assert math.isnan(m.pearson_r(obs, sim))
    assert math.isnan(m.kge_2009(obs, sim))
    assert math.isnan(m.kge_2012(obs, sim))


# ----------------------------------------------------------------------------------------------
# direction / symmetry


def test_symmetry():
    obs, sim = _flow_series(3), _flow_series(4)
    assert m.rmse(obs, sim) == pytest.approx(m.rmse(sim, obs))
    assert m.pearson_r(obs, sim) == pytest.approx(m.pearson_r(sim, obs))
    assert m.nse(obs, sim) != pytest.approx(m.nse(sim, obs))
    assert m.kge_2009(obs, sim) != pytest.approx(m.kge_2009(sim, obs))


def test_bias_signs():
    obs = _flow_series(5)
    wet, dry = obs + 1.0, np.maximum(obs - 0.01, 0.0)
    assert m.beta_nse(obs, wet) > 0
    assert m.beta_nse(obs, dry) < 0
    assert m.alpha_nse(obs, 3 * obs) == pytest.approx(3.0)
    assert m.alpha_nse(obs, obs + 7.0) == pytest.approx(1.0)


def test_fhv_by_hand_and_sign():
    obs = np.arange(1.0, 101.0)  # top 2 % of 100 days = the two largest flows, 100 and 99
    sim = obs.copy()
    sim[[10, 20]] = [150.0, 120.0]  # the simulation's FDC now starts 150, 120
    assert m.fhv(obs, sim) == pytest.approx(100 * ((150 + 120) - (100 + 99)) / (100 + 99))
    assert m.fhv(obs, 1.2 * obs) == pytest.approx(20.0)
    assert m.fhv(obs, 0.5 * obs) == pytest.approx(-50.0)


def test_fhv_compares_distributions_not_timing():
    obs = _flow_series(6)
    assert m.fhv(obs, obs[::-1]) == pytest.approx(0.0)


def test_fms_log_slope():
    obs = _flow_series(7)
    assert m.fms(obs, 3.0 * obs) == pytest.approx(0.0, abs=1e-9)  # scaling is a log shift
    assert m.fms(obs, obs**2) == pytest.approx(100.0)  # log slope doubles
    assert m.fms(obs, np.sqrt(obs)) == pytest.approx(-50.0)


def test_fms_by_hand():
    obs = np.array([10.0, 8.0, 6.0, 4.0, 2.0, 1.0, 0.5, 0.25, 0.2, 0.1])
    sim = np.array([9.0, 7.0, 5.0, 4.5, 3.0, 2.0, 1.0, 0.3, 0.2, 0.1])
    # descending FDC, n = 10: exceedance 0.2 -> index 2, exceedance 0.7 -> index 7
    slope_obs = math.log(6.0) - math.log(0.25)
    slope_sim = math.log(5.0) - math.log(0.3)
    assert m.fms(obs, sim) == pytest.approx(100 * (slope_sim - slope_obs) / slope_obs)


def test_fms_segment_positions_round_like_neuralhydrology():
    # n = 13: exceedance 0.2 -> round(2.6) = index 3, exceedance 0.7 -> round(9.1) = index 9
    obs = np.array([13.0, 12.0, 11.0, 10.0, 9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0])
    sim = obs.copy()
    sim[3] = 20.0  # replaces the 10: FDC 20, 13, 12, 11, 9, ..., index 3 holds 11, index 9 holds 4
    slope_obs = math.log(10.0) - math.log(4.0)
    slope_sim = math.log(11.0) - math.log(4.0)
    assert m.fms(obs, sim) == pytest.approx(100 * (slope_sim - slope_obs) / slope_obs)


def test_flv_by_hand_and_shapes():
    obs = np.array([10.0, 9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0])
    sim = np.array([10.0, 9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 2.0, 1.5, 1.0])
    # bottom 30 % = last 3 of the FDC; log flows measured from each segment's minimum
    qol = (math.log(3) - math.log(1)) + (math.log(2) - math.log(1)) + 0.0
    qsl = (math.log(2) - math.log(1)) + (math.log(1.5) - math.log(1)) + 0.0
    assert m.flv(obs, sim) == pytest.approx(-100 * (qsl - qol) / qol)
    series = _flow_series(8)
    assert m.flv(series, 5.0 * series) == pytest.approx(0.0, abs=1e-9)
    assert m.flv(series, series**2) == pytest.approx(-100.0)


def test_log_metrics_floor_zero_and_negative_flows():
    obs = _flow_series(9)
    obs[::7] = 0.0
    sim = obs - 0.02  # some simulated flows go negative
    for fn in (m.fms, m.flv):
        assert math.isfinite(fn(obs, sim))


# ----------------------------------------------------------------------------------------------
# peak timing


def _peaky(n: int = 1000, centres=(150, 400, 650, 900)) -> np.ndarray:
    t = np.arange(n, dtype=float)
    q = np.full(n, 1.0)
    for c in centres:
        q += 20.0 * np.exp(-0.5 * ((t - c) / 4.0) ** 2)
    return q


def test_peak_timing_shift():
    obs = _peaky()
    assert m.peak_timing(obs, obs) == 0.0
    assert m.peak_timing(obs, np.roll(obs, 2)) == 2.0
    assert m.peak_timing(obs, np.roll(obs, -1)) == 1.0
    # a lag beyond the window is capped at the window
    assert m.peak_timing(obs, np.roll(obs, 6)) == 3.0
    assert m.peak_timing(obs, np.roll(obs, 6), window=10) == 6.0


def test_peak_timing_mixed_offsets_and_gap_skips_peak():
    obs = _peaky(centres=(150, 400))
    sim = obs.copy()
    sim[140:161] = np.roll(obs[140:161], 1)  # first peak 1 step late
    sim[390:411] = np.roll(obs[390:411], 3)  # second peak 3 steps late
    assert m.peak_timing(obs, sim) == pytest.approx(2.0)
    gappy = sim.copy()
    gappy[402] = np.nan  # inside the +-3 window of the second peak: it must be skipped
    assert m.peak_timing(obs, gappy) == pytest.approx(1.0)
    gappy_obs = obs.copy()
    gappy_obs[147] = np.nan  # same for a gap in the observations near the first peak
    assert m.peak_timing(gappy_obs, sim) == pytest.approx(3.0)


def test_peak_timing_prefers_a_simulated_local_peak_on_the_day():
    obs = _peaky(centres=(150,))
    sim = np.ones_like(obs)
    sim[149:152] = [2.0, 3.0, 2.0]  # a small local peak on the observed peak day ...
    sim[152] = 10.0  # ... counts even though a larger one follows within the window
    assert m.peak_timing(obs, sim) == 0.0
    sim[150] = 2.0  # no local peak on the day: the window maximum (2 steps late) is used
    assert m.peak_timing(obs, sim) == 2.0


def test_peak_timing_without_peaks_is_nan():
    assert math.isnan(m.peak_timing(np.arange(50.0), np.arange(50.0)))
    assert math.isnan(m.peak_timing(np.ones(50), np.arange(50.0)))
    # a peak too close to the start has no full window
    obs = np.array([1.0, 5.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    assert math.isnan(m.peak_timing(obs, obs))


# ----------------------------------------------------------------------------------------------
# missing values and degenerate catchments


def test_pairwise_mask_equals_dropping_pairs():
    obs, sim = _flow_series(10), _flow_series(11)
    obs_g, sim_g = obs.copy(), sim.copy()
    obs_g[[3, 50, 51, 900]] = np.nan
    sim_g[[7, 51, 400]] = np.nan
    sim_g[600] = np.inf  # non-finite predictions count as missing, too
    keep = np.isfinite(obs_g) & np.isfinite(sim_g)
    gappy, dropped = m.compute_all(obs_g, sim_g), m.compute_all(obs[keep], sim[keep])
    for name in m.METRICS:
        if name == "peak_timing":  # gaps change which peaks count, tested above
            continue
        assert gappy[name] == pytest.approx(dropped[name], nan_ok=True), name


DEGENERATE = {
    "empty": ([], []),
    "one pair": ([1.0], [2.0]),
    "one valid pair": ([1.0, np.nan, 3.0], [2.0, 2.0, np.nan]),
    "all nan": ([np.nan] * 30, [np.nan] * 30),
    "obs nan": ([np.nan] * 30, list(range(30))),
    "sim nan": (list(range(30)), [np.nan] * 30),
    "all inf": ([np.inf] * 5, [1.0] * 5),
}


@pytest.mark.parametrize("name", DEGENERATE)
def test_too_few_pairs_gives_nan_everywhere(name):
    obs, sim = DEGENERATE[name]
    res = m.compute_all(obs, sim)
    assert set(res) == set(m.METRICS)
    assert all(math.isnan(v) for v in res.values()), res
    for fn in m.METRICS.values():  # the functions themselves are NaN-safe, too
        assert math.isnan(fn(obs, sim))


def test_constant_obs_gives_nan_for_variance_metrics():
    obs = np.full(200, 3.0)
    sim = _flow_series(12, n=200)
    for name in (
        "nse",
        "kge_2009",
        "kge_2012",
        "alpha_nse",
        "beta_nse",
        "pearson_r",
        "fms",
        "flv",
        "peak_timing",
    ):
        assert math.isnan(m.METRICS[name](obs, sim)), name
    # rmse and the peak-flow bias do not divide by the observed spread
    assert math.isfinite(m.rmse(obs, sim))
    assert math.isfinite(m.fhv(obs, sim))


@pytest.mark.parametrize(
    "obs, sim",
    [
        (np.zeros(100), np.zeros(100)),
        (np.zeros(100), _flow_series(13, n=100)),
        (_flow_series(14, n=100), np.zeros(100)),
        (np.r_[np.zeros(99), 1.0], np.r_[np.zeros(99), 1.0]),
        (_flow_series(15, n=100) - 5.0, _flow_series(16, n=100) - 5.0),  # mean near/below zero
        (_flow_series(17, n=100), np.full(100, -1.0)),
        (np.r_[1.0, 2.0], np.r_[2.0, 1.0]),
        (_flow_series(18, n=100), np.full(100, 1e300)),
        (_flow_series(19, n=100) * 1e300, _flow_series(20, n=100)),  # overflows in squares
        (_flow_series(21, n=100), _flow_series(22, n=100) * 1e300),
    ],
)
def test_compute_all_never_raises_or_warns(obs, sim):
    res = m.compute_all(obs, sim)
    assert list(res) == list(m.METRICS)
    assert all(isinstance(v, float) for v in res.values())
    for fn in m.METRICS.values():  # called directly, they are just as quiet
        fn(obs, sim)


def test_zero_mean_obs_makes_kge_nan():
    obs = np.array([-1.0, 1.0, -2.0, 2.0])
    sim = np.array([-1.0, 1.5, -2.0, 2.5])
    assert math.isnan(m.kge_2009(obs, sim))
    assert math.isnan(m.kge_2012(obs, sim))
    assert math.isfinite(m.nse(obs, sim))


def test_caller_bugs_raise():
    with pytest.raises(ValueError, match="same length"):
        m.compute_all([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="1-D"):
        m.nse(np.ones((3, 2)), np.ones((3, 2)))
    with pytest.raises(ValueError):
        m.fhv(OBS, SIM, high_fraction=1.5)
    with pytest.raises(ValueError):
        m.fms(OBS, SIM, lower=0.7, upper=0.2)


def test_accepts_lists_and_columns():
    assert m.nse(OBS.tolist(), SIM.tolist()) == pytest.approx(m.nse(OBS, SIM))
    assert m.nse(OBS.reshape(-1, 1), SIM.reshape(-1, 1)) == pytest.approx(m.nse(OBS, SIM))


def test_registry():
    assert list(m.METRICS) == [
        "nse",
        "kge_2009",
        "kge_2012",
        "alpha_nse",
        "beta_nse",
        "pearson_r",
        "rmse",
        "fhv",
        "fms",
        "flv",
        "peak_timing",
    ]
    assert all(callable(fn) for fn in m.METRICS.values())


# ----------------------------------------------------------------------------------------------
# agreement with the independent hydroeval package (note its (sim, obs) argument order)


def test_hydroeval_return_shapes():
    assert hydroeval.evaluator(hydroeval.nse, SIM, OBS).shape == (1,)
    assert hydroeval.evaluator(hydroeval.kge, SIM, OBS).shape == (4, 1)
    assert hydroeval.evaluator(hydroeval.kgeprime, SIM, OBS).shape == (4, 1)


@pytest.mark.parametrize("seed", range(5))
def test_matches_hydroeval(seed):
    rng = np.random.default_rng(seed)
    obs = _flow_series(100 + seed, n=730)
    sim = obs * rng.lognormal(0.1, 0.3, obs.size) + rng.normal(0.0, 0.2, obs.size)
    obs[rng.choice(obs.size, 40, replace=False)] = np.nan
    sim[rng.choice(sim.size, 40, replace=False)] = np.nan
    # hydroeval only drops time steps where the *observation* is NaN, so hand it paired data
    keep = ~np.isnan(obs) & ~np.isnan(sim)
    o, s = obs[keep], sim[keep]

    assert m.nse(obs, sim) == pytest.approx(hydroeval.evaluator(hydroeval.nse, s, o)[0], rel=1e-10)

    kge, r, alpha, _ = hydroeval.evaluator(hydroeval.kge, s, o)[:, 0]
    assert m.kge_2009(obs, sim) == pytest.approx(kge, rel=1e-10)
    assert m.pearson_r(obs, sim) == pytest.approx(r, rel=1e-10)
    assert m.alpha_nse(obs, sim) == pytest.approx(alpha, rel=1e-10)

    kgep, _, _, _ = hydroeval.evaluator(hydroeval.kgeprime, s, o)[:, 0]
    assert m.kge_2012(obs, sim) == pytest.approx(kgep, rel=1e-10)
    assert kge != pytest.approx(kgep)  # the two variants really are different numbers here
