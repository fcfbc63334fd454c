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
utterance) and ``meta.json``. An entry is built in a temporary folder, synced to
disk and renamed into place, so a reader never sees half of one; one writer builds
while other trials wait on a lock file and then read it, so several trials of a
sweep share one copy (also across nodes on a shared filesystem whose locks reach
every node; where they do not, two nodes may build the same entry, and the second
rename defers to the first). Disk blocks are reserved before writing: a full disk
is an ``OSError`` naming the file, not a crash. The key also holds the precision
(bf16 autocast on CUDA or float32) and, for dev, the batch size, which decides the
batch shapes (and so the float rounding) of the forward passes.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from cbl.config import ExperimentConfig
from cbl.data import EvalDataset, LengthBucketSampler, TrainDataset, batch_fields, collate
from cbl.data.rawboost import RAWBOOST_VERSION
from cbl.engine.runtime import autocast_for
from cbl.errors import CblError, ConfigError
from cbl.model import SSLFrontEnd

__all__ = ["CachedSplit", "FeatureDataset", "cache_root", "check_cache_config", "collate_features",
           "describe_cache", "format_cache_line", "frontend_fingerprint", "open_or_build", "train_copy"]

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
        raise ConfigError("key 'train.feature_cache' needs model.freeze_ssl=true: a front-end that learns changes "
                          "its features every step, so there is nothing to cache")
    if config.data.train_crop != "fixed":
        raise ConfigError("key 'train.feature_cache' needs data.train_crop=fixed: features are computed once per "
                          "utterance, so every epoch must see the same crop")
    if config.data.rawboost_algo and not config.data.augment_copies:
        raise ConfigError("key 'train.feature_cache' with RawBoost needs data.augment_copies >= 1 (a fixed set of "
                          "augmented copies, each cached once) or data.rawboost_algo=0: fresh RawBoost draws every "
                          "epoch act on raw audio, before the front-end the cache replaces")


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


def _key(split: str, records: Sequence[Any], config: ExperimentConfig, fingerprint: str,
         device: torch.device, copy: int = 0) -> dict[str, Any]:
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
        key.update(crop="fixed", max_len=data.max_len, seed=config.train.seed,
                   rawboost=data.rawboost_algo if augmented else 0, copy=copy if augmented else 0)
        if augmented:  # which RawBoost made the copy, and whether before or after the crop
            key.update(rawboost_version=RAWBOOST_VERSION, rawboost_before_crop=data.rawboost_before_crop)
    else:
        # the batches (eval_batch_size, by length) decide the batch shapes, hence the float rounding
        key.update(crop=data.eval_mode, eval_window=data.eval_window if data.eval_mode == "window" else None,
                   batch=config.train.eval_batch_size)
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
        return cls(path=path, features=np.load(path / "features.npy", mmap_mode="r"),
                   index=np.load(path / "index.npy"), built_seconds=built_seconds)


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
        return {"states": self.cached.states(index), "label": record.label, "utt_id": record.utt_id,
                "attack": record.attack, "index": index}


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


def open_or_build(root: Path, split: str, records: Sequence[Any], config: ExperimentConfig, model: Any,
                  device: torch.device, fingerprint: str, copy: int = 0) -> CachedSplit:
    """The cache entry for ``split``'s records (``copy``: which augmented copy of train): opened when present,
    else built (by one process at a time)."""
    key = _key(split, records, config, fingerprint, device, copy)
    key["normalize_input"] = bool(model.frontend.normalize_input)  # "auto" resolved for this checkpoint
    name = f"{split}-{hashlib.blake2b(json.dumps(key, sort_keys=True).encode(), digest_size=8).hexdigest()}"
    final = root / name
    if (final / "meta.json").is_file():
        return CachedSplit.open(final)
    root.mkdir(parents=True, exist_ok=True)
    with _entry_lock(root / f"{name}.lock"):  # another trial building it: wait, then read its result
        if (final / "meta.json").is_file():
            return CachedSplit.open(final)
        for stale in root.glob(f".{name}.tmp-*"):  # left by a builder that died holding this lock
            shutil.rmtree(stale, ignore_errors=True)
        started = time.monotonic()
        tmp = root / f".{name}.tmp-{socket.gethostname()}-{os.getpid()}"
        tmp.mkdir()
        try:
            _build(tmp, split, records, config, model, device, key, copy)
            _fsync_path(tmp)
            try:
                os.replace(tmp, final)
            except OSError as exc:  # another node won the race (its locks did not reach ours)
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not (final / "meta.json").is_file():
                    raise
            _fsync_path(root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        cached = CachedSplit.open(final, built_seconds=time.monotonic() - started)
        logger.info("feature cache: built %s (%d utterances, %.1f MB) in %.1f s", final, len(records),
                    cached.nbytes / 1e6, cached.built_seconds)
        return cached


@contextmanager
def _entry_lock(path: Path) -> Iterator[None]:
    """An exclusive flock on ``path``, waited for; where the filesystem has no locks, a warning and no lock."""
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        except OSError as exc:
            if exc.errno not in (errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            logger.warning("feature cache: %s: the filesystem has no file locks (%s); trials may build the same "
                           "entry twice (the results are the same)", path.parent, exc.strerror)
            yield
            return
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _fsync_path(path: Path) -> None:
    """Flush a file, or a folder's files and the folder itself, to disk (a rename after it is then durable)."""
    targets = [*path.iterdir(), path] if path.is_dir() else [path]
    for target in targets:
        fd = os.open(target, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _audio_dataset(split: str, records: Sequence[Any], config: ExperimentConfig,
                   copy: int = 0) -> tuple[TrainDataset | EvalDataset, list[int]]:
    if split == "train":
        train = TrainDataset(records, config.data, config.train.seed,
                               augment=bool(config.data.rawboost_algo and config.data.augment_copies))
        train.set_epoch(copy)  # epoch `copy` reads augmented copy `copy`
        return train, [config.data.max_len] * len(records)
    evaluation = EvalDataset(records, config.data)
    return evaluation, evaluation.lengths()


def _build(folder: Path, split: str, records: Sequence[Any], config: ExperimentConfig, model: Any,
           device: torch.device, key: dict[str, Any], copy: int = 0) -> None:
    """Run the front-end over every item once and write the entry's three files into ``folder``."""
    frontend = model.frontend
    dataset, lengths = _audio_dataset(split, records, config, copy)
    frames = frontend.frame_lengths(torch.tensor(lengths, dtype=torch.long)).tolist()
    offsets = np.concatenate([[0], np.cumsum(frames)[:-1]]).astype(np.int64) if frames else np.zeros(0, np.int64)
    inner = ((frontend.num_hidden_states,) if frontend.stores_all_layers else ()) + (frontend.hidden_size,)
    features = _allocated_memmap(folder / "features.npy", (int(sum(frames)), *inner))
    loader = DataLoader(dataset, batch_sampler=LengthBucketSampler(lengths, config.train.eval_batch_size),
                        collate_fn=collate, num_workers=max(0, config.data.num_workers))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for batch in loader:
            mask = batch["attention_mask"]
            with autocast_for(config, device):
                states, frame_mask = frontend.hidden(batch["audio"].to(device), None if mask is None else mask.to(device))
            states = states.float().cpu().numpy()
            for row, i in enumerate(batch["index"].tolist()):
                n = frames[i]
                got = int(frame_mask[row].sum()) if frame_mask is not None else states.shape[1]
                if got != n:
                    raise CblError(f"feature cache: {records[i].path} gave {got} frames, expected {n} from its "
                                   "header length; the cache cannot store it (train without train.feature_cache)")
                features[offsets[i] : offsets[i] + n] = states[row, :n]
    model.train(was_training)
    features.flush()
    del features
    np.save(folder / "index.npy", np.stack([offsets, np.asarray(frames, np.int64), np.asarray(lengths, np.int64)], 1)
            if frames else np.zeros((0, 3), np.int64))
    meta = {**key, "utterances": len(records), "frames": int(sum(frames)), "shape": [int(sum(frames)), *inner],
            "bytes": int(sum(frames)) * int(np.prod(inner)) * 4, "created": time.time()}
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))


def _allocated_memmap(path: Path, shape: tuple[int, ...]) -> np.memmap:
    """A writable float32 ``.npy`` memmap whose disk blocks are reserved first.

    A memmap over a sparse file would claim blocks as pages are written, and a
    full disk would then kill the process with SIGBUS; reserving them up front
    turns that into an OSError (ENOSPC) naming the file, before any work.
    """
    features = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as exc:
        del features
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    finally:
        os.close(fd)
    return features


def describe_cache(root: Path) -> list[dict[str, Any]]:
    """The entries under a cache root (split, utterances, size in bytes, path), for reports and ``status``."""
    entries = []
    for meta_path in sorted(Path(root).glob("*/meta.json")):
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            continue
        entries.append({"path": str(meta_path.parent), "split": meta.get("split"), "utterances": meta.get("utterances"),
                        "bytes": sum(p.stat().st_size for p in meta_path.parent.iterdir()),
                        "layer_mode": meta.get("layer_mode"), "ssl": meta.get("ssl")})
    return entries


def format_cache_line(root: Path) -> str:
    """``feature cache <root>: train 12.3 MB (480 utterances), dev ...; 20.1 MB in all``, or '' when empty."""
    entries = describe_cache(root)
    if not entries:
        return ""
    parts = ", ".join(f"{e['split']} {e['bytes'] / 1e6:.1f} MB ({e['utterances']} utterances, {e['layer_mode']})"
                      for e in entries)
    return f"feature cache {root}: {parts}; {sum(e['bytes'] for e in entries) / 1e6:.1f} MB in all"
