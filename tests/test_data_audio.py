"""Audio loading (resampling, downmix, broken files) and length handling."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from cbl.data.audio import audio_frames, crop_or_tile, fixed_window, load_audio, pad_batch
from cbl.errors import AudioError


def sine(frequency: float, seconds: float, sample_rate: int) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (0.5 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def dominant_frequency(x: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.shape[0])))
    return float(np.argmax(spectrum) * sample_rate / x.shape[0])


def test_reads_16k_flac_as_float32_mono(tmp_path: Path) -> None:
    path = tmp_path / "a.flac"
    sf.write(path, sine(440, 0.5, 16000), 16000, subtype="PCM_16")
    x = load_audio(path)
    assert x.dtype == np.float32 and x.shape == (8000,)
    assert abs(dominant_frequency(x, 16000) - 440) < 3


@pytest.mark.parametrize("rate", [8000, 48000])
def test_resampling_keeps_duration_and_frequency(tmp_path: Path, rate: int) -> None:
    path = tmp_path / f"tone_{rate}.wav"
    sf.write(path, sine(1000, 1.0, rate), rate)
    x = load_audio(path, 16000)
    assert x.shape == (16000,) and x.dtype == np.float32
    assert abs(dominant_frequency(x, 16000) - 1000) < 3
    assert audio_frames(path, 16000) == 16000


def test_stereo_is_averaged(tmp_path: Path) -> None:
    left, right = sine(300, 0.2, 16000), sine(700, 0.2, 16000)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path), (left + right) / 2, atol=1e-6)


def test_torchaudio_import_failure_gives_a_clear_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "tone_8k.wav"
    sf.write(path, sine(1000, 0.1, 8000), 8000)
    monkeypatch.setitem(sys.modules, "torchaudio.functional", None)  # import now raises ImportError
    with pytest.raises(AudioError, match=r"tone_8k.wav: is 8000 Hz .*torchaudio must match the installed torch build"):
        load_audio(path, 16000)
    # a file already at the target rate does not need torchaudio at all
    same = tmp_path / "tone_16k.wav"
    sf.write(same, sine(1000, 0.1, 16000), 16000)
    assert load_audio(same).shape == (1600,)


def zero_bytes(d: Path) -> Path:
    (d / "empty.wav").write_bytes(b"")
    return d / "empty.wav"


def not_audio(d: Path) -> Path:
    (d / "notes.flac").write_text("these are not audio samples")
    return d / "notes.flac"


def no_samples(d: Path) -> Path:
    sf.write(d / "zero.wav", np.zeros(0, np.float32), 16000)
    return d / "zero.wav"


def with_nan(d: Path) -> Path:
    sf.write(d / "nan.wav", np.array([0.1, np.nan, 0.2], np.float32), 16000, subtype="FLOAT")
    return d / "nan.wav"


def with_inf(d: Path) -> Path:
    sf.write(d / "inf.wav", np.array([0.1, np.inf], np.float32), 16000, subtype="FLOAT")
    return d / "inf.wav"


def truncated_flac(d: Path) -> Path:
    return truncated(d, "flac")


def truncated_wav(d: Path) -> Path:
    return truncated(d, "wav")


def truncated(d: Path, fmt: str) -> Path:
    whole = d / f"whole.{fmt}"
    sf.write(whole, sine(440, 1.0, 16000), 16000, format=fmt.upper(), subtype="PCM_16")
    data = whole.read_bytes()
    cut = d / f"cut.{fmt}"
    cut.write_bytes(data[: len(data) // 2])
    return cut


def absent(d: Path) -> Path:
    return d / "absent.flac"


@pytest.mark.parametrize(
    "make,message",
    [
        (zero_bytes, r"empty.wav: cannot read as audio"),
        (not_audio, r"notes.flac: cannot read as audio"),
        (no_samples, r"zero.wav: audio file is empty"),
        (with_nan, r"nan.wav: audio holds NaN or infinite samples"),
        (with_inf, r"inf.wav: audio holds NaN or infinite samples"),
        (truncated_flac, r"cut.flac: (cannot read as audio|audio file is truncated)"),
        (truncated_wav, r"cut.wav: audio file is truncated"),
        (absent, r"absent.flac: audio file not found"),
    ],
    ids=lambda v: v.__name__ if callable(v) else "",
)
def test_broken_files_raise_audio_error_naming_the_file(
    tmp_path: Path, make: Callable[[Path], Path], message: str
) -> None:
    with pytest.raises(AudioError, match=message):
        load_audio(make(tmp_path))


def test_audio_frames_of_unreadable_file_is_zero(tmp_path: Path) -> None:
    path = tmp_path / "junk.wav"
    path.write_text("junk")
    assert audio_frames(path) == 0


def test_crop_or_tile() -> None:
    x = np.arange(10, dtype=np.float32)
    short = crop_or_tile(x, 25, np.random.default_rng(0))
    np.testing.assert_array_equal(short, np.tile(x, 3)[:25])
    long = np.arange(1000, dtype=np.float32)
    a = crop_or_tile(long, 100, np.random.default_rng(1))
    b = crop_or_tile(long, 100, np.random.default_rng(1))
    assert a.shape == (100,) and np.array_equal(a, b)
    np.testing.assert_array_equal(np.diff(a), 1.0)  # a contiguous window
    offsets = {int(crop_or_tile(long, 100, np.random.default_rng(s))[0]) for s in range(20)}
    assert len(offsets) > 10  # random offsets
    np.testing.assert_array_equal(crop_or_tile(x, 10, np.random.default_rng(0)), x)


def test_fixed_window_is_deterministic() -> None:
    x = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(fixed_window(x, 4), x[:4])
    np.testing.assert_array_equal(fixed_window(x, 15), np.concatenate([x, x[:5]]))
    with pytest.raises(ValueError, match="length is 0, but must be >= 1"):
        fixed_window(x, 0)


def test_pad_batch_mask() -> None:
    audio, mask = pad_batch([np.ones(3, np.float32), np.ones(5, np.float32), torch.ones(1)])
    assert audio.shape == (3, 5) and audio.dtype == torch.float32
    assert mask.dtype == torch.long
    assert mask.sum(dim=1).tolist() == [3, 5, 1]
    assert audio[0, 3:].abs().sum() == 0 and audio[2, 1:].abs().sum() == 0
    assert torch.equal(audio != 0, mask.bool())


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_header_length_is_exactly_the_loaded_length(tmp_path: Path, rate: int) -> None:
    """audio_frames predicts load_audio's length (evaluation buckets, the feature cache's frame counts)."""
    rng = np.random.default_rng(rate)
    for n in [44318, *rng.integers(rate // 10, 3 * rate, size=12).tolist()]:
        path = tmp_path / f"{rate}-{n}.flac"
        sf.write(path, (0.1 * rng.standard_normal(n)).astype(np.float32), rate)
        assert audio_frames(path, 16000) == load_audio(path, 16000).shape[0], (rate, n)
