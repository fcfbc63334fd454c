"""RawBoost data augmentation as published, vectorised.

Tak, Kamble, Patino, Todisco and Evans, "RawBoost: A Raw Data Boosting and
Augmentation Method applied to Automatic Speaker Verification Anti-Spoofing",
ICASSP 2022. Each algorithm follows the paper's definitions and, where the paper
leaves a detail open, the behaviour of the authors' public implementation (the
RawBoost code of their SSL_Anti-spoofing recipe), so that outputs have the same
distribution. Written here from those definitions; nothing is copied.

Three noise models act on the raw waveform ``x`` (samples in [-1, 1]):

1. **LnL** - linear and non-linear convolutive noise:
   ``y = sum_{j=1..N_f} h_j * x**j``, a fresh random notch cascade ``h_j`` per
   order; order 1 has a gain U(minG, maxG) dB, each higher order its own
   independent gain U(minG - maxBiasLinNonLin, maxG - minBiasLinNonLin) dB
   (U(-20, -5) by default). Then the mean is removed and ``y`` is divided by its
   peak only when the peak exceeds 1.
2. **ISD** - impulsive signal-dependent additive noise: a fraction
   ``beta ~ U(0, P)`` percent of the samples, chosen at random without
   repetition, each become ``x[i] + g_sd * x[i] * u1 * u2`` with u1, u2 ~ U(-1, 1)
   independent; the result is divided by its peak only when it exceeds 1.
3. **SSI** - stationary signal-independent additive noise: white Gaussian noise
   through a fresh notch cascade, scaled so that ``20 log10(|x|_2 / |noise|_2)``
   is U(SNRmin, SNRmax) dB, added to ``x`` (no level change afterwards).

A **notch cascade** is ``nBands`` band-stop FIR filters in series. Each band: a
centre frequency U(minF, maxF), a bandwidth U(minBW, maxBW), a tap count
floor(U(minCoeff, maxCoeff)) made odd (even counts + 1), band edges clipped to
(0, fs/2) (to 1 mHz inside them), a Hamming-windowed sinc design with unit gain at
0 Hz (``scipy.signal.firwin``'s). The cascade is then divided by the peak of its
magnitude response and multiplied by its gain, so its peak gain is exactly the
drawn gain: without this a band clipped at the 0 Hz edge leaves a sliver of pass
band that the unit-DC-gain design blows up to about +120 dB. Filtering keeps the
length: zero-padded FIR filtering, the group delay removed and, as in the
reference, one sample more (the output leads by one sample).

Algorithms: 0 none, 1 LnL, 2 ISD, 3 SSI, 4 = 1+2+3 in series, 5 = 1+2, 6 = 1+3,
7 = 2+3, 8 = LnL(x) + ISD(x) in parallel, divided by the peak only when it exceeds 1.

Where cbl differs from the reference implementation, by design: the peak of a
cascade's magnitude response is taken on a 2,049-point grid of [0, fs/2] (the
reference uses ``freqz``'s 512 points, so its peak gain may exceed the drawn gain
slightly); a band whose clipped edges cross is left out (the reference fails on it).

Speed: the band-stops of all cascades are designed in one array expression, each
cascade is the product of its bands' spectra, and every filtering is an FFT
convolution; LnL sums its N_f orders in the frequency domain and inverts once.
float32 audio is processed in float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from scipy import fft as sfft

__all__ = [
    "RAWBOOST_ALGORITHMS",
    "RAWBOOST_VERSION",
    "RawBoostParams",
    "apply_rawboost",
    "isd_impulsive_noise",
    "lnl_convolutive_noise",
    "lnl_gains_db",
    "notch_cascades",
    "ssi_coloured_noise",
]

# Bumped whenever the output for a given generator changes: the frozen-feature cache keys its
# augmented entries on it, so an entry of another RawBoost is never read back.
RAWBOOST_VERSION = 2

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
_SERIES = {1: "l", 2: "i", 3: "s", 4: "lis", 5: "li", 6: "ls", 7: "is"}

_EDGE_HZ = 1e-3  # a band edge at or beyond 0 Hz or fs/2 is moved this far inside (as the reference does)
# The reference drops one sample more than the group delay, so its filtered output leads the input by one
# sample. Acoustically nothing, but it lowers the SNR of LnL's change by ~1.5 dB (median, on speech-like
# signals; measured against a transcription of the reference): kept, so that statistics compare.
_LEAD = 1
# overlap-save block (FFT size) of the filtering, and the grid a cascade's peak gain is found on (2,049
# frequencies in [0, fs/2]; the reference uses freqz's 512)
_BLOCK = 4096  # FFT size of the grid on which a cascade's peak gain is found: 2,049 points in [0, fs/2]


@dataclass(frozen=True)
class RawBoostParams:
    """The paper's parameters; defaults are its best ASVspoof 2021 LA setting (the reference's defaults)."""

    n_bands: int = 5  # band-stop filters per notch cascade
    min_f: float = 20.0  # band centre frequency range (Hz)
    max_f: float = 8000.0
    min_bw: float = 100.0  # bandwidth range (Hz)
    max_bw: float = 1000.0
    min_coeff: int = 10  # tap count range per band-stop (made odd)
    max_coeff: int = 100
    min_g: float = 0.0  # gain range of a cascade, and of the linear LnL term (dB)
    max_g: float = 0.0
    min_bias_lin_nonlin: float = 5.0  # attenuation range of each non-linear LnL order relative to the linear (dB)
    max_bias_lin_nonlin: float = 20.0
    n_f: int = 5  # highest power of x in the LnL model
    p: float = 10.0  # ISD: at most this percent of the samples is hit (beta ~ U(0, P))
    g_sd: float = 2.0  # ISD: impulse gain
    snr_min: float = 10.0  # SSI: SNR range (dB)
    snr_max: float = 40.0


def _norm(x: np.ndarray) -> float:
    """The 2-norm without BLAS (a BLAS dot next to torch's threads was measured 100x slower here)."""
    return float(np.sqrt(np.square(x, dtype=np.float64).sum()))


def _limit_peak(y: np.ndarray) -> np.ndarray:
    """``y`` divided by its peak when the peak exceeds 1 (the reference's level rule), else unchanged."""
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    return y / peak if peak > 1.0 else y


def _band_stops(rng: np.random.Generator, count: int, params: RawBoostParams, sample_rate: int) -> np.ndarray:
    """``(count, n_bands, width)`` band-stop taps, each centred in a common odd ``width``.

    A filter of ``c`` taps centred in ``width`` taps is the same filter delayed by
    ``(width - c) / 2`` samples, and every one of them has its centre at ``(width - 1) / 2``:
    the cascade of ``n_bands`` such filters has its centre, the group delay, at
    ``n_bands * (width - 1) / 2``, which :func:`_filter_sum` removes.
    """
    shape = (count, params.n_bands)
    centre = rng.uniform(params.min_f, params.max_f, shape)
    bandwidth = rng.uniform(params.min_bw, params.max_bw, shape)
    taps = np.floor(rng.uniform(params.min_coeff, params.max_coeff, shape)).astype(np.int64) | 1
    nyquist = sample_rate / 2.0
    low = centre - bandwidth / 2.0
    high = centre + bandwidth / 2.0
    low = np.where(low <= 0.0, _EDGE_HZ, low) / nyquist
    high = np.where(high >= nyquist, nyquist - _EDGE_HZ, high) / nyquist
    low = np.minimum(low, high)[..., None]  # crossed edges (a band beyond fs/2): zero width, no notch
    high = high[..., None]
    width = int(taps.max()) if taps.size else 1
    m = np.arange(width) - (width - 1) / 2.0  # tap position relative to the centre
    half = ((taps - 1) / 2.0)[..., None]
    inside = np.abs(m) <= half
    hamming = 0.54 + 0.46 * np.cos(np.pi * m / np.maximum(half, 0.5))  # symmetric, over the filter's own taps
    # ideal band-stop = low-pass at the lower edge + (all-pass - low-pass at the upper edge)
    ideal = low * np.sinc(low * m) + (m == 0) - high * np.sinc(high * m)
    windowed = np.where(inside, ideal * hamming, 0.0)
    return windowed / windowed.sum(axis=-1, keepdims=True)  # unit gain at 0 Hz, as firwin scales a band-stop


class _Cascades(NamedTuple):
    """Notch cascades as the filtering uses them: frequency responses on the overlap-save block's grid."""

    spectra: np.ndarray  # (count, block // 2 + 1) complex; |spectra[i]| peaks at cascade i's gain
    span: int  # taps of every cascade, L; the group delay is (L - 1) / 2
    block: int  # FFT size: the filtering block, and the grid the peak is taken on


def _cascades(rng: np.random.Generator, gains_db: Any, params: RawBoostParams, sample_rate: int) -> _Cascades:
    gains_db = np.atleast_1d(np.asarray(gains_db, dtype=np.float64))
    bands = _band_stops(rng, gains_db.size, params, sample_rate)
    span = params.n_bands * (bands.shape[-1] - 1) + 1
    size = sfft.next_fast_len(span, real=True)
    # in series = the product of the bands' spectra (exact: the FFT is at least as long as the cascade)
    taps = sfft.irfft(np.prod(sfft.rfft(bands, size, axis=-1), axis=1), size, axis=-1)[:, :span]
    block = max(_BLOCK, 1 << (2 * (span - 1)).bit_length())  # a block at least twice the cascade
    spectra = sfft.rfft(taps, block, axis=-1)
    peak = np.abs(spectra).max(axis=-1, keepdims=True)
    spectra *= 10.0 ** (gains_db[:, None] / 20.0) / np.maximum(peak, np.finfo(np.float64).tiny)
    return _Cascades(spectra, span, block)


def notch_cascades(
    rng: np.random.Generator, gains_db: Any, params: RawBoostParams = RawBoostParams(), sample_rate: int = 16000
) -> np.ndarray:
    """FIR taps ``(len(gains_db), L)`` of random notch cascades, each with peak magnitude response ``gains_db[i]`` dB.

    ``L = n_bands * (width - 1) + 1`` with ``width`` the longest band-stop drawn; every
    cascade's group delay is ``(L - 1) / 2`` samples. The peak is taken on a grid of
    at least 2,049 frequencies in [0, fs/2].
    """
    cascades = _cascades(rng, gains_db, params, sample_rate)
    return sfft.irfft(cascades.spectra, cascades.block, axis=-1)[:, : cascades.span]


def _filter_sum(signals: np.ndarray, cascades: _Cascades) -> np.ndarray:
    """``sum_j cascade_j * signals[j]`` (FFT convolution), aligned as the reference: ``(J, T) -> (T,)``.

    Output sample ``n`` is the linear convolution at ``n + (L - 1) / 2 + 1``: the group
    delay removed, plus the reference's one-sample lead. Overlap-save in blocks of
    ``cascades.block`` samples (short FFTs stay in cache: faster per sample than one
    FFT over a 4-s signal), the orders summed before the one inverse transform; torch's
    FFT (MKL on x86: ~1.4x scipy's here).
    """
    length, span, block = signals.shape[-1], cascades.span, cascades.block
    start = (span - 1) // 2 + _LEAD
    wanted = start + length  # outputs 0 .. wanted - 1 of the full convolution
    step = block - (span - 1)  # new outputs per block
    count = -(-wanted // step)
    source = torch.from_numpy(np.ascontiguousarray(signals))
    padded = torch.nn.functional.pad(source, (span - 1, count * step - length))  # span - 1 zeros of history
    spectra = torch.fft.rfft(padded.unfold(-1, block, step), dim=-1)  # (J, count, block // 2 + 1)
    complex_type = np.complex64 if signals.dtype == np.float32 else np.complex128
    spectra *= torch.from_numpy(cascades.spectra.astype(complex_type))[:, None, :]
    blocks = torch.fft.irfft(spectra.sum(dim=0), block, dim=-1)[:, span - 1 :]  # the circular wrap dropped
    return blocks.reshape(-1)[start:wanted].numpy()


def _working(x: np.ndarray) -> np.ndarray:
    """float32 audio stays float32 (twice as fast, ample precision for an augmentation); float64 stays float64."""
    return np.asarray(x, dtype=np.result_type(x.dtype, np.float32))


def lnl_gains_db(rng: np.random.Generator, params: RawBoostParams = RawBoostParams()) -> np.ndarray:
    """Peak gains ``(n_f,)`` in dB of LnL's cascades: order 1 U(minG, maxG); every higher order its own
    independent U(minG - maxBiasLinNonLin, maxG - minBiasLinNonLin) (drawn per order, never accumulated)."""
    linear = rng.uniform(params.min_g, params.max_g)
    higher = rng.uniform(
        params.min_g - params.max_bias_lin_nonlin, params.max_g - params.min_bias_lin_nonlin, params.n_f - 1
    )
    return np.concatenate(([linear], higher))


def lnl_convolutive_noise(
    x: np.ndarray, rng: np.random.Generator, params: RawBoostParams = RawBoostParams(), sample_rate: int = 16000
) -> np.ndarray:
    """LnL: ``sum_j h_j * x**j`` with per-order gains, mean removed, peak limited to 1. ``(T,) -> (T,)``."""
    source = _working(x)
    cascades = _cascades(rng, lnl_gains_db(rng, params), params, sample_rate)
    powers = np.empty((params.n_f, source.shape[0]), dtype=source.dtype)
    powers[0] = source
    for order in range(1, params.n_f):  # repeated products: a float power is ~20x slower
        np.multiply(powers[order - 1], source, out=powers[order])
    y = _filter_sum(powers, cascades)
    return _limit_peak(y - y.mean())


def isd_impulsive_noise(
    x: np.ndarray, rng: np.random.Generator, params: RawBoostParams = RawBoostParams()
) -> np.ndarray:
    """ISD: ``x[i] += g_sd * x[i] * u1 * u2`` at ``floor(T * beta / 100)`` random samples, beta ~ U(0, P);
    peak limited to 1. ``(T,) -> (T,)``."""
    y = _working(x).copy()
    beta = rng.uniform(0.0, params.p)
    count = int(y.shape[0] * beta / 100.0)
    if count:
        where = rng.choice(y.shape[0], size=count, replace=False)
        factor = rng.uniform(-1.0, 1.0, count) * rng.uniform(-1.0, 1.0, count)
        y[where] += (params.g_sd * factor).astype(y.dtype) * y[where]
    return _limit_peak(y)


def ssi_coloured_noise(
    x: np.ndarray, rng: np.random.Generator, params: RawBoostParams = RawBoostParams(), sample_rate: int = 16000
) -> np.ndarray:
    """SSI: add white noise through a notch cascade at an SNR (2-norms) of U(SNRmin, SNRmax) dB. ``(T,) -> (T,)``."""
    source = _working(x)
    # torch draws normals ~2.5x faster than numpy; its generator is seeded from ``rng``, so the noise is too
    generator = torch.Generator().manual_seed(int(rng.integers(2**63)))
    dtype = torch.float32 if source.dtype == np.float32 else torch.float64
    white = torch.randn(source.shape[0], generator=generator, dtype=dtype).numpy()
    cascade = _cascades(rng, [rng.uniform(params.min_g, params.max_g)], params, sample_rate)
    noise = _filter_sum(white[None, :], cascade)
    snr_db = rng.uniform(params.snr_min, params.snr_max)
    signal_norm, noise_norm = _norm(source), _norm(noise)
    if signal_norm == 0.0 or noise_norm == 0.0:
        return source.copy()  # the SNR of silence is undefined: leave it alone
    return source + noise * (signal_norm / noise_norm * 10.0 ** (-snr_db / 20.0))


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
    y = _working(x)
    if algo == 8:
        y = _limit_peak(lnl_convolutive_noise(y, rng, params, sample_rate) + isd_impulsive_noise(y, rng, params))
    else:
        for step in _SERIES.get(algo, ""):
            if step == "l":
                y = lnl_convolutive_noise(y, rng, params, sample_rate)
            elif step == "i":
                y = isd_impulsive_noise(y, rng, params)
            else:
                y = ssi_coloured_noise(y, rng, params, sample_rate)
    # Non-finite input is refused upstream (load_audio); this guards the arithmetic.
    return np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32, copy=False)
