"""What the report needs from a trained model: eval scores, dev embeddings, centers, seen attacks.

Scoring goes through cbl's own path (:func:`cbl.engine.load_model`,
:func:`cbl.engine.evaluate_records`, :func:`cbl.engine.embed`), so the report's
EERs are the ones ``cbl-search evaluate`` gives. Both passes are cached in the
report folder (``cache/``), keyed by the checkpoint file, and the score file of
``cbl-search final-eval`` is reused when it belongs to the same checkpoint, so a
second report costs no model pass at all.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cbl.config import load_config
from cbl.data import load_split, make_eval_loader
from cbl.engine.checkpoint import checkpoint_signature
from cbl.engine.evaluate import evaluate_records, load_model
from cbl.engine.inference import embed
from cbl.errors import CblError
from cbl.metrics import compute_eer, read_score_file
from cbl.sweep.final_eval import FINAL_DIR, log_eval_access, split_source
from cbl.sweep.store import TrialInfo
from cbl.yamlio import atomic_write_bytes

__all__ = ["ModelView", "analyse_trial", "eer_or_nan", "loss_type", "write_projector"]


@dataclass
class ModelView:
    """One analysed trial. Dev arrays are (N, ...) over a sample of at most ``max_points`` dev utterances."""

    role: str  # "best trial", "best ce_only trial", ...
    trial: TrialInfo
    loss_type: str
    eval_ids: list[str]
    eval_scores: np.ndarray  # (M,)
    eval_labels: np.ndarray  # (M,) 1 bonafide, 0 spoof
    eval_attacks: list[str]
    score_source: str  # the score file used
    dev_embeddings: np.ndarray  # (N, D), unit norm
    dev_labels: np.ndarray  # (N,)
    dev_attacks: list[str]
    dev_total: int  # dev utterances in the split (N may be a sample of them)
    centers: np.ndarray | None  # (K, D), unit norm; None for ce_only
    seen_attacks: set[str] = field(default_factory=set)  # spoof attacks of the train split

    @property
    def nearest(self) -> np.ndarray | None:
        """(N,) index of each dev embedding's nearest center (cosine), or None without centers."""
        if self.centers is None:
            return None
        return np.argmax(self.dev_embeddings @ self.centers.T, axis=1)

    @property
    def label(self) -> str:
        return f"{self.role}: {self.trial.trial_id} ({self.loss_type})"


def loss_type(trial: TrialInfo) -> str:
    """The trial's loss type: sampled, else from its resolved config.yaml ("?" when unreadable)."""
    if "loss.type" in trial.params:
        return str(trial.params["loss.type"])
    try:
        return load_config(trial.path / "config.yaml").loss.type
    except (OSError, CblError):
        return "?"


def _reuse_scores(path: Path, checkpoint: Path, ids: list[str]) -> np.ndarray | None:
    """Scores from an existing score file written after ``checkpoint`` for exactly ``ids``, else None."""
    if not path.is_file() or path.stat().st_mtime_ns < checkpoint.stat().st_mtime_ns:
        return None
    try:
        found = read_score_file(path)
    except CblError:
        return None
    if sorted(found.utt_ids) != sorted(ids):
        return None
    by_id = dict(zip(found.utt_ids, found.scores, strict=True))
    return np.array([by_id[u] for u in ids], dtype=np.float64)


def _final_eval_scores(experiment_dir: Path, trial: TrialInfo) -> Path | None:
    """The final-eval score file of this trial's best checkpoint, if ``final-eval`` wrote one."""
    try:
        summary = json.loads((experiment_dir / "final_eval" / "summary-eval.json").read_text())
    except (OSError, ValueError):
        return None
    files = summary.get("score_files") or []
    if summary.get("trial_id") != trial.trial_id or not files:
        return None
    path = Path(files[0])  # the first is the best checkpoint itself; the rest are retrained seeds
    return path if path.is_file() else experiment_dir / "final_eval" / path.name  # written from another cwd


def _dev_sample(records: Sequence[Any], max_points: int) -> list[Any]:
    if len(records) <= max_points:
        return list(records)
    keep = np.sort(np.random.default_rng(0).permutation(len(records))[:max_points])
    return [records[i] for i in keep]


def analyse_trial(
    trial: TrialInfo,
    role: str,
    experiment_dir: Path,
    cache: Path,
    *,
    max_points: int = 2000,
    echo: Callable[[str], None] = print,
) -> ModelView:
    """Eval scores and dev embeddings of ``trial``'s best checkpoint (cached under ``cache``)."""
    checkpoint = trial.best_checkpoint
    config = load_config(trial.path / "config.yaml")
    loaded = None

    def model():
        nonlocal loaded
        if loaded is None:
            loaded = load_model(checkpoint)
        return loaded

    # ---- eval scores: final-eval's file, our cache, or a scoring pass
    records = load_split(config.data, "eval")
    ids = [r.utt_id for r in records]
    score_file: Path = cache / f"scores-eval-{trial.trial_id}.txt"
    scores = None
    for candidate in (_final_eval_scores(experiment_dir, trial), score_file):
        scores = _reuse_scores(candidate, checkpoint, ids) if candidate is not None else None
        if candidate is not None and scores is not None:
            score_file = candidate
            break
    if scores is None:
        echo(f"scoring the eval split ({len(records)} utterances) with trial {trial.trial_id}")
        log_eval_access(experiment_dir / FINAL_DIR, checkpoint, config.data.corpus, split_source(config.data, "eval"))
        scores = evaluate_records(model(), records, score_file, style="2019").scores

    # ---- dev embeddings and centers
    dev_records = load_split(config.data, "dev")
    sample = _dev_sample(dev_records, max_points)
    embedded = cache / f"dev-embeddings-{trial.trial_id}.npz"
    signature = f"{checkpoint_signature(checkpoint)} n={len(sample)}"
    arrays = _read_npz(embedded, signature)
    if arrays is None:
        echo(f"embedding {len(sample)} dev utterances with trial {trial.trial_id}")
        lm = model()
        loader = make_eval_loader(sample, lm.config.data, batch_size=lm.config.train.eval_batch_size)
        out = embed(lm.model, loader, lm.config, lm.device)
        by_id = {u: i for i, u in enumerate(out["utt_id"])}
        order = [by_id[r.utt_id] for r in sample]  # the loader may batch by length: back to sample order
        centers = lm.centers.centers.detach().float().cpu().numpy() if lm.centers is not None else np.zeros((0, 0))
        arrays = {
            "embedding": out["embedding"].numpy()[order],
            "label": out["label"].numpy()[order],
            "attack": np.array([out["attack"][i] for i in order]),
            "centers": centers,
        }
        _write_npz(embedded, signature, arrays)
    centers = arrays["centers"] if arrays["centers"].size else None
    if centers is not None:
        centers = centers / np.linalg.norm(centers, axis=1, keepdims=True)
    seen = {r.attack for r in load_split(config.data, "train") if r.label == 0}
    return ModelView(
        role=role,
        trial=trial,
        loss_type=config.loss.type,
        eval_ids=ids,
        eval_scores=scores,
        eval_labels=np.array([r.label for r in records], dtype=np.int64),
        eval_attacks=[r.attack for r in records],
        score_source=str(score_file),
        dev_embeddings=arrays["embedding"].astype(np.float64),
        dev_labels=arrays["label"].astype(np.int64),
        dev_attacks=[str(a) for a in arrays["attack"]],
        dev_total=len(dev_records),
        centers=centers,
        seen_attacks=seen,
    )


def _read_npz(path: Path, signature: str) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["signature"]) != signature:
                return None
            return {k: data[k] for k in ("embedding", "label", "attack", "centers")}
    except (OSError, ValueError, KeyError):
        return None


def _write_npz(path: Path, signature: str, arrays: dict[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, signature=np.array(signature), **arrays)  # type: ignore[arg-type]  # numpy's stub: **kwds as its bool flag
    atomic_write_bytes(path, buffer.getvalue())


def write_projector(log_dir: Path, views: Sequence[ModelView]) -> Path:
    """Dev embeddings (and centers) of each view for TensorBoard's projector, with label/attack/center metadata."""
    import shutil

    import torch
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(log_dir))
    try:
        for view in views:
            tag = f"{view.role.replace(' ', '_')}-{view.trial.trial_id}"
            shutil.rmtree(log_dir / "00000" / tag, ignore_errors=True)  # a rerun replaces, never duplicates
            nearest = view.nearest
            rows = [
                [
                    "bonafide" if label == 1 else "spoof",
                    attack if label == 0 else "-",
                    f"c{nearest[i]}" if nearest is not None else "-",
                ]
                for i, (label, attack) in enumerate(zip(view.dev_labels, view.dev_attacks, strict=True))
            ]
            matrix = view.dev_embeddings
            if view.centers is not None:  # the centers themselves, so they can be found in the projector
                rows += [["center", "-", f"c{k}"] for k in range(len(view.centers))]
                matrix = np.concatenate([matrix, view.centers])
            writer.add_embedding(
                torch.from_numpy(matrix.astype(np.float32)),
                metadata=rows,
                metadata_header=["label", "attack", "nearest_center"],
                tag=tag,
            )
    finally:
        writer.close()
    return log_dir


def eer_or_nan(scores: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None) -> float:
    """EER of bonafide vs the spoofs selected by ``mask`` (all spoofs when None); NaN when a class is empty."""
    spoof = labels == 0 if mask is None else (labels == 0) & mask
    if not (labels == 1).any() or not spoof.any():
        return math.nan
    return compute_eer(scores[labels == 1], scores[spoof])[0]
