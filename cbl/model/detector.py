"""The spoof detector: speech SSL front-end -> pooling -> L2-normalised embedding + 2-class logits.

``SpoofDetector.forward(audio, attention_mask)`` returns both heads every time; the
loss (``cbl.losses``) and the score (``cbl.metrics.score_from_output``) decide which
they use, so one model class serves ``cluster_only``, ``combined`` and ``ce_only``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch.nn.functional as F
from torch import Tensor, nn

from cbl.config import ModelConfig, OptimConfig
from cbl.model.pooling import build_pooling
from cbl.model.ssl import SSLFrontEnd

__all__ = ["DetectorOutput", "SpoofDetector", "build_model", "param_groups"]


class DetectorOutput(NamedTuple):
    """embedding: (B, D) unit L2 norm; logits: (B, 2), index 0 spoof, 1 bonafide."""

    embedding: Tensor
    logits: Tensor


class SpoofDetector(nn.Module):
    """Front-end + pooling + projection to an embedding on the unit sphere + linear classifier.

    The classifier reads the projection *before* normalisation: CE then shapes the
    same directions the cluster loss sees, without the bounded logits (and slow
    start) of a classifier on unit vectors.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.frontend = SSLFrontEnd(
            config.ssl,
            layer_mode=config.layer_mode,
            layer_index=config.layer_index,
            freeze_feature_encoder=config.freeze_feature_encoder,
            freeze_ssl=config.freeze_ssl,
            layerdrop=config.layerdrop,
            mask_time_prob=config.mask_time_prob,
            mask_feature_prob=config.mask_feature_prob,
            normalize_input=config.normalize_input,
            gradient_checkpointing=config.gradient_checkpointing,
        )
        self.pooling = build_pooling(config.pooling, self.frontend.hidden_size)
        self.projection = nn.Linear(self.pooling.output_dim, config.embedding_dim)
        self.classifier = nn.Linear(config.embedding_dim, 2)
        self.embedding_dim = config.embedding_dim

    @property
    def is_random_init(self) -> bool:
        """True when the front-end has random weights (``model.ssl=tiny``): a pipeline check, not a result."""
        return self.frontend.is_random_init

    def forward(self, audio: Tensor, attention_mask: Tensor | None = None) -> DetectorOutput:
        """audio: (B, T); attention_mask: (B, T) with 1 for real samples (right padding) or None."""
        return self.forward_features(*self.frontend.hidden(audio, attention_mask))

    def forward_features(self, states: Tensor, frame_mask: Tensor | None = None) -> DetectorOutput:
        """The trainable part only, from the front-end's states (see ``SSLFrontEnd.hidden``; the feature cache)."""
        frames = self.frontend.select(states)  # (B, F, H)
        pooled = self.pooling(frames, frame_mask)  # (B, P)
        projected = self.projection(pooled)  # (B, D)
        return DetectorOutput(embedding=F.normalize(projected, dim=-1), logits=self.classifier(projected))


def build_model(model_config: ModelConfig) -> SpoofDetector:
    """The detector described by ``model_config`` (loads or builds the front-end)."""
    return SpoofDetector(model_config)


def param_groups(model: SpoofDetector, optim_config: OptimConfig) -> list[dict[str, Any]]:
    """Optimizer groups: ``ssl`` (front-end weights) at ``optim.lr``, ``head`` (the rest) at ``optim.head_lr``.

    Only trainable parameters are included; a group with none (``ssl`` when
    ``freeze_ssl``) is left out, because some optimizers and schedulers dislike
    empty groups. Each group carries a ``name`` key so callers need not rely on
    positions.
    """
    ssl_ids = {id(p) for p in model.frontend.ssl.parameters()}
    ssl_params = [p for p in model.frontend.ssl.parameters() if p.requires_grad]
    head_params = [p for p in model.parameters() if p.requires_grad and id(p) not in ssl_ids]
    groups = [
        {"name": "ssl", "params": ssl_params, "lr": optim_config.lr, "weight_decay": optim_config.weight_decay},
        {"name": "head", "params": head_params, "lr": optim_config.head_lr, "weight_decay": optim_config.weight_decay},
    ]
    return [group for group in groups if group["params"]]
