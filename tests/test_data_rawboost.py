"""RawBoost: each algorithm does what the paper describes, deterministically, finite, same length."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cbl.data.rawboost import (
    RawBoostParams,
    apply_rawboost,
    isd_impulsive_noise,
    lnl_convolutive_noise,
    ssi_coloured_noise,
)


def speechlike(seed: int = 0, n: int = 16000) -> np.ndarray:
    """Noise with a slow envelope: no exact zeros, broadband, not stationary."""
    rng = np.random.default_rng(seed)
    envelope = 0.3 + np.abs(np.sin(np.linspace(0, 6 * np.pi, n)))
    return (0.1 * envelope * rng.standard_normal(n)).astype(np.float32)


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


def test_isd_changes_about_p_percent_of_samples() -> None:
    x = speechlike(n=20000).astype(np.float64)
    for p in (10.0, 3.0):
        y = isd_impulsive_noise(x, np.random.default_rng(1), dataclasses.replace(RawBoostParams(), p=p))
        changed = np.mean(y != x)
        assert abs(changed - p / 100) < 0.002
        ratio = (y[y != x] - x[y != x]) / x[y != x]  # the added impulse is signal-dependent
        assert np.abs(ratio).max() <= RawBoostParams().g_sd


def test_ssi_noise_snr_is_within_range() -> None:
    x = speechlike().astype(np.float64)
    snrs = []
    for seed in range(25):
        y = ssi_coloured_noise(x, np.random.default_rng(seed))
        snrs.append(10 * np.log10(np.mean(x**2) / np.mean((y - x) ** 2)))
    assert min(snrs) >= 10 - 1e-6 and max(snrs) <= 40 + 1e-6
    assert max(snrs) - min(snrs) > 10  # drawn anew each time


def test_ssi_noise_is_coloured() -> None:
    x = speechlike(n=32000).astype(np.float64)
    noise = ssi_coloured_noise(x, np.random.default_rng(3)) - x
    power = np.abs(np.fft.rfft(noise)) ** 2
    bands = power[: power.size // 64 * 64].reshape(64, -1).mean(axis=1)
    assert 10 * np.log10(bands.max() / bands.min()) > 10  # notched: not white


def band_power_db(x: np.ndarray, bands: int = 64) -> np.ndarray:
    power = np.abs(np.fft.rfft(x)) ** 2
    return 10 * np.log10(power[: power.size // bands * bands].reshape(bands, -1).mean(axis=1))


def test_lnl_is_a_filtering_change() -> None:
    linear = dataclasses.replace(RawBoostParams(), n_f=1)
    x = np.random.default_rng(0).standard_normal(32000)
    y = lnl_convolutive_noise(x, np.random.default_rng(5), linear)
    # a notch filter: some bands lose >= 10 dB relative to the input, most pass unchanged
    response = band_power_db(y) - band_power_db(x)
    response -= np.median(response)
    assert response.min() < -10 and np.mean(np.abs(response) < 3) > 0.5
    # linear and time-invariant with n_f = 1 (same random filter for the same seed)
    np.testing.assert_allclose(lnl_convolutive_noise(2 * x, np.random.default_rng(5), linear), 2 * y, rtol=1e-9)
    shifted = lnl_convolutive_noise(np.roll(x, 500), np.random.default_rng(5), linear)
    np.testing.assert_allclose(shifted[2000:-2000], np.roll(y, 500)[2000:-2000], atol=1e-6 * np.abs(y).max() * 10)
    # the default model adds non-linear terms (x**2 ... x**5): no longer homogeneous
    z = lnl_convolutive_noise(x, np.random.default_rng(5))
    assert not np.allclose(lnl_convolutive_noise(2 * x, np.random.default_rng(5)), 2 * z)
    assert np.abs(z).max() == pytest.approx(np.abs(x).max())  # peak level kept


@pytest.mark.parametrize(
    "algo,steps",
    [(4, "lis"), (5, "li"), (6, "ls"), (7, "is")],
)
def test_series_combinations_apply_the_steps_in_order(algo: int, steps: str) -> None:
    x = speechlike()
    rng = np.random.default_rng(11)
    expected = x.astype(np.float64)
    for step in steps:
        if step == "l":
            expected = lnl_convolutive_noise(expected, rng)
        elif step == "i":
            expected = isd_impulsive_noise(expected, rng)
        else:
            expected = ssi_coloured_noise(expected, rng)
    np.testing.assert_allclose(apply_rawboost(x, algo, np.random.default_rng(11)), expected.astype(np.float32))


def test_parallel_combination_sums_and_renormalises() -> None:
    x = speechlike()
    rng = np.random.default_rng(4)
    summed = lnl_convolutive_noise(x, rng) + isd_impulsive_noise(x, rng)
    expected = summed * np.abs(x).max() / np.abs(summed).max()
    y = apply_rawboost(x, 8, np.random.default_rng(4))
    np.testing.assert_allclose(y, expected.astype(np.float32), rtol=1e-5, atol=1e-7)
    assert np.abs(y).max() == pytest.approx(np.abs(x).max(), rel=1e-5)


def test_silence_stays_finite() -> None:
    for algo in range(9):
        y = apply_rawboost(np.zeros(4000, np.float32), algo, np.random.default_rng(0))
        assert np.isfinite(y).all() and y.shape == (4000,)
