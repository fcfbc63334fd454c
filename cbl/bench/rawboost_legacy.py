"""The RawBoost implementation cbl shipped before it followed the published reference; for the bench only.

Kept beside the bench so that ``cbl-search bench`` (row 9) times it side by side with
:mod:`cbl.data.rawboost` in one run. It is NOT the published RawBoost (notch
cascades not peak-normalised, accumulated LnL gains, ISD hitting exactly P% of
the samples, no DC removal, level rescaled to the input's peak): never train with it.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

from cbl.data.rawboost import RawBoostParams

__all__ = ["algorithm_4"]


def _peak(x: np.ndarray) -> float:
    return float(np.max(np.abs(x))) if x.size else 0.0


def _multiband_notch_filter(params: RawBoostParams, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """FIR taps of a cascade of ``n_bands`` random band-stop filters (their taps convolved)."""
    nyquist = sample_rate / 2.0
    taps = np.ones(1)
    for _ in range(params.n_bands):
        centre = rng.uniform(params.min_f, params.max_f)
        width = rng.uniform(params.min_bw, params.max_bw)
        order = int(rng.integers(params.min_coeff, params.max_coeff + 1))
        low = max(centre - width / 2.0, 1.0)
        high = min(centre + width / 2.0, nyquist - 1.0)
        if high - low < 1.0:  # a band squeezed against 0 Hz or Nyquist: no notch there
            continue
        numtaps = order + 1 if order % 2 == 0 else order + 2  # band-stop FIR needs an odd length
        band_stop = signal.firwin(numtaps, [low, high], pass_zero="bandstop", fs=sample_rate)
        taps = np.convolve(taps, band_stop)
    return taps


def _filter(x: np.ndarray, taps: np.ndarray) -> np.ndarray:
    # "same" keeps the length and centres the filter delay, so the channel does not shift the signal.
    return signal.oaconvolve(x, taps, mode="same") if taps.size > 1 else x * taps[0]


def lnl_convolutive_noise(
    x: np.ndarray, rng: np.random.Generator, params: RawBoostParams = RawBoostParams(), sample_rate: int = 16000
) -> np.ndarray:
    """LnL: ``y = sum_j g_j * h_j * x**j`` (j = 1..n_f), rescaled to the input's peak. ``(T,) -> (T,)``."""
    source = x.astype(np.float64)
    out = np.zeros_like(source)
    gain_db = rng.uniform(params.min_g, params.max_g)
    power = np.ones_like(source)
    for order in range(1, params.n_f + 1):
        power = power * source
        if order > 1:
            # Each higher-order (non-linear) term is weaker than the one before it.
            gain_db -= rng.uniform(params.min_bias_lin_nonlin, params.max_bias_lin_nonlin)
        taps = _multiband_notch_filter(params, rng, sample_rate)
        out += 10.0 ** (gain_db / 20.0) * _filter(power, taps)
    peak_in, peak_out = _peak(source), _peak(out)
    if peak_out > 0.0:
        out *= peak_in / peak_out
    return out


def isd_impulsive_noise(
    x: np.ndarray, rng: np.random.Generator, params: RawBoostParams = RawBoostParams()
) -> np.ndarray:
    """ISD: add ``x[n] * zeta[n]``, zeta ~ U(-g_sd, g_sd), at ``p`` percent of random samples. ``(T,) -> (T,)``."""
    out = x.astype(np.float64).copy()
    count = int(round(out.shape[0] * params.p / 100.0))  # noqa: RUF046 - p may be a numpy float (numpy < 2: round() stays one)
    if count == 0:
        return out
    where = rng.choice(out.shape[0], size=count, replace=False)
    zeta = rng.uniform(-params.g_sd, params.g_sd, size=count)
    out[where] += out[where] * zeta
    return out


def ssi_coloured_noise(
    x: np.ndarray, rng: np.random.Generator, params: RawBoostParams = RawBoostParams(), sample_rate: int = 16000
) -> np.ndarray:
    """SSI: add filtered white noise at an SNR drawn from ``[snr_min, snr_max]`` dB. ``(T,) -> (T,)``."""
    source = x.astype(np.float64)
    noise = _filter(np.asarray(rng.standard_normal(source.shape[0])), _multiband_notch_filter(params, rng, sample_rate))
    snr_db = rng.uniform(params.snr_min, params.snr_max)
    signal_power = float(np.mean(source**2))
    noise_power = float(np.mean(noise**2))
    if signal_power == 0.0 or noise_power == 0.0:
        return source.copy()  # SNR is undefined for silence: leave it alone
    noise *= np.sqrt(signal_power / (noise_power * 10.0 ** (snr_db / 10.0)))
    return source + noise


def algorithm_4(
    x: np.ndarray, rng: np.random.Generator, sample_rate: int = 16000, params: RawBoostParams = RawBoostParams()
) -> np.ndarray:
    """The old algorithm 4 (LnL, ISD, SSI in series): float32 ``(T,)``; all the bench times."""
    y = lnl_convolutive_noise(x.astype(np.float64), rng, params, sample_rate)
    y = ssi_coloured_noise(isd_impulsive_noise(y, rng, params), rng, params, sample_rate)
    return y.astype(np.float32)
