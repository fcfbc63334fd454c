"""The model at inference: a loader batch forwarded, long audio in chunks, a split embedded, embeddings scored.

One path for training's dev scoring, ``evaluate``/``score`` and the report, so the
EER a sweep reports is the one ``cbl-search evaluate`` gives.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader

from cbl.centers import BonafideCenters
from cbl.config import ExperimentConfig
from cbl.data import pad_batch
from cbl.engine.runtime import autocast_for
from cbl.metrics import ZNormStats, score_components, score_from_output
from cbl.model import DetectorOutput, SpoofDetector

__all__ = ["embed", "forward_batch", "forward_chunked", "score_embeddings", "score_norm"]


def forward_batch(
    model: SpoofDetector,
    batch: dict[str, Any],
    config: ExperimentConfig,
    device: torch.device,
    *,
    evaluation: bool = False,
    non_blocking: bool = False,
) -> DetectorOutput:
    """The model's output for a loader batch: audio, or cached front-end states (``train.feature_cache``).

    At evaluation, audio longer than ``data.eval_max_len`` is fed in chunks
    (:func:`forward_chunked`), so memory stays bounded.
    """
    if "states" in batch:
        mask = batch["frame_mask"]
        return model.forward_features(
            batch["states"].to(device, non_blocking=non_blocking), None if mask is None else mask.to(device)
        )
    mask = batch["attention_mask"]
    audio = batch["audio"].to(device, non_blocking=non_blocking)
    mask = None if mask is None else mask.to(device)
    if evaluation:
        return forward_chunked(model, audio, mask, config.data.eval_max_len)
    return model(audio, mask)


def forward_chunked(
    model: SpoofDetector, audio: Tensor, attention_mask: Tensor | None, max_len: int, chunks_per_batch: int = 8
) -> DetectorOutput:
    """Like ``model(audio, attention_mask)``, but no utterance is fed in pieces longer than ``max_len`` samples.

    audio: (B, T); attention_mask: (B, T) or None. A batch whose padded length fits
    is one forward. Otherwise each utterance is cut into near-equal chunks of at
    most ``max_len`` samples, fed ``chunks_per_batch`` at a time; its embedding is
    the length-weighted mean of the chunk embeddings (renormalised) and its logits
    the length-weighted mean of the chunk logits. Memory is then bounded by
    ``max_len`` whatever the file's length (a 10-minute recording at evaluation),
    at the cost of context across chunk borders.
    """
    if audio.shape[1] <= max_len:
        return model(audio, attention_mask)
    lengths = attention_mask.sum(-1).tolist() if attention_mask is not None else [audio.shape[1]] * len(audio)
    embeddings, logits = [], []
    for row, length in zip(audio, lengths, strict=True):
        pieces = max(1, -(-int(length) // max_len))
        bounds = [round(i * int(length) / pieces) for i in range(pieces + 1)]
        parts = [row[a:b] for a, b in itertools.pairwise(bounds)]
        weights = torch.tensor([float(len(p)) for p in parts], device=audio.device)
        chunk_emb, chunk_logits = [], []
        for start in range(0, len(parts), chunks_per_batch):
            group = parts[start : start + chunks_per_batch]
            batch, mask = pad_batch(group)
            out = model(batch, None if all(len(p) == len(group[0]) for p in group) else mask)
            chunk_emb.append(out.embedding)
            chunk_logits.append(out.logits)
        w = (weights / weights.sum()).unsqueeze(1)
        embeddings.append(F.normalize((torch.cat(chunk_emb) * w.to(chunk_emb[0].dtype)).sum(0), dim=-1))
        logits.append((torch.cat(chunk_logits) * w.to(chunk_logits[0].dtype)).sum(0))
    return DetectorOutput(embedding=torch.stack(embeddings), logits=torch.stack(logits))


def embed(model: SpoofDetector, loader: DataLoader, config: ExperimentConfig, device: torch.device) -> dict[str, Any]:
    """Forward a loader in eval mode; return embeddings, logits, labels, ids, attacks (CPU tensors).

    ``embedding`` (N, D), ``logits`` (N, 2), ``label`` (N,), ``utt_id`` and ``attack``
    lists, in the loader's order (a length-bucketed loader reorders the protocol).
    """
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


def score_embeddings(
    outputs: dict[str, Any], centers: BonafideCenters | None, config: ExperimentConfig, norm: ZNormStats | None = None
) -> np.ndarray:
    """Detection scores (N,), higher = bonafide, for outputs of :func:`embed`.

    ``norm`` (a :class:`cbl.metrics.ZNormStats`) is needed for ``loss.score=sum``;
    see :func:`score_norm`.
    """
    output = DetectorOutput(embedding=outputs["embedding"], logits=outputs["logits"])
    center_tensor = centers.centers if centers is not None else None
    return score_from_output(output, center_tensor, config.loss, norm).numpy()


def score_norm(outputs: dict[str, Any], centers: BonafideCenters | None, config: ExperimentConfig) -> ZNormStats | None:
    """Z-normalisation statistics from a reference split (dev), or None when the score rule needs none."""
    if not (config.loss.type == "combined" and config.loss.score == "sum"):
        return None
    output = DetectorOutput(embedding=outputs["embedding"], logits=outputs["logits"])
    components = score_components(output, centers.centers if centers is not None else None)
    return ZNormStats.from_components(components["cluster"], components["ce"])
