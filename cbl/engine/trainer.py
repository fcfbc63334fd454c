"""One training run: ``fit(config, reporter, run_dir)``.

The same code trains a single ``cbl-search train`` run and every trial of a
sweep; only the reporter differs (console + TensorBoard, or ``tune.report``).
:func:`fit` reads top to bottom: set up (data, model, optimizer, centers), resume
or fit the initial centers, then per epoch one function per phase: train, refit
the centers (an eval-mode pass with the end-of-epoch weights over a fixed bonafide
sample, :mod:`cbl.engine.center_passes`), score dev, the embedding diagnostics
(:mod:`cbl.diagnostics`), write the epoch (history line, best.pt, last.pt), report.

The run folder's layout is :mod:`cbl.engine.run_dir`'s. When ``last.pt`` exists,
``fit`` resumes from it and reaches the same result as an uninterrupted run: data
order and augmentation are functions of (seed, epoch, index), the learning rate a
pure function of the step, and the torch RNG state is in the checkpoint.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm import tqdm

from cbl.centers import build_centers
from cbl.config import ExperimentConfig, save_config
from cbl.data import (
    Record,
    load_split,
    make_eval_loader,
    make_train_loader,
    training_class_weights,
)
from cbl.diagnostics import embedding_diagnostics
from cbl.engine.center_passes import center_sample_loader, refit_centers
from cbl.engine.dev_scores import DEV_SCORES, write_dev_scores
from cbl.engine.feature_cache import check_cache_config
from cbl.engine.feature_source import FeatureSource
from cbl.engine.frozen import FROZEN_DIR, split_frozen
from cbl.engine.inference import embed, forward_batch, score_embeddings, score_norm
from cbl.engine.run_dir import BEST, CHECKPOINTS, resume_payload, truncate_history, write_epoch
from cbl.engine.runtime import apply_determinism, autocast_for, pick_device, resolve_workers, set_threads
from cbl.engine.state import TrainState
from cbl.errors import CblError
from cbl.losses import compute_loss
from cbl.metrics import ZNormStats, compute_eer
from cbl.model import build_model, param_groups
from cbl.uncertainty import eer_interval_fields

__all__ = ["FitResult", "Reporter", "TrainingDiverged", "fit", "learning_rate_scale"]


class TrainingDiverged(CblError):
    """The loss became NaN or infinite."""


class Reporter(Protocol):
    """Receives one report per epoch. ``checkpoint_dir`` holds last.pt (and best.pt)."""

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path) -> None: ...


@dataclass
class FitResult:
    best_dev_eer: float
    best_epoch: int
    epochs_run: int  # epochs the run folder holds (resumed ones included)
    run_dir: Path

    @property
    def best_checkpoint(self) -> Path:
        return self.run_dir / CHECKPOINTS / BEST


def learning_rate_scale(step: int, steps_per_epoch: int, config: ExperimentConfig) -> float:
    """Multiplier on the base learning rates at optimizer step ``step`` (linear warm-up, then cosine or constant).

    The cosine spans ``train.epochs``: a run resumes to the same result only with
    the same ``train.epochs`` (``fit`` refuses a checkpoint of another config).
    """
    total = max(1, steps_per_epoch * config.train.epochs)
    warmup = steps_per_epoch * config.optim.warmup_epochs
    if step < warmup:
        return (step + 1) / warmup
    if config.optim.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class _Run:
    """What every phase of one run reads: the configs, the device, the data and the training state."""

    config: ExperimentConfig  # as run: data.num_workers made concrete
    saved_config: ExperimentConfig  # as asked: what config.yaml and the checkpoints keep
    run_dir: Path
    device: torch.device
    train_records: Sequence[Record]
    class_weights: Tensor  # (2,) [spoof, bonafide], on the device
    cache: FeatureSource | None
    dev_loader: DataLoader
    state: TrainState
    base_lrs: list[float] = field(default_factory=list)
    dev_speakers: dict[str, str] = field(default_factory=dict)  # utt_id -> speaker, for the dev EER's interval
    refit_loader: DataLoader | None = None  # the k-means refit's fixed bonafide sample (None: no refits)

    @property
    def pin(self) -> bool:
        return self.device.type == "cuda"


@dataclass
class _Trained:
    """What an epoch's training pass leaves for the rest of the epoch."""

    # train_loss, train_attraction, train_repulsion, train_ce, train_spread: means over utterances
    metrics: dict[str, float]
    batches: int
    seconds: float


@dataclass
class _Scored:
    """Dev scored at the end of an epoch."""

    metrics: dict[str, Any]  # epoch, dev_eer, dev_threshold, the train means, lr and head_lr
    threshold: float  # the dev EER threshold (score > threshold: bonafide)
    norm: ZNormStats | None  # what loss.score=sum normalises by; kept in the checkpoint
    dev: dict[str, Any]  # the dev split embedded (cbl.engine.inference.embed)
    scores: np.ndarray = field(default_factory=lambda: np.empty(0))  # (N,) dev scores, in dev["utt_id"] order


def fit(
    config: ExperimentConfig,
    reporter: Reporter | None,
    run_dir: str | os.PathLike[str],
    *,
    cpus: float | None = None,
    progress: bool = False,
) -> FitResult:
    """Train one configuration to ``train.epochs``; resume from ``run_dir`` when it holds last.pt."""
    check_cache_config(config)  # before anything is loaded or written
    run_dir = Path(run_dir)
    set_threads(config, cpus)
    apply_determinism(config)  # before anything touches CUDA
    device = pick_device(config)
    saved_config, config = config, resolve_workers(config, device, cpus)  # files keep what the user asked for
    # data first: a missing dataset fails before anything is written
    train_records, dev_records = load_split(config.data, "train"), load_split(config.data, "dev")
    payload, resumed_from = resume_payload(run_dir, config)
    (run_dir / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
    save_config(saved_config, run_dir / "config.yaml")
    torch.manual_seed(config.train.seed)
    run = _set_up(config, saved_config, run_dir, device, train_records, dev_records)
    run.dev_speakers = {r.utt_id: r.speaker for r in dev_records}
    _resume_or_start(run, payload, resumed_from)

    for epoch in range(run.state.epoch + 1, config.train.epochs):
        started = time.monotonic()
        trained = _train_epoch(run, epoch, progress)
        refit = refit_centers(run.state.model, run.refit_loader, run.state.centers, config, run.device, epoch)
        scored = _score_dev(run, epoch, trained)
        metrics = {
            **scored.metrics,
            "epoch_seconds": time.monotonic() - started,
            "train_seconds": trained.seconds,
            **refit,
            **embedding_diagnostics(scored.dev["embedding"], scored.dev["label"], run.state.centers),
        }
        _write_epoch(run, epoch, metrics, scored)
        if reporter is not None:
            reporter.report(metrics, run_dir / CHECKPOINTS)

    state = run.state
    return FitResult(
        best_dev_eer=state.best_dev_eer, best_epoch=state.best_epoch, epochs_run=state.epoch + 1, run_dir=run_dir
    )


def _set_up(
    config: ExperimentConfig,
    saved_config: ExperimentConfig,
    run_dir: Path,
    device: torch.device,
    train_records: Sequence[Record],
    dev_records: Sequence[Record],
) -> _Run:
    """Class weights, the model, the feature cache, the dev loader, the optimizer and the centers."""
    weights = training_class_weights(train_records, config.data).to(device)
    model = build_model(config.model).to(device)
    cache = (
        FeatureSource(config, run_dir, model, device, train_records, dev_records)
        if config.train.feature_cache
        else None
    )
    pin = device.type == "cuda"
    dev_loader = cache.dev_loader(pin) if cache is not None else None
    if dev_loader is None:
        dev_loader = make_eval_loader(dev_records, config.data, batch_size=config.train.eval_batch_size, pin_memory=pin)
    groups = param_groups(model, config.optim)
    base_lrs = [g["lr"] for g in groups]
    optimizer = torch.optim.AdamW(groups)
    centers = (
        build_centers(config.centers, config.loss.num_clusters, config.model.embedding_dim)
        if config.loss.type != "ce_only"
        else None
    )
    state = TrainState(model, optimizer, centers)
    refit_loader = (
        center_sample_loader(train_records, config, cache, config.centers.refit_max_utterances)
        if centers is not None and config.centers.method == "kmeans"
        else None
    )
    return _Run(
        config,
        saved_config,
        run_dir,
        device,
        train_records,
        weights,
        cache,
        dev_loader,
        state,
        base_lrs,
        refit_loader=refit_loader,
    )


def _resume_or_start(run: _Run, payload: dict[str, Any] | None, resumed_from: Path | None) -> None:
    """Restore the checkpointed state, or fit the initial centers; the history keeps checkpointed epochs only."""
    if payload is not None:
        run.state.load_state_dict(payload, str(resumed_from))
        truncate_history(run.run_dir, payload["epoch"])
        return
    truncate_history(run.run_dir, -1)  # lines of an epoch that ended before its first checkpoint
    if run.state.centers is not None:
        # initial centers: one pass over a capped, fixed sample of bonafide training audio
        loader = center_sample_loader(run.train_records, run.config, run.cache)
        run.state.centers.fit(embed(run.state.model, loader, run.config, run.device)["embedding"])


def _train_epoch(run: _Run, epoch: int, progress: bool) -> _Trained:
    """One pass over the training loader: forward, loss, backward, an optimizer step every ``optim.grad_accum``."""
    config, device, state = run.config, run.device, run.state
    model, optimizer, centers = state.model, state.optimizer, state.centers
    started = time.monotonic()
    loader = make_train_loader(
        run.train_records,
        config.data,
        batch_size=config.train.batch_size,
        seed=config.train.seed,
        epoch=epoch,
        pin_memory=run.pin,
        **(run.cache.train_items(epoch) if run.cache is not None else {}),
    )
    batches = (
        len(loader) if not config.train.max_steps_per_epoch else min(len(loader), config.train.max_steps_per_epoch)
    )
    accum = config.optim.grad_accum
    steps_per_epoch = max(1, math.ceil(batches / accum))
    model.train()
    sums = {"loss": 0.0, "attraction": 0.0, "repulsion": 0.0, "ce": 0.0, "spread": 0.0}
    optimizer.zero_grad(set_to_none=True)
    iterator = (
        tqdm(loader, total=batches, desc=f"epoch {epoch + 1}/{config.train.epochs}", leave=False)
        if progress
        else loader
    )
    seen = 0
    for index, batch in enumerate(iterator):
        if index >= batches:
            break
        labels = batch["label"].to(device)
        with autocast_for(config, device):
            out = forward_batch(model, batch, config, device, non_blocking=run.pin)
        center_tensor = centers.centers if centers is not None else None
        parts = compute_loss(
            out, labels, center_tensor.to(device) if center_tensor is not None else None, config.loss, run.class_weights
        )
        if not torch.isfinite(parts.total):
            raise _diverged(f"loss became {parts.total.item()}", epoch, state.step, index, batches)
        # the last group of an epoch may hold fewer than `accum` batches: average over those it holds
        group_size = min(accum, batches - (index // accum) * accum)
        (parts.total / group_size).backward()
        if (index + 1) % accum == 0 or index + 1 == batches:
            _optimizer_step(run, epoch, index, batches, steps_per_epoch)
        n = labels.numel()
        seen += n
        sums["loss"] += parts.total.item() * n
        sums["attraction"] += float(parts.attraction.detach()) * n
        sums["repulsion"] += float(parts.repulsion.detach()) * n
        sums["ce"] += float(parts.ce.detach()) * n
        sums["spread"] += float(parts.spread.detach()) * n
        if centers is not None and config.centers.method == "online":
            bona = out.embedding.detach()[labels == 1].float()
            if bona.numel():
                centers.update_step(bona.cpu())
    metrics = {f"train_{k}": v / max(1, seen) for k, v in sums.items()}
    return _Trained(metrics, batches, time.monotonic() - started)


def _optimizer_step(run: _Run, epoch: int, index: int, batches: int, steps_per_epoch: int) -> None:
    """Learning rates for this step, gradient clipping (a non-finite norm is divergence), the step itself."""
    config, state = run.config, run.state
    scale = learning_rate_scale(state.step, steps_per_epoch, config)
    for group, base in zip(state.optimizer.param_groups, run.base_lrs, strict=True):
        group["lr"] = base * scale
    if config.optim.grad_clip:
        norm = torch.nn.utils.clip_grad_norm_(state.model.parameters(), config.optim.grad_clip)
        if not torch.isfinite(torch.as_tensor(norm)):
            raise _diverged(f"gradient norm became {float(norm)}", epoch, state.step, index, batches)
    state.optimizer.step()
    state.optimizer.zero_grad(set_to_none=True)
    state.step += 1


def _score_dev(run: _Run, epoch: int, trained: _Trained) -> _Scored:
    """Dev embedded and scored with the end-of-epoch model; its EER and threshold."""
    config, state = run.config, run.state
    dev = embed(state.model, run.dev_loader, config, run.device)
    norm = score_norm(dev, state.centers, config)
    scores = score_embeddings(dev, state.centers, config, norm)
    if not np.isfinite(scores).all():
        raise _diverged("dev scores became non-finite", epoch, state.step - 1, trained.batches - 1, trained.batches)
    labels = dev["label"].numpy()
    dev_eer, threshold = compute_eer(scores[labels == 1], scores[labels == 0])
    metrics: dict[str, Any] = {
        "epoch": epoch + 1,
        "dev_eer": float(dev_eer),
        "dev_threshold": float(threshold),
        **trained.metrics,
        **{("lr" if g.get("name") == "ssl" else "head_lr"): g["lr"] for g in state.optimizer.param_groups},
    }
    if config.train.dev_ci_resamples:  # seeded by (run seed, epoch): a resumed run writes the same interval
        speakers = _speakers(run, dev["utt_id"])
        resamples, seed = config.train.dev_ci_resamples, (config.train.seed, epoch)
        metrics.update(eer_interval_fields("dev_eer", scores, labels, speakers, n_resamples=resamples, seed=seed))
    return _Scored(metrics, float(threshold), norm, dev, scores)


def _speakers(run: _Run, utt_ids: Sequence[str]) -> list[str]:
    """The speaker of each dev utterance ("-" where the protocol names none)."""
    return [run.dev_speakers.get(utt, "-") for utt in utt_ids]


def _write_epoch(run: _Run, epoch: int, metrics: dict[str, Any], scored: _Scored) -> None:
    """The epoch recorded in the state (best so far?), then written: history line, best.pt, last.pt."""
    state = run.state
    improved = state.record(epoch, metrics["dev_eer"], scored.threshold)
    if improved:  # before best.pt: what comparing trials on the same dev utterances reads (cbl.sweep.compare)
        ids = scored.dev["utt_id"]
        labels = scored.dev["label"].numpy()
        write_dev_scores(
            run.run_dir / CHECKPOINTS / DEV_SCORES, epoch + 1, ids, labels, scored.scores, _speakers(run, ids)
        )
    metrics.update(best_dev_eer=state.best_dev_eer, best_epoch=state.best_epoch)
    payload = state.state_dict(dev_eer=metrics["dev_eer"], threshold=scored.threshold, norm=scored.norm)
    store = Path(run.config.train.frozen_dir or run.run_dir / FROZEN_DIR).expanduser()
    payload = split_frozen(payload, state.model, store, run.run_dir / CHECKPOINTS)  # frozen weights stored once
    write_epoch(run.run_dir, metrics, payload, run.saved_config, improved=improved)


def _diverged(what: str, epoch: int, step: int, index: int, batches: int) -> TrainingDiverged:
    """The error for a non-finite loss, gradient or score (1-based epoch and optimizer step)."""
    return TrainingDiverged(
        f"training diverged: {what} at epoch {epoch + 1}, step {step + 1} (batch {index + 1} of {batches}); "
        "lower optim.lr / optim.head_lr, or check the input audio"
    )
