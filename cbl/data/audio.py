"""Audio loading and length handling: soundfile in, float32 mono at the model's rate out.

torchaudio is imported only when a file needs resampling: torchaudio wheels are
built against one torch build (PyPI's is a CUDA build and fails to import beside
a CPU-only torch), and a corpus already at 16 kHz should not depend on it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from cbl.errors import AudioError

__all__ = ["audio_frames", "crop_or_tile", "fixed_window", "load_audio", "pad_batch"]

# libsndfile adjusts a cut-off WAV's length to what is there and only notes it in
# its log ("data : 32000 (should be 15978)"); we read that note to refuse the file.
_SHORT_CHUNK = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


def _declared_longer_than_present(extra_info: str) -> bool:
    match = _SHORT_CHUNK.search(extra_info)
    return match is not None and int(match.group(2)) < int(match.group(1))


def _resample(x: np.ndarray, orig_rate: int, new_rate: int, path: str) -> np.ndarray:
    try:
        import torchaudio.functional as taf
    except Exception as exc:  # ImportError, or OSError from a missing CUDA library
        raise AudioError(
            f"{path}: is {orig_rate} Hz and needs resampling to {new_rate} Hz, but torchaudio failed to import "
            f"({exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); torchaudio must match "
            f"the installed torch build (torch {torch.__version__}): install the torchaudio wheel from the same "
            "index as torch (e.g. the CPU index for a CPU-only torch), or resample the corpus beforehand"
        ) from None
    resampled = taf.resample(torch.from_numpy(x), orig_rate, new_rate)
    return resampled.numpy().astype(np.float32, copy=False)


def load_audio(path: str | os.PathLike[str], sample_rate: int = 16000) -> np.ndarray:
    """Read an audio file as mono float32 at ``sample_rate``.

    Returns ``(T,)`` with samples in [-1, 1] for integer formats. Stereo (and
    more channels) is averaged to mono; another rate is resampled with
    ``torchaudio.functional.resample``. Raises :class:`AudioError` naming the
    file when it is missing, unreadable, not audio, truncated, empty or holds
    NaN/inf samples.
    """
    name = str(path)
    if not Path(name).is_file():
        raise AudioError(f"{name}: audio file not found")
    try:
        with sf.SoundFile(name) as handle:
            declared = handle.frames
            rate = handle.samplerate
            truncated_header = _declared_longer_than_present(handle.extra_info)
            data = handle.read(dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise AudioError(f"{name}: cannot read as audio ({str(exc).strip() or exc.__class__.__name__})") from None
    if data.shape[0] == 0:
        raise AudioError(f"{name}: audio file is empty (0 samples)")
    # A cut-off file: its header promises more samples than the file holds.
    if truncated_header or (declared > 0 and data.shape[0] < declared):
        raise AudioError(f"{name}: audio file is truncated (its header promises more data than the file holds)")
    mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(mono).all():
        raise AudioError(f"{name}: audio holds NaN or infinite samples")
    if rate != sample_rate:
        mono = _resample(np.ascontiguousarray(mono), rate, sample_rate, name)
    return np.ascontiguousarray(mono, dtype=np.float32)


def audio_frames(path: str | os.PathLike[str], sample_rate: int = 16000) -> int:
    """Length in samples at ``sample_rate`` from the file header (0 when unreadable).

    Cheap (no decoding); used to bucket evaluation batches by length. An
    unreadable file gets 0 here and its real error from :func:`load_audio`.
    """
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        return 0
    if info.samplerate <= 0:
        return 0
    # exactly the length load_audio returns: torchaudio's resampler rounds up (ceil(n * new / orig))
    return -(-int(info.frames) * int(sample_rate) // int(info.samplerate))


def _tile(x: np.ndarray, length: int) -> np.ndarray:
    if x.shape[0] == 0:
        raise ValueError("cannot tile an empty signal")
    repeats = -(-length // x.shape[0])  # ceil division
    return np.tile(x, repeats)[:length]


def crop_or_tile(x: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """Training crop: ``(T,) -> (length,)``.

    Longer audio is cropped at a random offset drawn from ``rng``; shorter audio
    is repeated (tiled) rather than zero-padded, so every training sample is all
    signal, as in the ASVspoof baselines.
    """
    if length < 1:
        raise ValueError(f"length is {length}, but must be >= 1")
    if x.shape[0] > length:
        start = int(rng.integers(0, x.shape[0] - length + 1))
        return x[start : start + length].copy()
    return _tile(x, length).astype(np.float32, copy=False)


def fixed_window(x: np.ndarray, length: int) -> np.ndarray:
    """Deterministic evaluation window: the first ``length`` samples, tiled if shorter. ``(T,) -> (length,)``."""
    if length < 1:
        raise ValueError(f"length is {length}, but must be >= 1")
    if x.shape[0] >= length:
        return x[:length].copy()
    return _tile(x, length).astype(np.float32, copy=False)


def pad_batch(signals: Sequence[np.ndarray | torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad 1-D signals with zeros.

    Returns ``audio (B, T_max) float32`` and ``attention_mask (B, T_max) long``
    (1 on real samples, 0 on padding), the mask convention of ``transformers``.
    """
    if len(signals) == 0:
        raise ValueError("pad_batch needs at least one signal")
    tensors = [torch.as_tensor(s, dtype=torch.float32) for s in signals]
    if any(t.dim() != 1 for t in tensors):
        raise ValueError(f"pad_batch expects 1-D signals, got shapes {[tuple(t.shape) for t in tensors]}")
    longest = max(t.shape[0] for t in tensors)
    device = tensors[0].device  # tensors already on a GPU stay there
    audio = torch.zeros(len(tensors), longest, dtype=torch.float32, device=device)
    mask = torch.zeros(len(tensors), longest, dtype=torch.long, device=device)
    for row, t in enumerate(tensors):
        audio[row, : t.shape[0]] = t
        mask[row, : t.shape[0]] = 1
    return audio, mask
