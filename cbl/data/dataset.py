"""torch datasets and loaders: training crops with RawBoost, evaluation of full utterances or windows.

Reproducibility: every random choice of a training item (crop offset, RawBoost)
comes from its own generator seeded by ``(seed, epoch, index)``, so an item is
the same whichever worker loads it and in whatever order; sampling order comes
from a torch generator seeded by ``(seed, epoch)``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler, WeightedRandomSampler

from cbl.config import DataConfig
from cbl.data.audio import audio_frames, crop_or_tile, fixed_window, load_audio, pad_batch
from cbl.data.protocols import Record
from cbl.data.rawboost import apply_rawboost

__all__ = [
    "EvalDataset",
    "LengthBucketSampler",
    "TrainDataset",
    "augment_copy_rng",
    "batch_fields",
    "collate",
    "fixed_crop_rng",
    "make_eval_loader",
    "make_train_loader",
    "seed_worker",
]

Item = dict[str, Any]


def _derive_seed(*parts: int) -> int:
    """A 32-bit seed mixed from ``parts`` (SeedSequence: nearby inputs give unrelated seeds)."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0])


class TrainDataset(Dataset[Item]):
    """Training items: audio cropped or tiled to ``data.max_len``, RawBoost ``data.rawboost_algo`` applied.

    RawBoost acts on the whole utterance before the crop (``data.rawboost_before_crop``,
    the published recipe's order), or on the crop.

    Item: ``audio (max_len,) float32 tensor``, ``label int``, ``utt_id``, ``attack``, ``index``.
    Call :meth:`set_epoch` before each epoch so crops and augmentation change. With
    ``data.train_crop == "fixed"`` the crop offset depends on ``(seed, index)`` only,
    the same every epoch (the frozen-feature cache computes each crop once); with
    ``data.augment_copies == N`` RawBoost draws from copy ``epoch mod N`` of the
    item, so there are N augmented versions in all. ``augment=False`` leaves
    RawBoost out.
    """

    def __init__(self, records: Sequence[Record], data: DataConfig, seed: int, *, augment: bool = True) -> None:
        self.records = list(records)
        self.data = data
        self.seed = seed
        self.augment = augment
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Item:
        record = self.records[index]
        rng = np.random.default_rng([int(p) & 0xFFFFFFFF for p in (self.seed, self.epoch, index)])
        crop_rng = rng if self.data.train_crop == "random" else fixed_crop_rng(self.seed, index)
        audio = load_audio(record.path, self.data.sample_rate)
        augment = bool(self.augment and self.data.rawboost_algo)
        if augment and self.data.rawboost_before_crop:
            audio = self._rawboost(audio, rng, index)
        audio = crop_or_tile(audio, self.data.max_len, crop_rng)
        if augment and not self.data.rawboost_before_crop:
            audio = self._rawboost(audio, rng, index)
        return _item(record, audio, index)

    def _rawboost(self, audio: np.ndarray, rng: np.random.Generator, index: int) -> np.ndarray:
        copies = self.data.augment_copies
        augment_rng = rng if not copies else augment_copy_rng(self.seed, self.epoch % copies, index)
        return apply_rawboost(audio, self.data.rawboost_algo, augment_rng, self.data.sample_rate)


def augment_copy_rng(seed: int, copy: int, index: int) -> np.random.Generator:
    """The RawBoost generator of copy ``copy`` of an item under ``data.augment_copies``."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, 0xA06, int(copy), int(index) & 0xFFFFFFFF])


def fixed_crop_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of an item's crop under ``data.train_crop == "fixed"`` (no epoch in it)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x0F1CED, int(index) & 0xFFFFFFFF])


def _item(record: Record, audio: np.ndarray, index: int) -> Item:
    return {
        "audio": torch.from_numpy(audio),
        "label": record.label,
        "utt_id": record.utt_id,
        "attack": record.attack,
        "index": index,
    }


class EvalDataset(Dataset[Item]):
    """Evaluation items: the full utterance (``data.eval_mode == 'full'``) or its first
    ``data.eval_window`` samples, tiled when shorter (``'window'``). No augmentation."""

    def __init__(self, records: Sequence[Record], data: DataConfig) -> None:
        self.records = list(records)
        self.data = data

    def __len__(self) -> int:
        return len(self.records)

    def lengths(self) -> list[int]:
        """Per-item length in samples as the model will see it (from file headers, no decoding)."""
        if self.data.eval_mode == "window":
            return [self.data.eval_window] * len(self.records)
        return [audio_frames(r.path, self.data.sample_rate) for r in self.records]

    def __getitem__(self, index: int) -> Item:
        record = self.records[index]
        audio = load_audio(record.path, self.data.sample_rate)
        if self.data.eval_mode == "window":
            audio = fixed_window(audio, self.data.eval_window)
        return _item(record, audio, index)


def collate(items: Sequence[Item]) -> dict[str, Any]:
    """Batch items into ``audio (B, T) float32``, ``attention_mask (B, T) long`` or None when all
    items have the same length, ``label (B,) long``, ``utt_id``/``attack`` lists, ``index (B,) long``."""
    signals = [item["audio"] for item in items]
    if all(s.shape[0] == signals[0].shape[0] for s in signals):
        audio, mask = torch.stack(signals).float(), None
    else:
        audio, mask = pad_batch(signals)
    return {"audio": audio, "attention_mask": mask, **batch_fields(items)}


def batch_fields(items: Sequence[Item]) -> dict[str, Any]:
    """What every batch carries besides its signal: ``label``/``index`` tensors, ``utt_id``/``attack`` lists."""
    return {
        "label": torch.tensor([item["label"] for item in items], dtype=torch.long),
        "utt_id": [item["utt_id"] for item in items],
        "attack": [item["attack"] for item in items],
        "index": torch.tensor([item["index"] for item in items], dtype=torch.long),
    }


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed numpy and ``random`` from torch's per-worker seed.

    Items draw their own randomness from ``(seed, epoch, index)``; this covers anything
    else a worker might touch.
    """
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def make_train_loader(
    records: Sequence[Record],
    data: DataConfig,
    *,
    batch_size: int,
    seed: int,
    epoch: int = 0,
    pin_memory: bool = False,
    drop_last: bool = False,
    dataset: Dataset[Item] | None = None,
    collate_fn: Any = None,
) -> DataLoader:
    """Shuffled training batches (see :func:`collate`), reproducible for ``(seed, epoch)``.

    With ``data.balanced_sampling`` items are drawn with replacement, bonafide and
    spoof equally likely (``len(records)`` draws per epoch); otherwise each record
    once per epoch in a random order. ``data.num_workers`` worker processes.
    ``dataset``/``collate_fn`` replace the audio items by others over the same
    records in the same order (cached features): the batches then hold the same
    utterances as the audio loader's.
    """
    if dataset is None:
        dataset = TrainDataset(records, data, seed)
        dataset.set_epoch(epoch)
    generator = torch.Generator().manual_seed(_derive_seed(seed, epoch))
    sampler: Sampler[int]
    if data.balanced_sampling:
        labels = np.array([r.label for r in records])
        counts = np.bincount(labels, minlength=2)
        weights = (1.0 / np.maximum(counts[labels], 1)).tolist()
        sampler = WeightedRandomSampler(weights, num_samples=len(labels), replacement=True, generator=generator)
    else:
        sampler = RandomSampler(range(len(records)), generator=generator)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=collate_fn or collate,
        num_workers=max(0, data.num_workers),
        worker_init_fn=seed_worker if data.num_workers > 0 else None,
        generator=generator,
        pin_memory=pin_memory,
        drop_last=drop_last,
    )


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of indices with similar lengths (longest first), so padding stays small.

    Deterministic; every index appears exactly once. The order differs from the
    protocol's: map results back with the batch's ``utt_id`` or ``index``.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size is {batch_size}, but must be >= 1")
        order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
        self.batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def make_eval_loader(
    records: Sequence[Record],
    data: DataConfig,
    *,
    batch_size: int,
    pin_memory: bool = False,
    dataset: Dataset[Item] | None = None,
    lengths: Sequence[int] | None = None,
    collate_fn: Any = None,
) -> DataLoader:
    """Evaluation batches bucketed by length (see :class:`LengthBucketSampler`); no augmentation.

    ``dataset``/``lengths``/``collate_fn`` replace the audio items (cached features;
    ``lengths`` in samples, so the batches are the audio loader's).
    """
    if dataset is None:
        dataset = EvalDataset(records, data)
        lengths = dataset.lengths()
    if lengths is None:
        raise ValueError("make_eval_loader: a dataset given without its lengths (samples per item) cannot be bucketed")
    return DataLoader(
        dataset,
        batch_sampler=LengthBucketSampler(lengths, batch_size),
        collate_fn=collate_fn or collate,
        num_workers=max(0, data.num_workers),
        worker_init_fn=seed_worker if data.num_workers > 0 else None,
        pin_memory=pin_memory,
    )
