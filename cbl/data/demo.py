"""The built-in synthetic demo corpus (version 2), written in exactly the ASVspoof 2019 LA layout.

It exists so that the whole real path (protocol parsing, soundfile, training,
per-attack EER) runs anywhere in minutes: it is a pipeline check, not a
benchmark. Bonafide utterances come from a small source-filter speech
synthesiser (:mod:`cbl.data.speech`) and are recorded through one of three
channels; each spoofing "system" re-synthesises a target speaker's utterance of
the same channel and leaves its own artefact:

====  ====================================================  ==================
A01   phase reconstruction from a 20-band mel spectrogram:   train, dev, eval
      harmonics smeared across frequency, random phase
A02   half-rate vocoder, upsampled by zero insertion: the    train, dev, eval
      0-4 kHz band mirrored into 4-8 kHz (imaging)
A03   pulse-train vocoder: buzzy source, no jitter,          train, dev, eval
      shimmer or breath, flat pitch
A04   envelope vocoder: cepstrally smoothed spectrum         train, dev, eval
      excited by noise (no harmonics, whispery)
A05   A02's family: a third-rate vocoder, upsampled by       eval only (unseen)
      zero insertion (images in other bands)
A06   new: telephone codec, 300-3400 Hz band-pass and        eval only (unseen)
      8-bit mu-law
====  ====================================================  ==================

Seen and unseen relate as in ASVspoof 2019 LA (where A16 is A04 and A19 is A06
again): A05 is a variant of a seen family, A06 a kind of artefact no training
attack has. Every artefact is spectral or in the waveform's fine structure, the
kind a wav2vec2 conv stack learns from random weights; none is a slow gain change
(version 1's A02, 10 ms gain steps, was invisible by construction: the conv stack
normalises each frame, so that attack sat at 50% EER whatever the model).

Bonafide has sub-populations: speakers (male and female voices of their own
pitch, tract length, jitter, breathiness and rate) and recording channels
(``CHANNELS``: studio, headset, laptop, drawn per utterance; each its own
colouring and noise floor), so K bonafide clusters mean something. The channels
keep the full band: with a first design's low-passed, reverberant room channel
the refit centers sat on channel clusters with that channel's spoofs among them
(cluster_only best dev EER 24-41%).

Measured on 2 CPU cores (``cbl-search train --demo``, tiny random-weight
wav2vec2, 6 epochs, single runs): ce_only best dev EER 7.5%, cluster_only 9.4%;
A01 is the hardest seen attack (~15%), A06 the hardest unseen one (~20%).

Bonafide is 40% of each split (ASVspoof has ~10%) and there are 900 utterances
per split, so the dev EER's 95% bootstrap interval is within +-1.6 points at
the demo's typical EER (4-6%). Every utterance, bonafide or spoof, is normalised to a random
level in the same range and gets its channel's noise floor, so loudness alone
does not tell the classes apart. Speakers are disjoint between splits, as in
ASVspoof. Generation is deterministic: each utterance has its own
``SeedSequence(seed, split, index)``, so the same seed gives the same protocol
bytes and the same samples.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf
from scipy import signal

from cbl.data.speech import SpeakerVoice, synthesise, voice_for_speaker
from cbl.yamlio import atomic_write_text

if TYPE_CHECKING:
    from cbl.config import DataConfig

__all__ = [
    "BONAFIDE_SHARE",
    "CHANNELS",
    "DEMO_VERSION",
    "SEEN_ATTACKS",
    "SPLITS",
    "UNSEEN_ATTACKS",
    "cache_dir",
    "demo_root",
    "generate_demo_corpus",
]

DEMO_VERSION = 2  # bump when the generator changes, so cached corpora are regenerated
BONAFIDE_SHARE = 0.4
SEEN_ATTACKS = ("A01", "A02", "A03", "A04")
UNSEEN_ATTACKS = ("A05", "A06")
# split name -> (utterance id letter, protocol suffix, first speaker number, speakers)
SPLITS: dict[str, tuple[str, str, int, int]] = {
    "train": ("T", "train.trn", 81, 8),
    "dev": ("D", "dev.trl", 71, 6),
    "eval": ("E", "eval.trl", 1, 8),
}
_LEVEL_DBFS = (-30.0, -20.0)  # RMS level range, identical for every class


# --------------------------------------------------------------------------- attacks
_FRAME, _HOP = 512, 128  # STFT of the phase-based attacks: 32 ms frames, 75% overlap
_WINDOW = np.hanning(_FRAME + 1)[:-1]


def _stft(x: np.ndarray) -> np.ndarray:
    """``(T,) -> (frames, 257)`` Hann STFT. Hand-written: scipy's is ~3x slower on 1-s signals,
    and these two functions run for a third of the corpus."""
    padded = np.pad(x, (_FRAME - _HOP, _FRAME))
    frames = np.lib.stride_tricks.sliding_window_view(padded, _FRAME)[::_HOP]
    return np.fft.rfft(frames * _WINDOW, axis=1)


def _istft(spec: np.ndarray, length: int) -> np.ndarray:
    """Weighted overlap-add inverse of :func:`_stft`; exact for an unmodified spectrum."""
    frames = np.fft.irfft(spec, n=_FRAME, axis=1) * _WINDOW
    count = frames.shape[0]
    out = np.zeros((count + _FRAME // _HOP - 1) * _HOP)
    norm = np.zeros_like(out)
    for j in range(_FRAME // _HOP):
        part = frames[:, j * _HOP : (j + 1) * _HOP].reshape(-1)
        out[j * _HOP : j * _HOP + part.size] += part
        norm[j * _HOP : j * _HOP + part.size] += np.tile(_WINDOW[j * _HOP : (j + 1) * _HOP] ** 2, count)
    start = _FRAME - _HOP
    return out[start : start + length] / np.maximum(norm[start : start + length], 1e-8)


_PHASORS = np.exp(2j * np.pi * np.arange(4096) / 4096)  # unit phasors; a lookup beats complex exp 10x


def _random_phasors(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Uniformly random unit phasors (phase resolution 2 pi / 4096)."""
    return _PHASORS[rng.integers(0, _PHASORS.shape[0], size=shape)]


@functools.lru_cache(maxsize=32)
def _butterworth(order: int, edges: tuple[float, ...], btype: str, sample_rate: int) -> np.ndarray:
    """Cached filter design (designing an order-10 filter costs more than running it)."""
    return signal.butter(order, edges if len(edges) > 1 else edges[0], btype=btype, fs=sample_rate, output="sos")


@functools.lru_cache(maxsize=4)
def _mel_round_trip(bands: int, sample_rate: int) -> np.ndarray:
    """(257, 257) linear map: |STFT| -> ``bands`` triangular mel bands -> back (least squares, clipped later)."""
    top_mel = 2595.0 * np.log10(1.0 + (sample_rate / 2) / 700.0)  # the mel scale at Nyquist
    edges = 700.0 * (10.0 ** (np.linspace(0.0, top_mel, bands + 2) / 2595.0) - 1.0)
    freqs = np.fft.rfftfreq(_FRAME, 1.0 / sample_rate)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    weights = np.maximum(0.0, np.minimum((freqs - lower) / (centre - lower), (upper - freqs) / (upper - centre)))
    return np.linalg.pinv(weights) @ weights


def _stft_random_phase(x: np.ndarray, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """A01: phase reconstruction from a 12-band mel spectrogram (Griffin-Lim's starting point): the
    magnitude is smoothed across frequency (harmonics above ~1.5 kHz smeared into a band) and the phase
    drawn at random: the smeared, phasey sound of early neural TTS without a neural vocoder."""
    spec = _stft(x)
    magnitude = np.maximum(np.abs(spec) @ _mel_round_trip(12, sample_rate).T, 0.0)
    return _istft(magnitude * _random_phasors(rng, spec.shape), x.shape[0])


def _zero_insertion(x: np.ndarray, factor: int, sample_rate: int) -> np.ndarray:
    """A vocoder running at 1/``factor`` of the rate, upsampled by zero insertion without an anti-imaging
    filter, then a leaky 2nd-order smoothing as a vocoder's last layers do: the band below
    ``sample_rate / (2 factor)`` mirrored above it (the images of transposed convolutions), 3-10 dB down."""
    low = signal.sosfilt(_butterworth(8, (0.45 * sample_rate / factor,), "lowpass", sample_rate), x)
    y = np.zeros_like(x)
    y[::factor] = factor * low[::factor]
    return signal.sosfilt(_butterworth(2, (0.42 * sample_rate,), "lowpass", sample_rate), y)


def _upsampling_images(x: np.ndarray, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """A02: a half-rate vocoder upsampled by zero insertion: 0-4 kHz mirrored into 4-8 kHz."""
    return _zero_insertion(x, 2, sample_rate)


def _upsampling_images_by_three(x: np.ndarray, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """A05 (unseen; A02's family): a third-rate vocoder upsampled by zero insertion: 0-2.7 kHz mirrored
    twice, into 2.7-5.3 and 5.3-8 kHz (other bands than A02's, the same kind of artefact)."""
    return _zero_insertion(x, 3, sample_rate)


def _noise_excited(x: np.ndarray, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """A04: spectral envelope only (cepstrally smoothed), excited by noise: a whispery vocoder."""
    spec = _stft(x)
    cepstrum = np.fft.irfft(np.log(np.abs(spec) + 1e-7), axis=1)
    cepstrum[:, 24:-24] = 0.0  # keep the envelope (low quefrencies), drop the harmonics
    envelope = np.exp(np.fft.rfft(cepstrum, axis=1).real)
    # Complex Gaussian noise: Rayleigh magnitude (from uniforms) times a random phase.
    magnitude = np.sqrt(-np.log1p(-rng.random(spec.shape)))
    return _istft(envelope * magnitude * _random_phasors(rng, spec.shape), x.shape[0])


def _telephone(x: np.ndarray, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """A05: a narrow-band codec: 300-3400 Hz band-pass and 8-bit mu-law quantisation."""
    y = signal.sosfilt(_butterworth(6, (300.0, 3400.0), "bandpass", sample_rate), x)
    peak = float(np.max(np.abs(y))) or 1.0
    mu = 255.0
    companded = np.sign(y / peak) * np.log1p(mu * np.abs(y / peak)) / np.log1p(mu)
    quantised = np.round(companded * 127.0) / 127.0
    return peak * np.sign(quantised) * np.expm1(np.abs(quantised) * np.log1p(mu)) / mu


# attack id -> waveform artefact applied after synthesis and channel (A03 changes the voice instead)
_POST = {
    "A01": _stft_random_phase,
    "A02": _upsampling_images,
    "A04": _noise_excited,
    "A05": _upsampling_images_by_three,
    "A06": _telephone,
}


# --------------------------------------------------------------------------- recording channels
# name -> noise floor (dBFS) under the utterance. Each utterance is recorded through one channel, drawn per
# utterance; a spoof imitates a recording of its channel (the attack re-synthesises channel-coloured speech),
# so the channel never gives the label away, but it splits bonafide into sub-populations K centers can hold.
CHANNELS: dict[str, float] = {"studio": -72.0, "headset": -66.0, "laptop": -62.0}


def _channel(x: np.ndarray, channel: str, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """The recording channel's colouring, mild next to any attack's artefact (the band stays full):
    studio flat; headset high-passed at 200 Hz with a presence lift at 2.5-4 kHz; laptop thin
    (a first-order tilt against the lows) with one early reflection."""
    if channel == "studio":
        return x
    if channel == "headset":
        y = signal.sosfilt(_butterworth(2, (200.0,), "highpass", sample_rate), x)
        return y + 0.5 * signal.sosfilt(_butterworth(2, (2500.0, 4000.0), "bandpass", sample_rate), y)
    thin = 0.5 * x + 0.5 * signal.sosfilt(_butterworth(1, (600.0,), "highpass", sample_rate), x)
    delay = int(rng.uniform(3.0, 7.0) * sample_rate / 1000)
    out = thin.copy()
    out[delay:] += 0.25 * thin[:-delay]
    return out


def _utterance(
    voice: SpeakerVoice, attack: str, channel: str, rng: np.random.Generator, length: int, sample_rate: int
) -> np.ndarray:
    """One utterance ``(length,)`` float32 recorded through ``channel``: bonafide when ``attack == '-'``."""
    if attack == "A03":
        voice = voice.buzzy_monotone()
    x = _channel(synthesise(voice, rng, length, sample_rate), channel, rng, sample_rate)
    if attack in _POST:
        x = _POST[attack](x, rng, sample_rate)
    # Same level range and noise floor for every class: loudness must not give the label away.
    rms = float(np.sqrt(np.mean(x**2))) or 1.0
    x = x * (10.0 ** (rng.uniform(*_LEVEL_DBFS) / 20.0) / rms)
    x = x + 10.0 ** (CHANNELS[channel] / 20.0) * rng.standard_normal(length)
    return np.clip(x, -1.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------- corpus
def _split_plan(split: str, utterances: int, seed: int) -> list[tuple[str, str, str, str]]:
    """(utt_id, speaker, attack, channel) for each utterance of a split; attack '-' = bonafide."""
    letter, _, first_speaker, n_speakers = SPLITS[split]
    rng = np.random.default_rng([seed, list(SPLITS).index(split), 0])
    n_bonafide = round(BONAFIDE_SHARE * utterances)
    attacks = SEEN_ATTACKS + (UNSEEN_ATTACKS if split == "eval" else ())
    spoofs = [attacks[i % len(attacks)] for i in range(utterances - n_bonafide)]
    kinds = np.array(["-"] * n_bonafide + spoofs)[rng.permutation(utterances)]
    speakers = rng.integers(0, n_speakers, size=utterances)
    channels = rng.integers(0, len(CHANNELS), size=utterances)
    names = list(CHANNELS)
    return [
        (f"LA_{letter}_{i + 1:07d}", f"LA_{first_speaker + int(s):04d}", str(kind), names[int(c)])
        for i, (kind, s, c) in enumerate(zip(kinds, speakers, channels, strict=True))
    ]


def _write_split(root: Path, split: str, *, seed: int, utterances: int, length: int, sample_rate: int) -> str:
    """Write one split's FLAC files; return its protocol text."""
    split_index = list(SPLITS).index(split)
    plan = _split_plan(split, utterances, seed)
    audio_dir = root / f"ASVspoof2019_LA_{split}" / "flac"
    audio_dir.mkdir(parents=True, exist_ok=True)
    voices = {speaker: voice_for_speaker(seed, speaker) for _, speaker, _, _ in plan}

    def write_one(index: int) -> None:
        utt_id, speaker, attack, channel = plan[index]
        rng = np.random.default_rng([seed, split_index, 1, index])  # per utterance: order-independent
        audio = _utterance(voices[speaker], attack, channel, rng, length, sample_rate)
        sf.write(audio_dir / f"{utt_id}.flac", audio, sample_rate, format="FLAC", subtype="PCM_16")

    # Threads, not processes: numpy, scipy and libsndfile release the GIL for part of the work, and
    # threads need no re-import (safe inside Ray workers too). Output does not depend on the order.
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        list(pool.map(write_one, range(len(plan))))
    keys = {attack: "bonafide" if attack == "-" else "spoof" for _, _, attack, _ in plan}
    return "".join(f"{speaker} {utt_id} - {attack} {keys[attack]}\n" for utt_id, speaker, attack, _ in plan)


def generate_demo_corpus(
    out_dir: str | os.PathLike[str],
    *,
    seed: int = 0,
    utterances: int = 900,
    seconds: float = 1.0,
    sample_rate: int = 16000,
) -> Path:
    """Write the demo corpus under ``out_dir`` in the ASVspoof 2019 LA layout; return ``out_dir``.

    ``utterances`` is per split (train, dev, eval); every utterance lasts
    ``seconds``. Writes ``ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.{train.trn,dev.trl,eval.trl}.txt``
    and ``ASVspoof2019_LA_{split}/flac/UTT_ID.flac`` (16-bit FLAC). About 25 s for
    3 x 900 one-second utterances on 2 busy CPU cores.
    """
    minimum = 2 * (len(SEEN_ATTACKS) + len(UNSEEN_ATTACKS))
    if utterances < minimum:
        raise ValueError(f"utterances is {utterances}, but must be >= {minimum} so every attack occurs")
    if seed < 0:
        raise ValueError(f"seed is {seed}, but must be >= 0")
    if seconds <= 0 or sample_rate <= 0:
        raise ValueError(f"seconds ({seconds}) and sample_rate ({sample_rate}) must be > 0")
    root = Path(out_dir)
    length = round(seconds * sample_rate)
    protocols = root / "ASVspoof2019_LA_cm_protocols"
    protocols.mkdir(parents=True, exist_ok=True)
    for split, (_, suffix, _, _) in SPLITS.items():
        text = _write_split(root, split, seed=seed, utterances=utterances, length=length, sample_rate=sample_rate)
        atomic_write_text(protocols / f"ASVspoof2019.LA.cm.{suffix}.txt", text)
    return root


def cache_dir() -> Path:
    """``$CBL_CACHE`` or ``~/.cache/cbl``."""
    return Path(os.environ.get("CBL_CACHE") or Path.home() / ".cache" / "cbl").expanduser()


def demo_root(data_config: DataConfig) -> Path:
    """The cached demo corpus for ``data_config``'s demo settings, generated on first use.

    The folder name hashes (version, seed, utterances, seconds, sample rate).
    Generation writes into a temporary sibling folder and renames it into place,
    so a finished folder is always complete; when two processes race, the loser
    discards its copy and uses the winner's.
    """
    settings = (
        DEMO_VERSION,
        data_config.demo_seed,
        data_config.demo_utterances,
        float(data_config.demo_seconds),
        data_config.sample_rate,
    )
    digest = hashlib.sha256(repr(settings).encode()).hexdigest()[:12]
    final = cache_dir() / f"demo-{digest}"
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        generate_demo_corpus(
            staging,
            seed=data_config.demo_seed,
            utterances=data_config.demo_utterances,
            seconds=data_config.demo_seconds,
            sample_rate=data_config.sample_rate,
        )
        os.rename(staging, final)  # atomic; fails if another process got there first
    except OSError:
        if not final.is_dir():
            raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return final
