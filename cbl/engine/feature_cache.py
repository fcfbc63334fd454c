"""The frozen-feature cache: a frozen front-end's output, computed once per utterance, shared by all trials.

With ``model.freeze_ssl: true`` nothing before the pooling layer learns, yet
without a cache every epoch of every trial runs the SSL model again over the
same audio. With ``train.feature_cache: true`` the front-end's states
(:meth:`cbl.model.ssl.SSLFrontEnd.hidden`: one layer, or every layer for
``layer_mode: weighted``) are computed once per utterance into an on-disk,
memory-mapped array, and training reads them instead of audio.

What the cache holds is a pure function of its key, so results are those of the
uncached run with the same config and seed:

- the front-end's weights (a hash of every tensor: another checkpoint, or the tiny
  model built under another seed, is another key), ``layer_mode``/``layer_index``,
  and whether its input is normalised (``model.normalize_input`` as resolved for
  the checkpoint);
- the records (utterance id, path, file size and modification time);
- the crop policy: training items are the ``data.train_crop: fixed`` crops
  (``data.max_len``, offsets from ``train.seed``), evaluation items the full
  utterance or the window of ``data.eval_mode``.

Hence the rules: the cache needs ``data.train_crop: fixed`` (a random crop would
need every epoch's crop), and RawBoost only as a fixed set of augmented copies
(``data.augment_copies: N``: epoch e trains on copy e mod N, each copy one train
entry, built when an epoch first needs it); a dev split with utterances longer than
``data.eval_max_len`` is scored from audio (chunked scoring has no single state
sequence to store).

Layout: ``<cache root>/<split>-<key>/`` with ``features.npy`` (all utterances'
frames concatenated, float32), ``index.npy`` (offset, frames, samples per
utterance) and ``meta.json``; :mod:`cbl.engine.feature_build` builds an entry
(durably, one process at a time, shared by the trials of a sweep). The key also holds the precision
(bf16 autocast on CUDA or float32) and, for dev, the batch size, which decides the
batch shapes (and so the float rounding) of the forward passes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from cbl.config import ExperimentConfig
from cbl.data import batch_fields
from cbl.data.rawboost import RAWBOOST_VERSION
from cbl.errors import ConfigError
from cbl.model import SSLFrontEnd

__all__ = [
    "CACHE_VERSION",
    "CachedSplit",
    "FeatureDataset",
    "cache_key",
    "cache_root",
    "check_cache_config",
    "collate_features",
    "describe_cache",
    "format_cache_line",
    "frontend_fingerprint",
    "train_copy",
]

logger = logging.getLogger(__name__)
CACHE_VERSION = 1


def cache_root(config: ExperimentConfig, run_dir: Path) -> Path:
    """Where a run's cache lives: ``train.feature_cache_dir``, else ``<run_dir>/feature_cache``."""
    return Path(config.train.feature_cache_dir or Path(run_dir) / "feature_cache").expanduser()


def check_cache_config(config: ExperimentConfig) -> None:
    """Raise a one-line ConfigError when ``train.feature_cache`` is on but the config cannot use it."""
    if not config.train.feature_cache:
        return
    if not config.model.freeze_ssl:
        raise ConfigError(
            "key 'train.feature_cache' needs model.freeze_ssl=true: a front-end that learns changes "
            "its features every step, so there is nothing to cache"
        )
    if config.data.train_crop != "fixed":
        raise ConfigError(
            "key 'train.feature_cache' needs data.train_crop=fixed: features are computed once per "
            "utterance, so every epoch must see the same crop"
        )
    if config.data.rawboost_algo and not config.data.augment_copies:
        raise ConfigError(
            "key 'train.feature_cache' with RawBoost needs data.augment_copies >= 1 (a fixed set of "
            "augmented copies, each cached once) or data.rawboost_algo=0: fresh RawBoost draws every "
            "epoch act on raw audio, before the front-end the cache replaces"
        )


def frontend_fingerprint(frontend: SSLFrontEnd) -> str:
    """A hash of the SSL model's weights (names, shapes, dtypes, values)."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(frontend.ssl.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _records_digest(records: Sequence[Any]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for record in records:
        try:
            stat = os.stat(record.path)
            size, mtime = stat.st_size, stat.st_mtime_ns
        except OSError:
            size, mtime = -1, -1
        digest.update(f"{record.utt_id}\0{record.path}\0{size}\0{mtime}\n".encode())
    return digest.hexdigest()


def train_copy(config: ExperimentConfig, epoch: int) -> int:
    """Which augmented copy of the training items an epoch reads (0 without RawBoost copies)."""
    copies = config.data.augment_copies if config.data.rawboost_algo else 0
    return epoch % copies if copies else 0


def cache_key(
    split: str, records: Sequence[Any], config: ExperimentConfig, fingerprint: str, device: torch.device, copy: int = 0
) -> dict[str, Any]:
    """Everything the cached values depend on (``meta.json`` keeps it readable)."""
    data, model = config.data, config.model
    bf16 = device.type == "cuda" and config.train.bf16
    key: dict[str, Any] = {
        "precision": "bf16-autocast" if bf16 else "float32",
        "version": CACHE_VERSION,
        "split": split,
        "frontend": fingerprint,
        "ssl": model.ssl,
        "layer_mode": model.layer_mode,
        "layer_index": model.layer_index if model.layer_mode == "index" else None,
        "sample_rate": data.sample_rate,
        "records": _records_digest(records),
        "num_records": len(records),
    }
    if split == "train":
        augmented = bool(data.rawboost_algo and data.augment_copies)
        key.update(
            crop="fixed",
            max_len=data.max_len,
            seed=config.train.seed,
            rawboost=data.rawboost_algo if augmented else 0,
            copy=copy if augmented else 0,
        )
        if augmented:  # which RawBoost made the copy, and whether before or after the crop
            key.update(rawboost_version=RAWBOOST_VERSION, rawboost_before_crop=data.rawboost_before_crop)
    else:
        # the batches (eval_batch_size, by length) decide the batch shapes, hence the float rounding
        key.update(
            crop=data.eval_mode,
            eval_window=data.eval_window if data.eval_mode == "window" else None,
            batch=config.train.eval_batch_size,
        )
    return key


@dataclass
class CachedSplit:
    """One cache entry, memory-mapped read-only."""

    path: Path
    features: np.ndarray  # (total frames, H) or (total frames, L+1, H), float32 memmap
    index: np.ndarray  # (N, 3) int64: offset, frames, samples
    built_seconds: float  # 0.0 when it was already there

    @property
    def nbytes(self) -> int:
        return int(self.features.nbytes + self.index.nbytes)

    def states(self, i: int) -> torch.Tensor:
        offset, frames, _ = self.index[i]
        return torch.from_numpy(np.array(self.features[offset : offset + frames]))

    @classmethod
    def open(cls, path: Path, built_seconds: float = 0.0) -> CachedSplit:
        return cls(
            path=path,
            features=np.load(path / "features.npy", mmap_mode="r"),
            index=np.load(path / "index.npy"),
            built_seconds=built_seconds,
        )


class FeatureDataset(Dataset):
    """Items like the audio datasets' but holding ``states`` (the cached front-end output) instead of audio."""

    def __init__(self, records: Sequence[Any], cached: CachedSplit) -> None:
        if len(records) != len(cached.index):
            raise RuntimeError(f"{cached.path}: holds {len(cached.index)} utterances, expected {len(records)}")
        self.records = list(records)
        self.cached = cached

    def __len__(self) -> int:
        return len(self.records)

    def lengths(self) -> list[int]:
        """Samples per item, as the audio loader measures them (same length buckets)."""
        return [int(n) for n in self.cached.index[:, 2]]

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        return {
            "states": self.cached.states(index),
            "label": record.label,
            "utt_id": record.utt_id,
            "attack": record.attack,
            "index": index,
        }


def collate_features(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch cached items: ``states (B, F, ...)`` right-padded, ``frame_mask (B, F) bool`` or None."""
    states = [item["states"] for item in items]
    longest = max(s.shape[0] for s in states)
    if all(s.shape[0] == longest for s in states):
        batch, mask = torch.stack(states), None
    else:
        batch = states[0].new_zeros((len(states), longest, *states[0].shape[1:]))
        mask = torch.zeros((len(states), longest), dtype=torch.bool)
        for i, s in enumerate(states):
            batch[i, : s.shape[0]] = s
            mask[i, : s.shape[0]] = True
    return {"states": batch, "frame_mask": mask, **batch_fields(items)}


def describe_cache(root: Path) -> list[dict[str, Any]]:
    """The entries under a cache root (split, utterances, size in bytes, path), for reports and ``status``."""
    entries = []
    for meta_path in sorted(Path(root).glob("*/meta.json")):
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            continue
        entries.append(
            {
                "path": str(meta_path.parent),
                "split": meta.get("split"),
                "utterances": meta.get("utterances"),
                "bytes": sum(p.stat().st_size for p in meta_path.parent.iterdir()),
                "layer_mode": meta.get("layer_mode"),
                "ssl": meta.get("ssl"),
            }
        )
    return entries


def format_cache_line(root: Path) -> str:
    """``feature cache <root>: train 12.3 MB (480 utterances), dev ...; 20.1 MB in all``, or '' when empty."""
    entries = describe_cache(root)
    if not entries:
        return ""
    parts = ", ".join(
        f"{e['split']} {e['bytes'] / 1e6:.1f} MB ({e['utterances']} utterances, {e['layer_mode']})" for e in entries
    )
    return f"feature cache {root}: {parts}; {sum(e['bytes'] for e in entries) / 1e6:.1f} MB in all"
