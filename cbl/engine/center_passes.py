"""The centers' own passes over training audio: the initial fit, and the k-means refit after an epoch.

Both embed a fixed, seeded sample of bonafide training utterances in eval mode
(:func:`center_sample_loader`): the initial pass takes the first
``centers.init_max_utterances`` of one seeded permutation, every refit the first
``centers.refit_max_utterances`` of the same permutation, so the two samples are
nested and the refit sample is the same every epoch.

Why a pass of its own for the refit: dev is scored in eval mode with the
end-of-epoch weights, so the centers are fitted on embeddings made the same way,
not on the train-mode embeddings of the epoch's own batches (dropout,
augmentation, and weights changing under them): on the first demo corpus,
refitting on eval-mode embeddings of the same bonafide audio moved the centers to
a min cosine of 0.58 from the train-mode fit and changed that epoch's dev EER from
0.43 to 0.52. Its cost is row 4r of ``cbl-search bench``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from cbl.centers import BonafideCenters, KMeansCenters
from cbl.config import ExperimentConfig
from cbl.data import LengthBucketSampler, Record, TrainDataset, collate, make_eval_loader
from cbl.engine.feature_source import FeatureSource
from cbl.engine.inference import embed
from cbl.model import SpoofDetector

__all__ = ["center_sample_loader", "refit_centers"]


def center_sample_loader(
    train_records: Sequence[Record], config: ExperimentConfig, cache: FeatureSource | None, cap: int | None = None
) -> DataLoader:
    """The center passes' loader: a capped, seeded sample of bonafide training utterances (eval mode, no shuffling).

    Full utterances; with ``data.train_crop: fixed`` the training crops themselves
    (what every epoch then trains on, and what the feature cache holds), with
    RawBoost copies copy 0 of them. ``cap`` (default ``centers.init_max_utterances``)
    takes the first ``cap`` of one seeded permutation, so the refit sample and the
    initial sample are nested, and the same every epoch.
    """
    bonafide = [i for i, r in enumerate(train_records) if r.label == 1]
    cap = config.centers.init_max_utterances if cap is None else cap
    sample = np.random.default_rng(config.centers.seed).permutation(len(bonafide))[:cap]
    chosen = [bonafide[i] for i in sorted(sample)]
    if config.data.train_crop == "random":
        return make_eval_loader(
            [train_records[i] for i in chosen], config.data, batch_size=config.train.eval_batch_size
        )
    if cache is not None:
        items = cache.train_items(epoch=0)
        dataset, collate_fn = items["dataset"], items["collate_fn"]
    else:
        augment = bool(config.data.rawboost_algo and config.data.augment_copies)
        dataset, collate_fn = TrainDataset(train_records, config.data, config.train.seed, augment=augment), collate
    return DataLoader(
        Subset(dataset, chosen),
        batch_sampler=LengthBucketSampler([0] * len(chosen), config.train.eval_batch_size),
        collate_fn=collate_fn,
    )


def refit_centers(
    model: SpoofDetector,
    loader: DataLoader | None,
    centers: BonafideCenters | None,
    config: ExperimentConfig,
    device: torch.device,
    epoch: int,
) -> dict[str, Any]:
    """Refit k-means centers on eval-mode embeddings of the fixed bonafide sample; the refit's metrics.

    Runs every ``centers.refresh_every`` epochs from epoch ``centers.warmup_epochs + 1``
    on (``epoch`` is 0-based), leaving out the bonafide within ``loss.margin`` of no
    center when ``centers.refit_trim`` is on. Metrics: ``centers_refit`` (1 or 0), and
    after a refit ``refit_seconds``, ``centers_reseeded``, ``centers_trimmed`` and
    ``centers_min_cosine_to_previous``; {} for online centers and ce_only (no loader).
    """
    if loader is None or not isinstance(centers, KMeansCenters):
        return {}
    if (epoch + 1) % config.centers.refresh_every or epoch < config.centers.warmup_epochs:
        return {"centers_refit": 0}
    started = time.monotonic()
    trim = config.loss.margin if config.centers.refit_trim else None
    centers.refresh(embed(model, loader, config, device)["embedding"], min_similarity=trim)
    info = centers.last_refit
    return {
        "centers_refit": 1,
        "refit_seconds": time.monotonic() - started,
        "centers_reseeded": info.reseeded,
        "centers_trimmed": info.trimmed,
        "centers_min_cosine_to_previous": info.min_cosine_to_previous,
    }
