"""A small source-filter speech synthesiser for the demo corpus's bonafide voices.

Not a TTS: it makes audio with the statistics an anti-spoofing front-end keys on
in real speech: a glottal source with time-varying pitch (declination and
intonation), cycle-to-cycle jitter and shimmer, breathy aspiration, formant
filtering with co-articulated vowel transitions, fricatives, plosive bursts,
pauses with breath noise, and per-speaker voice characteristics. Written by hand
because no library we depend on synthesises speech; the filters are scipy's.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np
from scipy import signal

__all__ = ["SpeakerVoice", "synthesise", "voice_for_speaker"]

# (F1, F2, F3, F4) in Hz for an adult male vocal tract; speakers scale them.
_VOWELS = np.array(
    [
        [730, 1090, 2440, 3400],  # a
        [270, 2290, 3010, 3700],  # i
        [300, 870, 2240, 3300],  # u
        [530, 1840, 2480, 3500],  # e
        [570, 840, 2410, 3300],  # o
        [660, 1720, 2410, 3450],  # ae
        [490, 1350, 1690, 3300],  # er
    ],
    dtype=np.float64,
)
_BANDWIDTHS = np.array([70.0, 100.0, 140.0, 200.0])
# fricative -> (low, high) band edges in Hz and relative level
_FRICATIVES = ((3800.0, 7500.0, 0.30), (2200.0, 5000.0, 0.30), (1200.0, 7000.0, 0.12), (500.0, 3000.0, 0.10))
_BLOCK_SECONDS = 0.025  # formant targets change every 25 ms (a time-varying filter in blocks)


@dataclass(frozen=True)
class SpeakerVoice:
    """Per-speaker voice characteristics."""

    f0: float  # mean pitch (Hz)
    formant_scale: float  # vocal tract length factor (shorter tract -> higher formants)
    jitter: float  # relative std of consecutive pitch periods
    shimmer: float  # relative std of consecutive pulse amplitudes
    breathiness: float  # aspiration noise level relative to the voiced source
    open_quotient: float  # open fraction of a glottal cycle (pulse shape)
    intonation: float  # depth of slow pitch movements (log-frequency std)
    rate: float  # syllable duration factor
    impulse_source: bool = False  # a vocoder's bare pulse train instead of glottal pulses

    def over_regular(self) -> SpeakerVoice:
        """The same speaker with a machine-regular source: no jitter, shimmer or breath, flat pitch."""
        return dataclasses.replace(self, jitter=0.0, shimmer=0.0, breathiness=0.0, intonation=self.intonation * 0.1)

    def buzzy_monotone(self) -> SpeakerVoice:
        """The same speaker through a simple pulse-train vocoder: no jitter, shimmer or breath, flat pitch."""
        return dataclasses.replace(self.over_regular(), impulse_source=True)


def voice_for_speaker(seed: int, speaker: str) -> SpeakerVoice:
    """Deterministic voice for a speaker id like ``LA_0081`` (odd numbers male, even female)."""
    number = int(speaker.rsplit("_", 1)[-1])
    rng = np.random.default_rng([seed, 2, number])
    male = number % 2 == 1
    return SpeakerVoice(
        f0=rng.uniform(95.0, 135.0) if male else rng.uniform(175.0, 235.0),
        formant_scale=rng.uniform(0.9, 1.0) if male else rng.uniform(1.08, 1.18),
        jitter=rng.uniform(0.008, 0.02),
        shimmer=rng.uniform(0.05, 0.12),
        breathiness=rng.uniform(0.05, 0.15),
        open_quotient=rng.uniform(0.5, 0.7),
        intonation=rng.uniform(0.06, 0.14),
        rate=rng.uniform(0.85, 1.2),
    )


def _plan(voice: SpeakerVoice, rng: np.random.Generator, seconds: float) -> list[tuple[str, float, float, int]]:
    """Segments ``(kind, start, end, variant)``: kind in vowel, fricative, burst, pause (seconds)."""
    events: list[tuple[str, float, float, int]] = []
    t = rng.uniform(0.02, 0.08)  # leading breath/silence
    while t < seconds:
        onset = rng.random()
        if onset < 0.4:
            length = rng.uniform(0.05, 0.11) * voice.rate
            events.append(("fricative", t, t + length, int(rng.integers(len(_FRICATIVES)))))
            t += length
        elif onset < 0.7:
            t += rng.uniform(0.03, 0.06)  # closure before the burst
            events.append(("burst", t, t + rng.uniform(0.008, 0.015), 0))
            t = events[-1][2]
        length = rng.uniform(0.09, 0.22) * voice.rate
        events.append(("vowel", t, t + length, int(rng.integers(len(_VOWELS)))))
        t += length
        if rng.random() < 0.12:
            length = rng.uniform(0.08, 0.2)
            events.append(("pause", t, t + length, 0))
            t += length
    return events


def _envelope(length: int, start: int, end: int, ramp: int) -> tuple[slice, np.ndarray]:
    """A raised-cosine gated window over [start, end) clipped to the signal."""
    start, end = max(start, 0), min(end, length)
    n = max(end - start, 0)
    env = np.ones(n)
    r = min(ramp, n // 2)
    if r > 0:
        rise = 0.5 - 0.5 * np.cos(np.pi * np.arange(r) / r)
        env[:r], env[n - r :] = rise, rise[::-1]
    return slice(start, end), env


_TABLE = 1024  # resolution of the tabulated glottal pulse


@functools.lru_cache(maxsize=256)
def _pulse_table(open_quotient: float) -> np.ndarray:
    """One period of Rosenberg glottal flow ``(_TABLE,)``: raised-cosine opening, quarter-cosine closing, closed."""
    frac = np.arange(_TABLE) / _TABLE
    opening, closing = open_quotient * 0.6, open_quotient * 0.4
    return np.where(
        frac < opening,
        0.5 - 0.5 * np.cos(np.pi * frac / opening),
        np.where(frac < opening + closing, np.cos(0.5 * np.pi * (frac - opening) / closing), 0.0),
    )


def _glottal_source(
    voice: SpeakerVoice, rng: np.random.Generator, length: int, sample_rate: int
) -> tuple[np.ndarray, np.ndarray]:
    """(excitation, glottal flow), both ``(length,)``: pulses with pitch contour, jitter and shimmer."""
    seconds = length / sample_rate
    freqs, phases = rng.uniform(0.5, 3.0, 3), rng.uniform(0, 2 * np.pi, 3)
    # Pitch on a 1 ms grid: declination plus slow intonation movements.
    grid = np.arange(int(seconds * 1000) + 2) / 1000.0
    wobble = np.sin(2 * np.pi * freqs[:, None] * grid + phases[:, None]).sum(axis=0) / np.sqrt(1.5)
    pitch = voice.f0 * (1.0 - 0.12 * grid / seconds) * np.exp(voice.intonation * wobble)
    # Period k starts where the smooth pitch contour has completed k cycles, then every period
    # is perturbed on its own (jitter); the drift this leaves in the contour lookup is negligible.
    cycles = np.concatenate([[0.0], np.cumsum(pitch[:-1]) / 1000.0])
    count = int(cycles[-1]) + 2
    nominal = np.interp(np.arange(count), cycles, grid)
    periods = np.maximum(0.3, 1.0 + voice.jitter * rng.standard_normal(count)) / np.interp(nominal, grid, pitch)
    edges = np.concatenate([[0.0], np.cumsum(periods)])
    edges = edges[: int(np.searchsorted(edges, seconds, side="right")) + 1]
    if edges[-1] < seconds:  # the contour ran out a period short of the end
        edges = np.append(edges, seconds + 1.0 / voice.f0)
    amplitudes = np.maximum(0.2, 1.0 + voice.shimmer * rng.standard_normal(edges.shape[0]))
    # Sample n lies in period k at fraction frac of it; the pulse shape comes from a table.
    boundaries = np.minimum(np.ceil(edges * sample_rate).astype(np.int64), length)
    k = np.repeat(np.arange(edges.shape[0] - 1), np.diff(boundaries))[:length]
    time = np.arange(k.shape[0]) / sample_rate
    frac = (time - edges[k]) / (edges[k + 1] - edges[k])
    flow = _pulse_table(round(voice.open_quotient, 3))[np.minimum((frac * _TABLE).astype(np.int64), _TABLE - 1)]
    flow = flow * amplitudes[k]
    if voice.impulse_source:
        # One sample per period: the flat, buzzy spectrum of a bare pulse-train vocoder.
        pulses = boundaries[:-1]
        keep = pulses < length
        excitation = np.zeros(length)
        excitation[pulses[keep]] = amplitudes[:-1][keep]
    else:
        excitation = np.diff(flow, prepend=0.0) * (sample_rate / voice.f0) * 0.1
    return excitation, flow


def _formant_denominators(formants: np.ndarray, bandwidths: np.ndarray, sample_rate: int) -> np.ndarray:
    """Denominators ``(B, 9)`` of cascades of four two-pole resonators, one per block of ``formants (B, 4)``."""
    radius = np.exp(-np.pi * bandwidths / sample_rate)  # (4,)
    theta = 2 * np.pi * np.minimum(formants, 0.45 * sample_rate) / sample_rate  # (B, 4)
    denominators = np.zeros((formants.shape[0], 2 * formants.shape[1] + 1))
    denominators[:, 0] = 1.0
    for i in range(formants.shape[1]):
        # multiply each row's polynomial by (1 - 2 r cos(theta) z^-1 + r^2 z^-2), highest powers first
        a1, a2 = -2.0 * radius[i] * np.cos(theta[:, i]), radius[i] ** 2
        product = denominators.copy()
        product[:, 1:] += a1[:, None] * denominators[:, :-1]
        product[:, 2:] += a2 * denominators[:, :-2]
        denominators = product
    return denominators


@functools.lru_cache(maxsize=64)
def _band_filter(low: float, high: float, btype: str, order: int, sample_rate: int) -> np.ndarray:
    """Cached Butterworth sections: the same few noise bands are used for every utterance."""
    edges = [low, min(high, 0.45 * sample_rate)] if btype == "bandpass" else high
    return signal.butter(order, edges, btype=btype, fs=sample_rate, output="sos")


def synthesise(voice: SpeakerVoice, rng: np.random.Generator, length: int, sample_rate: int = 16000) -> np.ndarray:
    """One utterance of ``voice``: float64 ``(length,)``, arbitrary level (the caller normalises)."""
    seconds = length / sample_rate
    events = _plan(voice, rng, seconds)
    excitation, flow = _glottal_source(voice, rng, length, sample_rate)
    aspiration = voice.breathiness * rng.standard_normal(length) * (0.3 + flow / max(float(flow.max()), 1e-9))
    voicing = np.zeros(length)
    ramp = int(0.015 * sample_rate)
    centres, targets = [], []
    for kind, start, end, variant in events:
        if kind == "vowel":
            where, env = _envelope(length, int(start * sample_rate), int(end * sample_rate), ramp)
            voicing[where] = np.maximum(voicing[where], env)
            centres.append(0.5 * (start + end))
            targets.append(_VOWELS[variant] * voice.formant_scale * rng.uniform(0.96, 1.04, 4))
    # Formants move smoothly from one vowel target to the next (co-articulation).
    block = int(_BLOCK_SECONDS * sample_rate)
    block_times = (np.arange(0, length, block) + block / 2) / sample_rate
    if not centres:
        centres, targets = [0.0], [_VOWELS[0] * voice.formant_scale]
    tracks = np.stack([np.interp(block_times, centres, np.asarray(targets)[:, i]) for i in range(4)], axis=1)
    bandwidths = _BANDWIDTHS * rng.uniform(0.85, 1.2, 4)
    voiced_source = (excitation + aspiration * 0.05) * voicing
    voiced = np.zeros(length)
    state = np.zeros(8)
    denominators = _formant_denominators(tracks, bandwidths, sample_rate)
    # A time-varying filter: new resonances every block, the filter state carried over.
    for b, begin in enumerate(range(0, length, block)):
        chunk = voiced_source[begin : begin + block]
        if not chunk.any() and np.abs(state).max() < 1e-9:
            state[:] = 0.0  # silence and the last vowel has rung out: nothing to filter
            continue
        denominator = denominators[b]
        voiced[begin : begin + block], state = signal.lfilter([denominator.sum()], denominator, chunk, zi=state)
    active = voicing > 0.5
    level = float(np.sqrt(np.mean(voiced[active] ** 2))) if active.any() else 1.0
    out = voiced
    for kind, start, end, variant in events:
        if kind == "vowel":
            continue
        where, env = _envelope(length, int(start * sample_rate), int(end * sample_rate), int(0.004 * sample_rate))
        n = env.shape[0]
        if n == 0:
            continue
        noise = rng.standard_normal(n)
        if kind == "fricative":
            low, high, gain = _FRICATIVES[variant]
            band = _band_filter(low, high, "bandpass", 4, sample_rate)
            part = signal.sosfilt(band, noise) * gain * rng.uniform(0.7, 1.3)
        elif kind == "burst":
            part = noise * np.exp(-np.arange(n) / (0.3 * n)) * 0.5
        else:  # pause: a breath
            part = signal.sosfilt(_band_filter(0.0, 1500.0, "lowpass", 2, sample_rate), noise) * rng.uniform(0.02, 0.05)
        out[where] += level * part * env
    # Breath noise under the lead-in before the first segment.
    first = int(events[0][1] * sample_rate) if events else 0
    if first > 0:
        out[:first] += level * 0.02 * rng.standard_normal(first)
    return out
