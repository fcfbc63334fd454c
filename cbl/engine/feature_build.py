"""Building a frozen-feature cache entry durably, by one process at a time (:mod:`cbl.engine.feature_cache`).

An entry is built in a temporary folder, synced to disk and renamed into place, so
a reader never sees half of one; one writer builds while other trials wait on a
lock file and then read it, so several trials of a sweep share one copy (also
across nodes on a shared filesystem whose locks reach every node; where they do
not, two nodes may build the same entry, and the second rename defers to the
first). Disk blocks are reserved before writing: a full disk is an ``OSError``
naming the file, not a crash.
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
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from cbl.config import ExperimentConfig
from cbl.data import EvalDataset, LengthBucketSampler, TrainDataset, collate
from cbl.engine.feature_cache import CachedSplit, cache_key
from cbl.engine.runtime import autocast_for
from cbl.errors import CblError

__all__ = ["open_or_build"]

logger = logging.getLogger(__name__)


def open_or_build(
    root: Path,
    split: str,
    records: Sequence[Any],
    config: ExperimentConfig,
    model: Any,
    device: torch.device,
    fingerprint: str,
    copy: int = 0,
) -> CachedSplit:
    """The cache entry for ``split``'s records (``copy``: which augmented copy of train): opened when present,
    else built (by one process at a time)."""
    key = cache_key(split, records, config, fingerprint, device, copy)
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
        logger.info(
            "feature cache: built %s (%d utterances, %.1f MB) in %.1f s",
            final,
            len(records),
            cached.nbytes / 1e6,
            cached.built_seconds,
        )
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
            logger.warning(
                "feature cache: %s: the filesystem has no file locks (%s); trials may build the same "
                "entry twice (the results are the same)",
                path.parent,
                exc.strerror,
            )
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


def _audio_dataset(
    split: str, records: Sequence[Any], config: ExperimentConfig, copy: int = 0
) -> tuple[TrainDataset | EvalDataset, list[int]]:
    if split == "train":
        train = TrainDataset(
            records,
            config.data,
            config.train.seed,
            augment=bool(config.data.rawboost_algo and config.data.augment_copies),
        )
        train.set_epoch(copy)  # epoch `copy` reads augmented copy `copy`
        return train, [config.data.max_len] * len(records)
    evaluation = EvalDataset(records, config.data)
    return evaluation, evaluation.lengths()


def _build(
    folder: Path,
    split: str,
    records: Sequence[Any],
    config: ExperimentConfig,
    model: Any,
    device: torch.device,
    key: dict[str, Any],
    copy: int = 0,
) -> None:
    """Run the front-end over every item once and write the entry's three files into ``folder``."""
    frontend = model.frontend
    dataset, lengths = _audio_dataset(split, records, config, copy)
    frames = frontend.frame_lengths(torch.tensor(lengths, dtype=torch.long)).tolist()
    offsets = np.concatenate([[0], np.cumsum(frames)[:-1]]).astype(np.int64) if frames else np.zeros(0, np.int64)
    inner = ((frontend.num_hidden_states,) if frontend.stores_all_layers else ()) + (frontend.hidden_size,)
    features = _allocated_memmap(folder / "features.npy", (int(sum(frames)), *inner))
    loader = DataLoader(
        dataset,
        batch_sampler=LengthBucketSampler(lengths, config.train.eval_batch_size),
        collate_fn=collate,
        num_workers=max(0, config.data.num_workers),
    )
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for batch in loader:
            mask = batch["attention_mask"]
            with autocast_for(config, device):
                states, frame_mask = frontend.hidden(
                    batch["audio"].to(device), None if mask is None else mask.to(device)
                )
            states = states.float().cpu().numpy()
            for row, i in enumerate(batch["index"].tolist()):
                n = frames[i]
                got = int(frame_mask[row].sum()) if frame_mask is not None else states.shape[1]
                if got != n:
                    raise CblError(
                        f"feature cache: {records[i].path} gave {got} frames, expected {n} from its "
                        "header length; the cache cannot store it (train without train.feature_cache)"
                    )
                features[offsets[i] : offsets[i] + n] = states[row, :n]
    model.train(was_training)
    features.flush()
    del features
    np.save(
        folder / "index.npy",
        np.stack([offsets, np.asarray(frames, np.int64), np.asarray(lengths, np.int64)], 1)
        if frames
        else np.zeros((0, 3), np.int64),
    )
    meta = {
        **key,
        "utterances": len(records),
        "frames": int(sum(frames)),
        "shape": [int(sum(frames)), *inner],
        "bytes": int(sum(frames)) * int(np.prod(inner)) * 4,
        "created": time.time(),
    }
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
