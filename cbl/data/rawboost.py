"""RawBoost data augmentation (Tak et al., ICASSP 2022), written from the paper's description.

Three noise models act on the raw waveform:

1. **LnL** - linear and non-linear convolutive noise: the signal and its
   higher powers ``x**j`` (j = 1..N_f) each pass a random multi-band notch
   filter (a channel); higher orders get progressively smaller gains.
2. **ISD** - impulsive signal-dependent additive noise: ``P`` percent of the
   samples, chosen at random, get ``x[n] * zeta[n]`` added, zeta uniform in
   ``[-g_sd, g_sd]`` (clipping, clicks).
3. **SSI** - stationary signal-independent coloured additive noise: white noise
   shaped by a random multi-band notch filter, added at an SNR drawn from
   ``[SNRmin, SNRmax]`` dB.

Algorithms: 0 none, 1 LnL, 2 ISD, 3 SSI, 4 = 1+2+3 in series, 5 = 1+2,
6 = 1+3, 7 = 2+3, 8 = LnL and ISD applied in parallel to the input, summed and
renormalised. Written by hand because no maintained library offers RawBoost;
the filters come from ``scipy.signal``.

Level: LnL output is rescaled to the input's peak level (the default gains are
0 dB, so the paper's channel does not change loudness) and ISD/SSI add to the
signal without rescaling, so ISD touches only its ``P`` percent of samples and
SSI's noise has exactly the drawn SNR.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal

__all__ = [
    "RawBoostParams",
    "RAWBOOST_ALGORITHMS",
    "apply_rawboost",
    "lnl_convolutive_noise",
    "isd_impulsive_noise",
    "ssi_coloured_noise",
]

RAWBOOST_ALGORITHMS: dict[int, str] = {
    0: "none",
    1: "LnL convolutive noise",
    2: "ISD impulsive noise",
    3: "SSI coloured additive noise",
    4: "LnL + ISD + SSI in series",
    5: "LnL + ISD in series",
    6: "LnL + SSI in series",
    7: "ISD + SSI in series",
    8: "LnL and ISD in parallel",
}


@dataclass(frozen=True)
class RawBoostParams:
    """The paper's parameters; defaults are those of its best ASVspoof 2021 LA setting."""

    n_bands: int = 5  # notch filters per multi-band filter
    min_f: float = 20.0  # notch centre frequency range (Hz)
    max_f: float = 8000.0
    min_bw: float = 100.0  # notch bandwidth range (Hz)
    max_bw: float = 1000.0
    min_coeff: int = 10  # FIR filter order range per notch
    max_coeff: int = 100
    min_g: float = 0.0  # gain of the linear LnL term (dB)
    max_g: float = 0.0
    min_bias_lin_nonlin: float = 5.0  # extra attenuation per non-linear order (dB)
    max_bias_lin_nonlin: float = 20.0
    n_f: int = 5  # highest power of x in the LnL model
    p: float = 10.0  # ISD: percent of samples hit
    g_sd: float = 2.0  # ISD: impulse gain
    snr_min: float = 10.0  # SSI: SNR range (dB)
    snr_max: float = 40.0


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
    count = int(round(out.shape[0] * params.p / 100.0))
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
    noise = _filter(rng.standard_normal(source.shape[0]), _multiband_notch_filter(params, rng, sample_rate))
    snr_db = rng.uniform(params.snr_min, params.snr_max)
    signal_power = float(np.mean(source**2))
    noise_power = float(np.mean(noise**2))
    if signal_power == 0.0 or noise_power == 0.0:
        return source.copy()  # SNR is undefined for silence: leave it alone
    noise *= np.sqrt(signal_power / (noise_power * 10.0 ** (snr_db / 10.0)))
    return source + noise


def apply_rawboost(
    x: np.ndarray,
    algo: int,
    rng: np.random.Generator,
    sample_rate: int = 16000,
    params: RawBoostParams = RawBoostParams(),
) -> np.ndarray:
    """Apply RawBoost algorithm ``algo`` (0-8) to ``x (T,)``; returns float32 ``(T,)``, finite, seeded by ``rng``."""
    if algo not in RAWBOOST_ALGORITHMS:
        raise ValueError(f"RawBoost algo is {algo!r}, but must be one of {sorted(RAWBOOST_ALGORITHMS)}")
    if x.ndim != 1:
        raise ValueError(f"RawBoost expects a 1-D signal, got shape {x.shape}")
    y = x.astype(np.float64)
    if algo == 0:
        pass
    elif algo == 8:
        y = lnl_convolutive_noise(y, rng, params, sample_rate) + isd_impulsive_noise(y, rng, params)
        peak_in, peak_out = _peak(x), _peak(y)
        if peak_out > 0.0:
            y *= peak_in / peak_out
    else:
        steps = {1: "l", 2: "i", 3: "s", 4: "lis", 5: "li", 6: "ls", 7: "is"}[algo]
        for step in steps:
            if step == "l":
                y = lnl_convolutive_noise(y, rng, params, sample_rate)
            elif step == "i":
                y = isd_impulsive_noise(y, rng, params)
            else:
                y = ssi_coloured_noise(y, rng, params, sample_rate)
    # Non-finite input is refused upstream (load_audio); this guards the arithmetic.
    return np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)
