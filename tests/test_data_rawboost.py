"""RawBoost as published (Tak et al., ICASSP 2022, and its reference implementation's behaviour).

Each test states a definition and checks it, statistically where it is a distribution,
with fixed seeds.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import signal, stats

from cbl.data import rawboost
from cbl.data.rawboost import (
    RawBoostParams,
    apply_rawboost,
    isd_impulsive_noise,
    lnl_convolutive_noise,
    lnl_gains_db,
    notch_cascades,
    ssi_coloured_noise,
)

DEFAULTS = RawBoostParams()


def speechlike(seed: int = 0, n: int = 16000, level: float = 0.1) -> np.ndarray:
    """Noise with a slow envelope: no exact zeros, broadband, not stationary."""
    rng = np.random.default_rng(seed)
    envelope = 0.3 + np.abs(np.sin(np.linspace(0, 6 * np.pi, n)))
    return (level * envelope * rng.standard_normal(n)).astype(np.float32)


def peak_db(taps: np.ndarray, points: int = 1 << 17) -> np.ndarray:
    """Peak magnitude response in dB of each row of taps, on a dense grid (65,537 frequencies)."""
    return 20 * np.log10(np.abs(np.fft.rfft(taps, points, axis=-1)).max(axis=-1))


# ----------------------------------------------------------------------------- the whole
@pytest.mark.parametrize("algo", range(1, 9))
def test_every_algorithm_changes_the_signal_deterministically(algo: int) -> None:
    x = speechlike()
    y = apply_rawboost(x, algo, np.random.default_rng(7))
    assert y.shape == x.shape and y.dtype == np.float32
    assert np.isfinite(y).all()
    assert not np.allclose(y, x)
    np.testing.assert_array_equal(y, apply_rawboost(x, algo, np.random.default_rng(7)))
    assert not np.array_equal(y, apply_rawboost(x, algo, np.random.default_rng(8)))


def test_algorithm_zero_is_identity() -> None:
    x = speechlike()
    np.testing.assert_array_equal(apply_rawboost(x, 0, np.random.default_rng(0)), x)


def test_unknown_algorithm() -> None:
    with pytest.raises(ValueError, match=r"RawBoost algo is 9, but must be one of \[0, 1, 2, 3, 4, 5, 6, 7, 8\]"):
        apply_rawboost(speechlike(), 9, np.random.default_rng(0))


def test_silence_stays_finite() -> None:
    for algo in range(9):
        y = apply_rawboost(np.zeros(4000, np.float32), algo, np.random.default_rng(0))
        assert np.isfinite(y).all() and y.shape == (4000,)


# ----------------------------------------------------------------------------- notch cascades
def test_a_band_stop_is_scipy_firwin_hamming_design() -> None:
    """One band: centre U(minF, maxF), width U(minBW, maxBW), floor(U(minCoeff, maxCoeff)) taps made odd."""
    one = dataclasses.replace(DEFAULTS, n_bands=1)
    for seed in range(20):
        draw = np.random.default_rng(seed)
        centre, width = draw.uniform(20, 8000, (1, 1))[0, 0], draw.uniform(100, 1000, (1, 1))[0, 0]
        taps = int(np.floor(draw.uniform(10, 100, (1, 1))[0, 0])) | 1
        low, high = max(centre - width / 2, 1e-3), min(centre + width / 2, 8000 - 1e-3)
        expected = signal.firwin(taps, [low, high], window="hamming", fs=16000)  # pass_zero: band-stop
        got = rawboost._band_stops(np.random.default_rng(seed), 1, one, 16000)[0, 0]
        pad = (got.size - taps) // 2
        np.testing.assert_allclose(got[pad : pad + taps], expected, atol=1e-12)
        assert not got[:pad].any() and not got[pad + taps :].any()
        assert got.size % 2 == 1 and 11 <= taps <= 99


def test_a_cascade_peaks_at_its_drawn_gain() -> None:
    """Divided by its peak magnitude response, multiplied by the gain: the peak IS the gain."""
    gains = np.array([0.0, -5.0, -12.5, -20.0, 3.0])
    taps = notch_cascades(np.random.default_rng(1), gains)
    assert taps.shape[0] == 5 and taps.shape[1] % 2 == 1
    np.testing.assert_allclose(peak_db(taps), gains, atol=0.05)  # dense grid: within 0.05 dB
    grid = 20 * np.log10(np.abs(np.fft.rfft(taps, rawboost._BLOCK, axis=-1)).max(axis=-1))
    np.testing.assert_allclose(grid, gains, atol=1e-9)  # the grid it was normalised on: exactly


def test_a_band_clipped_at_zero_hz_does_not_boost() -> None:
    """Centre 20 Hz, width 1000 Hz: the lower edge is clipped to 1 mHz; two such bands unnormalised: ~+116 dB."""
    clipped = dataclasses.replace(
        DEFAULTS, n_bands=2, min_f=20.0, max_f=20.0, min_bw=1000.0, max_bw=1000.0, min_coeff=99, max_coeff=99
    )
    bands = rawboost._band_stops(np.random.default_rng(0), 1, clipped, 16000)[0]
    unnormalised = np.prod(np.abs(np.fft.rfft(bands, 1 << 17, axis=-1)), axis=0).max()
    assert 20 * np.log10(unnormalised) > 100  # what the cascade would do to the signal without the peak rule
    taps = notch_cascades(np.random.default_rng(0), [0.0], clipped)
    assert peak_db(taps)[0] == pytest.approx(0.0, abs=0.05)
    x = speechlike()
    y = lnl_convolutive_noise(x, np.random.default_rng(0), dataclasses.replace(clipped, n_f=1))
    assert np.abs(y).max() <= 1.0 and np.sqrt(np.mean(y**2)) < 2 * np.sqrt(np.mean(x**2))


def test_cascade_notches_cut_and_the_rest_passes() -> None:
    taps = notch_cascades(np.random.default_rng(5), [0.0])
    response = 20 * np.log10(np.abs(np.fft.rfft(taps[0], 8192)) + 1e-12)
    assert response.min() < -20  # notched
    assert np.mean(response > -3) > 0.3  # much of the band passes within 3 dB of the peak


# ----------------------------------------------------------------------------- LnL
def test_lnl_gains_are_drawn_per_order() -> None:
    """Order 1: U(minG, maxG) = 0 dB; orders 2..N_f: each an independent U(-20, -5) dB, never accumulated."""
    draws = np.array([lnl_gains_db(np.random.default_rng(seed)) for seed in range(2000)])
    assert draws.shape == (2000, 5)
    assert (draws[:, 0] == 0.0).all()
    higher = draws[:, 1:]
    assert higher.min() >= -20 and higher.max() <= -5
    for order in range(4):  # each order U(-20, -5): mean -12.5, the same for order 2 and order 5
        assert stats.kstest((higher[:, order] + 20) / 15, "uniform").pvalue > 0.01
    assert abs(np.corrcoef(higher[:, 0], higher[:, 3])[0, 1]) < 0.1  # independent


def test_lnl_filters_each_power_with_its_own_gain() -> None:
    """y = sum_j h_j * x**j: recovered from impulses of three heights, |H_1| peaks at 0 dB, |H_2|, |H_3| at -10 dB."""
    params = dataclasses.replace(DEFAULTS, n_f=3, min_bias_lin_nonlin=10.0, max_bias_lin_nonlin=10.0)
    heights = np.array([0.2, 0.4, 0.6])
    outputs = []
    for height in heights:
        x = np.zeros(4096)
        x[2000] = height
        y = lnl_convolutive_noise(x, np.random.default_rng(3), params)  # same seed: same cascades
        outputs.append(y - y[0])  # far from the impulse y is -mean: undo the mean removal
    vandermonde = heights[:, None] ** np.arange(1, 4)
    responses = np.linalg.solve(vandermonde, np.array(outputs))  # (3 orders, samples)
    np.testing.assert_allclose(peak_db(responses), [0.0, -10.0, -10.0], atol=0.05)


def test_lnl_removes_the_mean_and_limits_the_peak_only_above_one() -> None:
    linear = dataclasses.replace(DEFAULTS, n_f=1)
    x = 0.3 + speechlike(level=0.05).astype(np.float64)  # a DC offset
    y = lnl_convolutive_noise(x, np.random.default_rng(2), linear)
    assert abs(y.mean()) < 1e-12
    quiet = lnl_convolutive_noise(0.1 * speechlike(), np.random.default_rng(2))
    assert 0 < np.abs(quiet).max() < 0.1  # not rescaled to any level: the cascade's own gain
    loud = lnl_convolutive_noise(4 * speechlike(level=0.25), np.random.default_rng(2), linear)
    assert np.abs(loud).max() == pytest.approx(1.0, abs=1e-6)  # above 1: divided by the peak


def test_lnl_linear_term_is_a_time_invariant_filter() -> None:
    linear = dataclasses.replace(DEFAULTS, n_f=1)
    x = 0.1 * np.random.default_rng(0).standard_normal(32000)
    y = lnl_convolutive_noise(x, np.random.default_rng(5), linear)
    np.testing.assert_allclose(
        lnl_convolutive_noise(2 * x, np.random.default_rng(5), linear), 2 * y, rtol=1e-9, atol=1e-12
    )
    shifted = lnl_convolutive_noise(np.roll(x, 500), np.random.default_rng(5), linear)
    np.testing.assert_allclose(shifted[2000:-2000], np.roll(y, 500)[2000:-2000], atol=1e-4 * np.abs(y).max())
    z = lnl_convolutive_noise(x, np.random.default_rng(5))  # x**2 ... x**5 too: no longer homogeneous
    assert not np.allclose(lnl_convolutive_noise(2 * x, np.random.default_rng(5)), 2 * z)


# ----------------------------------------------------------------------------- ISD
def test_isd_hits_a_uniform_fraction_up_to_p_percent() -> None:
    """beta ~ U(0, P): the fraction of samples changed is floor(T beta / 100) / T, uniform on [0, P%]."""
    x = speechlike(n=20000, level=0.02).astype(np.float64)  # quiet: the peak rule never rescales everything
    fractions = [np.mean(isd_impulsive_noise(x, np.random.default_rng(s)) != x) for s in range(400)]
    assert min(fractions) >= 0 and max(fractions) <= 0.10
    assert stats.kstest(np.array(fractions) / 0.10, "uniform").pvalue > 0.01
    smaller = [
        np.mean(isd_impulsive_noise(x, np.random.default_rng(s), dataclasses.replace(DEFAULTS, p=3.0)) != x)
        for s in range(100)
    ]
    assert max(smaller) <= 0.03 and np.mean(smaller) == pytest.approx(0.015, abs=0.003)


def test_isd_impulse_is_g_sd_times_x_times_a_product_of_two_uniforms() -> None:
    """y[i] = x[i] + g_sd x[i] u1 u2, u1, u2 ~ U(-1, 1): the ratio (y - x) / (g_sd x) has E = 0, E[r^2] = 1/9."""
    x = speechlike(n=40000).astype(np.float64)
    ratios = []
    for seed in range(20):
        y = isd_impulsive_noise(x, np.random.default_rng(seed))
        hit = y != x
        ratios.append((y[hit] - x[hit]) / (DEFAULTS.g_sd * x[hit]))
    ratio = np.concatenate(ratios)
    assert np.abs(ratio).max() <= 1.0
    assert abs(ratio.mean()) < 0.01 and np.mean(ratio**2) == pytest.approx(1 / 9, abs=0.005)
    # a product of two uniforms piles up near 0: P(|r| < 0.1) = 0.1 (1 - ln 0.1) = 0.33
    assert np.mean(np.abs(ratio) < 0.1) == pytest.approx(0.1 * (1 - np.log(0.1)), abs=0.02)


def test_isd_peak_is_limited_only_above_one() -> None:
    x = speechlike(level=0.05).astype(np.float64)
    assert np.abs(isd_impulsive_noise(x, np.random.default_rng(1))).max() < 1  # quiet: left as it is
    loud = np.clip(speechlike(level=0.6).astype(np.float64), -0.99, 0.99)
    y = isd_impulsive_noise(loud, np.random.default_rng(1), dataclasses.replace(DEFAULTS, p=100.0))
    assert np.abs(y).max() == pytest.approx(1.0)


# ----------------------------------------------------------------------------- SSI
def test_ssi_snr_is_uniform_in_range() -> None:
    """20 log10(|x|_2 / |noise|_2) ~ U(SNRmin, SNRmax) = U(10, 40) dB, the noise added without any rescaling."""
    x = speechlike().astype(np.float64)
    energy = np.sum(x**2)
    snrs = np.array(
        [10 * np.log10(energy / np.sum((ssi_coloured_noise(x, np.random.default_rng(s)) - x) ** 2)) for s in range(200)]
    )
    assert snrs.min() >= 10 - 1e-6 and snrs.max() <= 40 + 1e-6
    assert stats.kstest((snrs - 10) / 30, "uniform").pvalue > 0.01


def test_ssi_noise_is_coloured_by_a_cascade() -> None:
    x = speechlike(n=32000).astype(np.float64)
    noise = ssi_coloured_noise(x, np.random.default_rng(3)) - x
    power = np.abs(np.fft.rfft(noise)) ** 2
    bands = power[: power.size // 64 * 64].reshape(64, -1).mean(axis=1)
    assert 10 * np.log10(bands.max() / bands.min()) > 10  # notched: not white


# ----------------------------------------------------------------------------- combinations
@pytest.mark.parametrize("algo,steps", [(4, "lis"), (5, "li"), (6, "ls"), (7, "is")])
def test_series_combinations_apply_the_steps_in_order(algo: int, steps: str) -> None:
    x = speechlike()
    rng = np.random.default_rng(11)
    expected = x
    for step in steps:
        if step == "l":
            expected = lnl_convolutive_noise(expected, rng)
        elif step == "i":
            expected = isd_impulsive_noise(expected, rng)
        else:
            expected = ssi_coloured_noise(expected, rng)
    np.testing.assert_array_equal(apply_rawboost(x, algo, np.random.default_rng(11)), expected.astype(np.float32))


def test_parallel_combination_sums_and_limits_the_peak_only_above_one() -> None:
    """8: LnL(x) + ISD(x), both of the input, divided by the peak only when it exceeds 1."""
    tone = 0.9 * np.sin(2 * np.pi * 300 * np.arange(16000) / 16000)  # LnL passes most of it: the sum nears 1.8
    for x, loud in ((speechlike(level=0.1), False), ((tone + speechlike(level=0.01)).astype(np.float32), True)):
        rng = np.random.default_rng(4)
        summed = lnl_convolutive_noise(x, rng) + isd_impulsive_noise(x, rng)
        peak = np.abs(summed).max()
        assert (peak > 1) == loud
        y = apply_rawboost(x, 8, np.random.default_rng(4))
        np.testing.assert_allclose(y, summed / max(peak, 1.0), rtol=1e-5, atol=1e-7)
        assert np.abs(y).max() == pytest.approx(1.0 if loud else peak, rel=1e-5)
