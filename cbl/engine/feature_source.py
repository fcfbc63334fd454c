"""One run's view of the frozen-feature cache: its train items (per augmented copy) and dev items from cached states.

The cache itself (keys, entries, sharing between trials) is :mod:`cbl.engine.feature_cache` and
:mod:`cbl.engine.feature_build`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from cbl.config import ExperimentConfig
from cbl.data import EvalDataset, Record, make_eval_loader
from cbl.engine.feature_build import open_or_build
from cbl.engine.feature_cache import (
    CachedSplit,
    FeatureDataset,
    cache_root,
    collate_features,
    frontend_fingerprint,
    train_copy,
)
from cbl.model import SpoofDetector

__all__ = ["FeatureSource"]

logger = logging.getLogger(__name__)


class FeatureSource:
    """The frozen-feature cache of one run: train (and, when possible, dev) items from cached states."""

    def __init__(
        self,
        config: ExperimentConfig,
        run_dir: Path,
        model: SpoofDetector,
        device: torch.device,
        train_records: Sequence[Record],
        dev_records: Sequence[Record],
    ) -> None:
        root = cache_root(config, run_dir)
        self.config, self.root, self.model, self.device = config, root, model, device
        self.fingerprint = fingerprint = frontend_fingerprint(model.frontend)
        self.train_records, self.dev_records = train_records, dev_records
        self.train_copies: dict[int, CachedSplit] = {}  # augmented copy -> its entry, built when an epoch needs it
        self.train = self._train_entry(0)
        self.dev: CachedSplit | None = None
        longest = max(EvalDataset(dev_records, config.data).lengths(), default=0)
        if config.data.eval_mode == "full" and longest > config.data.eval_max_len:
            logger.warning(
                "feature cache: dev has utterances longer than data.eval_max_len (%d samples); "
                "dev is scored from audio",
                config.data.eval_max_len,
            )
        else:
            self.dev = open_or_build(root, "dev", dev_records, config, model, device, fingerprint)
        sizes = ", ".join(f"{c.path.name} {c.nbytes / 1e6:.1f} MB" for c in (self.train, self.dev) if c is not None)
        logger.info("feature cache at %s: %s", root, sizes)

    def _train_entry(self, copy: int) -> CachedSplit:
        if copy not in self.train_copies:
            self.train_copies[copy] = open_or_build(
                self.root, "train", self.train_records, self.config, self.model, self.device, self.fingerprint, copy
            )
        return self.train_copies[copy]

    def train_items(self, epoch: int) -> dict[str, Any]:
        """The ``dataset``/``collate_fn`` of an epoch: the cached copy of the training items it reads."""
        entry = self._train_entry(train_copy(self.config, epoch))
        return {"dataset": FeatureDataset(self.train_records, entry), "collate_fn": collate_features}

    def dev_loader(self, pin: bool) -> DataLoader | None:
        """Dev batches from cached states (the audio loader's batches), or None when dev is scored from audio."""
        if self.dev is None:
            return None
        dataset = FeatureDataset(self.dev_records, self.dev)
        return make_eval_loader(
            self.dev_records,
            self.config.data,
            batch_size=self.config.train.eval_batch_size,
            pin_memory=pin,
            dataset=dataset,
            lengths=dataset.lengths(),
            collate_fn=collate_features,
        )
