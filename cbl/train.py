"""One training run: ``fit(config, reporter, run_dir)``.

The same code trains a single ``cbl-search train`` run and every trial of a
sweep; only the reporter differs (console + TensorBoard, or ``tune.report``).
Per epoch, in named phases: train, refit the centers (an eval-mode pass with the
end-of-epoch weights over a fixed bonafide sample), score dev, compute dev EER and
the embedding diagnostics (:mod:`cbl.diagnostics`), checkpoint (last, and best by
dev EER), report.

``run_dir`` holds ``checkpoints/last.pt`` (and ``previous.pt``, the one before:
the fallback when last.pt is found damaged), ``checkpoints/best.pt``,
``metrics.jsonl`` and ``config.yaml``. When ``last.pt`` exists, ``fit`` resumes
from it and reaches the same result as an uninterrupted run: data order and
augmentation are functions of (seed, epoch, index), the learning rate a pure
function of the step, and the torch RNG state is in the checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from cbl.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from cbl.config import ExperimentConfig, config_to_dict, save_config
from cbl.errors import CblError, UsageError

logger = logging.getLogger(__name__)
PREVIOUS = "previous.pt"  # the checkpoint before last.pt, the fallback when last.pt is damaged

__all__ = [
    "FitResult",
    "Reporter",
    "RUNTIME_KEYS",
    "TrainingDiverged",
    "config_differences",
    "autocast_for",
    "fit",
    "forward_batch",
    "learning_rate_scale",
    "pick_device",
    "read_history",
    "set_threads",
]

# Keys that say where and how fast a run executes, not what it computes: a run may
# resume with other values (a dataset moved to another disk, another thread count).
RUNTIME_KEYS = frozenset({"data.root", "data.num_workers", "train.num_threads", "train.device", "train.eval_batch_size",
                          "train.feature_cache", "train.feature_cache_dir"})


class TrainingDiverged(CblError):
    """The loss became NaN or infinite."""


class Reporter(Protocol):
    """Receives one report per epoch. ``checkpoint_dir`` holds last.pt (and best.pt)."""

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path) -> None: ...


@dataclass
class FitResult:
    best_dev_eer: float
    best_epoch: int
    epochs_run: int
    run_dir: Path

    @property
    def best_checkpoint(self) -> Path:
        return self.run_dir / "checkpoints" / "best.pt"


def config_differences(saved: ExperimentConfig, current: ExperimentConfig, *, ignore=RUNTIME_KEYS) -> list[str]:
    """``key: saved -> current`` for every dotted key whose value differs (keys in ``ignore`` skipped)."""
    old, new = config_to_dict(saved), config_to_dict(current)
    return [
        f"{section}.{name}: {old[section][name]!r} -> {value!r}"
        for section, fields in new.items()
        for name, value in fields.items()
        if f"{section}.{name}" not in ignore and old[section][name] != value
    ]


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


def pick_device(config: ExperimentConfig) -> torch.device:
    if config.train.device == "cuda" and not torch.cuda.is_available():
        raise CblError("train.device is cuda, but no CUDA device is visible (use train.device=auto or cpu)")
    if config.train.device == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def set_threads(config: ExperimentConfig, cpus: float | None) -> int:
    """torch threads = train.num_threads, else the run's CPU allotment (a trial's ``resources.cpu``)."""
    if config.train.num_threads:
        threads = config.train.num_threads
    elif cpus:
        threads = max(1, int(cpus))
    else:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(threads)
    return threads


def resolve_workers(config: ExperimentConfig, device: torch.device, cpus: float | None) -> ExperimentConfig:
    """``data.num_workers: -1`` (auto) made concrete: on CUDA the run's CPUs minus one (1..8), on the CPU 0.

    Loading and RawBoost on one core run at ~150 utterances/s (``cbl-search bench``,
    row 3+rb), below what a GPU trains on; on the CPU the workers would only take
    cores from the model.
    """
    if config.data.num_workers >= 0:
        return config
    if device.type == "cuda":
        available = cpus or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
        workers = min(8, max(1, int(available) - 1))
    else:
        workers = 0
    return dataclasses.replace(config, data=dataclasses.replace(config.data, num_workers=workers))


def _uses_centers(config: ExperimentConfig) -> bool:
    return config.loss.type != "ce_only"


def autocast_for(config: ExperimentConfig, device: torch.device):
    """bf16 autocast on CUDA when ``train.bf16`` (the default), nothing on CPU."""
    if device.type == "cuda" and config.train.bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


_autocast = autocast_for


def forward_batch(model, batch: dict[str, Any], config: ExperimentConfig, device: torch.device, *,
                  evaluation: bool = False, non_blocking: bool = False):
    """The model's output for a loader batch: audio, or cached front-end states (``train.feature_cache``).

    At evaluation, audio longer than ``data.eval_max_len`` is fed in chunks
    (:meth:`cbl.model.SpoofDetector.forward_chunked`), so memory stays bounded.
    """
    if "states" in batch:
        mask = batch["frame_mask"]
        return model.forward_features(batch["states"].to(device, non_blocking=non_blocking),
                                      None if mask is None else mask.to(device))
    mask = batch["attention_mask"]
    audio = batch["audio"].to(device, non_blocking=non_blocking)
    mask = None if mask is None else mask.to(device)
    if evaluation:
        return model.forward_chunked(audio, mask, config.data.eval_max_len)
    return model(audio, mask)


def _embed(model, loader, config: ExperimentConfig, device: torch.device) -> dict[str, Any]:
    """Forward a loader in eval mode; return embeddings, logits, labels, ids, attacks (CPU tensors)."""
    model.eval()
    embeddings, logits, labels, ids, attacks = [], [], [], [], []
    with torch.no_grad():
        for batch in loader:
            with autocast_for(config, device):
                out = forward_batch(model, batch, config, device, evaluation=True)
            embeddings.append(out.embedding.float().cpu())
            logits.append(out.logits.float().cpu())
            labels.append(batch["label"])
            ids.extend(batch["utt_id"])
            attacks.extend(batch["attack"])
    return {
        "embedding": torch.cat(embeddings) if embeddings else torch.empty(0),
        "logits": torch.cat(logits) if logits else torch.empty(0),
        "label": torch.cat(labels) if labels else torch.empty(0, dtype=torch.long),
        "utt_id": ids,
        "attack": attacks,
    }


def score_embeddings(outputs: dict[str, Any], centers, config: ExperimentConfig, norm=None) -> np.ndarray:
    """Detection scores (higher = bonafide) for outputs of :func:`_embed`.

    ``norm`` (a :class:`cbl.metrics.ZNormStats`) is needed for ``loss.score=sum``;
    see :func:`score_norm`.
    """
    from cbl.metrics import score_from_output
    from cbl.model import DetectorOutput

    output = DetectorOutput(embedding=outputs["embedding"], logits=outputs["logits"])
    center_tensor = centers.centers if centers is not None else None
    return score_from_output(output, center_tensor, config.loss, norm).numpy()


def score_norm(outputs: dict[str, Any], centers, config: ExperimentConfig):
    """Z-normalisation statistics from a reference split (dev), or None when the score rule needs none."""
    if not (config.loss.type == "combined" and config.loss.score == "sum"):
        return None
    from cbl.metrics import ZNormStats, score_components
    from cbl.model import DetectorOutput

    output = DetectorOutput(embedding=outputs["embedding"], logits=outputs["logits"])
    components = score_components(output, centers.centers if centers is not None else None)
    return ZNormStats.from_components(components["cluster"], components["ce"])


def fit(
    config: ExperimentConfig,
    reporter: Reporter | None,
    run_dir: str | os.PathLike[str],
    *,
    cpus: float | None = None,
    progress: bool = False,
) -> FitResult:
    """Train one configuration to ``train.epochs``; resume from ``run_dir`` when it holds last.pt."""
    from cbl.centers import build_centers
    from cbl.data import class_weights, load_split, make_eval_loader, make_train_loader
    from cbl.losses import compute_loss
    from cbl.diagnostics import embedding_diagnostics
    from cbl.metrics import compute_eer
    from cbl.model import build_model, param_groups

    from cbl.feature_cache import check_cache_config

    check_cache_config(config)  # before anything is loaded or written
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    last = ckpt_dir / "last.pt"
    set_threads(config, cpus)
    device = pick_device(config)
    saved_config, config = config, resolve_workers(config, device, cpus)  # files keep what the user asked for

    # ---- data (first: a missing dataset fails before anything is written)
    train_records = load_split(config.data, "train")
    dev_records = load_split(config.data, "dev")
    resume_from, resumed_path = _resume_payload(ckpt_dir, config)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    save_config(saved_config, run_dir / "config.yaml")
    torch.manual_seed(config.train.seed)
    weights = class_weights(train_records).to(device)
    pin = device.type == "cuda"

    # ---- model, optimizer, centers
    model = build_model(config.model).to(device)
    cache = _FeatureSource(config, run_dir, model, device, train_records, dev_records) \
        if config.train.feature_cache else None
    dev_loader = cache.dev_loader(pin) if cache is not None else None
    if dev_loader is None:
        dev_loader = make_eval_loader(dev_records, config.data, batch_size=config.train.eval_batch_size, pin_memory=pin)
    groups = param_groups(model, config.optim)
    base_lrs = [g["lr"] for g in groups]
    optimizer = torch.optim.AdamW(groups)
    centers = build_centers(config.centers, config.loss.num_clusters, config.model.embedding_dim) if _uses_centers(config) else None

    start_epoch, step, best_eer, best_epoch, best_threshold = 0, 0, math.inf, -1, 0.0
    if resume_from is not None:
        payload = resume_from
        load_model_state(model, payload["model"], str(resumed_path))
        optimizer.load_state_dict(payload["optimizer"])
        if centers is not None and payload.get("centers"):
            centers.load_state_dict(payload["centers"])
        start_epoch, step = payload["epoch"] + 1, payload["step"]
        best_eer, best_epoch = payload["best_dev_eer"], payload["best_epoch"]
        best_threshold = payload["best_threshold"]
        set_rng_state(payload["rng"])
        _truncate_history(run_dir / "metrics.jsonl", payload["epoch"])
    else:
        _truncate_history(run_dir / "metrics.jsonl", -1)  # lines of an epoch that ended before its first checkpoint
    if resume_from is None and centers is not None:
        # initial centers: one pass over a capped, fixed sample of bonafide training audio
        centers.fit(_embed(model, _init_loader(train_records, config, cache), config, device)["embedding"])
    refit_loader = _init_loader(train_records, config, cache, config.centers.refit_max_utterances) \
        if centers is not None and config.centers.method == "kmeans" else None

    accum = config.optim.grad_accum
    for epoch in range(start_epoch, config.train.epochs):
        started = time.monotonic()
        # ---- train
        loader = make_train_loader(train_records, config.data, batch_size=config.train.batch_size,
                                   seed=config.train.seed, epoch=epoch, pin_memory=pin,
                                   **(cache.train_items(epoch) if cache is not None else {}))
        batches = len(loader) if not config.train.max_steps_per_epoch else min(len(loader), config.train.max_steps_per_epoch)
        steps_per_epoch = max(1, math.ceil(batches / accum))
        model.train()
        sums = {"loss": 0.0, "attraction": 0.0, "repulsion": 0.0, "ce": 0.0, "spread": 0.0}
        optimizer.zero_grad(set_to_none=True)
        iterator = loader
        if progress:
            from tqdm import tqdm

            iterator = tqdm(loader, total=batches, desc=f"epoch {epoch + 1}/{config.train.epochs}", leave=False)
        seen = 0
        for index, batch in enumerate(iterator):
            if index >= batches:
                break
            labels = batch["label"].to(device)
            with autocast_for(config, device):
                out = forward_batch(model, batch, config, device, non_blocking=pin)
            parts = compute_loss(out, labels, centers.centers.to(device) if centers is not None else None,
                                 config.loss, weights)
            if not torch.isfinite(parts.total):
                raise _diverged(f"loss became {parts.total.item()}", epoch, step, index, batches)
            # the last group of an epoch may hold fewer than `accum` batches: average over those it holds
            group_size = min(accum, batches - (index // accum) * accum)
            (parts.total / group_size).backward()
            if (index + 1) % accum == 0 or index + 1 == batches:
                scale = learning_rate_scale(step, steps_per_epoch, config)
                for group, base in zip(optimizer.param_groups, base_lrs):
                    group["lr"] = base * scale
                if config.optim.grad_clip:
                    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
                    if not torch.isfinite(torch.as_tensor(norm)):
                        raise _diverged(f"gradient norm became {float(norm)}", epoch, step, index, batches)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
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
        train_seconds = time.monotonic() - started

        # ---- refit the centers: an eval-mode pass with the end-of-epoch weights over the fixed bonafide sample
        refit = _refit_centers(model, refit_loader, centers, config, device, epoch)

        # ---- dev
        dev = _embed(model, dev_loader, config, device)
        norm = score_norm(dev, centers, config)
        scores = score_embeddings(dev, centers, config, norm)
        if not np.isfinite(scores).all():
            raise _diverged("dev scores became non-finite", epoch, step - 1, batches - 1, batches)
        labels_np = dev["label"].numpy()
        dev_eer, threshold = compute_eer(scores[labels_np == 1], scores[labels_np == 0])
        metrics: dict[str, Any] = {
            "epoch": epoch + 1,
            "dev_eer": float(dev_eer),
            "dev_threshold": float(threshold),
            **{f"train_{k}": v / max(1, seen) for k, v in sums.items()},
            **{("lr" if g.get("name") == "ssl" else "head_lr"): g["lr"] for g in optimizer.param_groups},
            "epoch_seconds": time.monotonic() - started,
            "train_seconds": train_seconds,
            **refit,
            **embedding_diagnostics(dev["embedding"], dev["label"], centers),
        }

        # ---- checkpoint
        improved = dev_eer < best_eer
        if improved:
            best_eer, best_epoch, best_threshold = float(dev_eer), epoch + 1, float(threshold)
        metrics.update(best_dev_eer=best_eer, best_epoch=best_epoch)
        payload = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "centers": centers.state_dict() if centers is not None else {},
            "epoch": epoch,
            "step": step,
            "dev_eer": float(dev_eer),
            "threshold": float(threshold),
            "best_dev_eer": best_eer,
            "best_epoch": best_epoch,
            "best_threshold": best_threshold,
            "score_norm": dataclasses.asdict(norm) if norm is not None else {},
            "rng": rng_state(),
        }
        # history first: a crash before last.pt is written reruns this epoch and drops the line
        _append_line(run_dir / "metrics.jsonl", json.dumps(metrics))
        if improved:
            save_checkpoint(ckpt_dir / "best.pt", {k: v for k, v in payload.items() if k != "optimizer"},
                            saved_config)
        if last.is_file():  # keep one good checkpoint behind, in case the new one is damaged later
            os.replace(last, ckpt_dir / PREVIOUS)
        save_checkpoint(last, payload, saved_config)
        if reporter is not None:
            reporter.report(metrics, ckpt_dir)

    return FitResult(best_dev_eer=best_eer, best_epoch=best_epoch, epochs_run=config.train.epochs, run_dir=run_dir)


def _refit_centers(model, loader, centers, config: ExperimentConfig, device: torch.device,
                   epoch: int) -> dict[str, Any]:
    """Refit k-means centers on eval-mode embeddings of the fixed bonafide sample; the refit's metrics.

    Dev is scored in eval mode with the end-of-epoch weights, so the centers are
    fitted on embeddings made the same way (not on the train-mode embeddings of
    the epoch's own batches: dropout, augmentation and weights changing under
    them). Runs every ``centers.refresh_every`` epochs from epoch
    ``centers.warmup_epochs + 1`` on; {} for online centers and ce_only.
    """
    if loader is None or centers is None:
        return {}
    if (epoch + 1) % config.centers.refresh_every or epoch < config.centers.warmup_epochs:
        return {"centers_refit": 0}
    started = time.monotonic()
    trim = config.loss.margin if config.centers.refit_trim else None
    centers.refresh(_embed(model, loader, config, device)["embedding"], min_similarity=trim)
    info = centers.last_refit
    return {"centers_refit": 1, "refit_seconds": time.monotonic() - started, "centers_reseeded": info.reseeded,
            "centers_trimmed": info.trimmed, "centers_min_cosine_to_previous": info.min_cosine_to_previous}


def _init_loader(train_records, config: ExperimentConfig, cache: "_FeatureSource | None", cap: int | None = None):
    """The center passes' loader: a capped, seeded sample of bonafide training utterances (eval mode, no shuffling).

    Full utterances; with ``data.train_crop: fixed`` the training crops themselves
    (what every epoch then trains on, and what the feature cache holds), with
    RawBoost copies copy 0 of them. ``cap`` (default ``centers.init_max_utterances``)
    takes the first ``cap`` of one seeded permutation, so the refit sample and the
    initial sample are nested, and the same every epoch.
    """
    from torch.utils.data import DataLoader, Subset

    from cbl.data import LengthBucketSampler, TrainDataset, collate, make_eval_loader

    bonafide = [i for i, r in enumerate(train_records) if r.label == 1]
    cap = config.centers.init_max_utterances if cap is None else cap
    sample = np.random.default_rng(config.centers.seed).permutation(len(bonafide))[:cap]
    chosen = [bonafide[i] for i in sorted(sample)]
    if config.data.train_crop == "random":
        return make_eval_loader([train_records[i] for i in chosen], config.data, batch_size=config.train.eval_batch_size)
    if cache is not None:
        items = cache.train_items(epoch=0)
        dataset, collate_fn = items["dataset"], items["collate_fn"]
    else:
        augment = bool(config.data.rawboost_algo and config.data.augment_copies)
        dataset, collate_fn = TrainDataset(train_records, config.data, config.train.seed, augment=augment), collate
    return DataLoader(Subset(dataset, chosen), batch_sampler=LengthBucketSampler([0] * len(chosen), config.train.eval_batch_size),
                      collate_fn=collate_fn)


class _FeatureSource:
    """The frozen-feature cache of one run: train (and, when possible, dev) items from cached states."""

    def __init__(self, config: ExperimentConfig, run_dir: Path, model, device: torch.device, train_records,
                 dev_records) -> None:
        from cbl.feature_cache import cache_root, frontend_fingerprint, open_or_build

        root = cache_root(config, run_dir)
        self.config, self.root, self.model, self.device = config, root, model, device
        self.fingerprint = fingerprint = frontend_fingerprint(model.frontend)
        self.train_records, self.dev_records = train_records, dev_records
        self.train_copies: dict[int, Any] = {}  # augmented copy -> its entry, built when an epoch first needs it
        self.train = self._train_entry(0)
        self.dev = None
        longest = max(_dev_lengths(dev_records, config), default=0)
        if config.data.eval_mode == "full" and longest > config.data.eval_max_len:
            logger.warning("feature cache: dev has utterances longer than data.eval_max_len (%d samples); "
                           "dev is scored from audio", config.data.eval_max_len)
        else:
            self.dev = open_or_build(root, "dev", dev_records, config, model, device, fingerprint)
        sizes = ", ".join(f"{c.path.name} {c.nbytes / 1e6:.1f} MB" for c in (self.train, self.dev) if c is not None)
        logger.info("feature cache at %s: %s", root, sizes)

    def _train_entry(self, copy: int):
        from cbl.feature_cache import open_or_build

        if copy not in self.train_copies:
            self.train_copies[copy] = open_or_build(self.root, "train", self.train_records, self.config, self.model,
                                                    self.device, self.fingerprint, copy)
        return self.train_copies[copy]

    def train_items(self, epoch: int) -> dict[str, Any]:
        """The ``dataset``/``collate_fn`` of an epoch: the cached copy of the training items it reads."""
        from cbl.feature_cache import FeatureDataset, collate_features, train_copy

        entry = self._train_entry(train_copy(self.config, epoch))
        return {"dataset": FeatureDataset(self.train_records, entry), "collate_fn": collate_features}

    def dev_loader(self, pin: bool):
        from cbl.data import make_eval_loader
        from cbl.feature_cache import FeatureDataset, collate_features

        if self.dev is None:
            return None
        dataset = FeatureDataset(self.dev_records, self.dev)
        return make_eval_loader(self.dev_records, self.config.data, batch_size=self.config.train.eval_batch_size,
                                pin_memory=pin, dataset=dataset, lengths=dataset.lengths(), collate_fn=collate_features)


def _dev_lengths(records, config: ExperimentConfig) -> list[int]:
    from cbl.data import EvalDataset

    return EvalDataset(records, config.data).lengths()


def _diverged(what: str, epoch: int, step: int, index: int, batches: int) -> TrainingDiverged:
    """The error for a non-finite loss, gradient or score (1-based epoch and optimizer step)."""
    return TrainingDiverged(
        f"training diverged: {what} at epoch {epoch + 1}, step {step + 1} (batch {index + 1} of {batches}); "
        "lower optim.lr / optim.head_lr, or check the input audio"
    )


def _resume_payload(ckpt_dir: Path, config: ExperimentConfig) -> tuple[dict[str, Any] | None, Path | None]:
    """The payload to resume from: ``last.pt``, or ``previous.pt`` when last.pt is unreadable.

    Returns (None, None) for a fresh run. A checkpoint of another configuration is
    refused; when every checkpoint present is unreadable, the error names them all.
    """
    failures: list[str] = []
    for path in (ckpt_dir / "last.pt", ckpt_dir / PREVIOUS):
        if not path.is_file():
            continue
        try:
            payload, saved = load_checkpoint(path)
        except CheckpointError as exc:
            logger.warning("%s; trying the previous checkpoint", exc)
            failures.append(str(exc))
            continue
        differences = config_differences(saved, config)
        if differences:
            shown = "; ".join(differences[:5]) + (f" (+{len(differences) - 5} more)" if len(differences) > 5 else "")
            raise UsageError(
                f"{ckpt_dir.parent}: holds a run with another configuration ({shown}); "
                "resume it with its own config.yaml, or train into a new folder"
            )
        if failures:
            logger.warning("resuming %s from %s (epoch %d)", ckpt_dir.parent, path.name, payload["epoch"] + 1)
        return payload, path
    if failures:
        raise CheckpointError(f"no usable checkpoint to resume from: {' / '.join(failures)}")
    return None, None


def _truncate_history(path: Path, last_epoch_index: int) -> None:
    """Drop history lines after the checkpointed epoch (an epoch that ran but was not checkpointed)."""
    if not path.is_file():
        return
    keep = [json.dumps(m) for m in read_history(path.parent) if m["epoch"] <= last_epoch_index + 1]
    from cbl.yamlio import atomic_write_text

    atomic_write_text(path, "".join(f"{line}\n" for line in keep))


def _append_line(path: Path, line: str) -> None:
    """Append one line; a failed write (disk full) is an OSError naming the file."""
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or os.strerror(exc.errno or 0), str(path)) from None


def read_history(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The per-epoch metrics of a run (empty when none was written yet)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    history = []
    for number, line in enumerate(lines, 1):
        try:
            history.append(json.loads(line))
        except ValueError:
            if number == len(lines):
                break  # a last line cut short by a kill mid-write: that epoch was not checkpointed either
            raise CblError(f"{path}:{number}: not a JSON line (the file is damaged)") from None
    return history


