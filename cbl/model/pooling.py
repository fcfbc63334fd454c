"""Frame pooling: (B, F, H) frames + (B, F) mask -> (B, output_dim) utterance vector.

Padded frames never influence the result: each pooling reads only the frames the
mask marks as real, so a padded batch gives every item the vector it would get on
its own. A name -> class registry (``POOLING``) is how configs select a pooling.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cbl.errors import ConfigError

__all__ = ["POOLING", "AttentiveStatsPooling", "MaxPooling", "MeanPooling", "Pooling", "build_pooling"]


def _mask_or_all(frames: Tensor, frame_mask: Tensor | None) -> Tensor:
    """(B, F) bool mask; all True when there is no padding."""
    if frame_mask is None:
        return torch.ones(frames.shape[:2], dtype=torch.bool, device=frames.device)
    return frame_mask.to(torch.bool)


class Pooling(nn.Module):
    """A frame pooling: ``forward(frames (B, F, H), frame_mask (B, F) or None) -> (B, output_dim)``."""

    output_dim: int


class MeanPooling(Pooling):
    """Average over real frames. ``output_dim == dim``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.output_dim = dim

    def forward(self, frames: Tensor, frame_mask: Tensor | None = None) -> Tensor:
        """frames: (B, F, H); frame_mask: (B, F) or None -> (B, H)."""
        if frame_mask is None:
            return frames.mean(dim=1)
        weights = frame_mask.to(frames.dtype).unsqueeze(-1)  # (B, F, 1)
        # clamp: an all-padding row (prevented upstream) must not divide by zero
        return (frames * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


class MaxPooling(Pooling):
    """Element-wise maximum over real frames. ``output_dim == dim``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.output_dim = dim

    def forward(self, frames: Tensor, frame_mask: Tensor | None = None) -> Tensor:
        """frames: (B, F, H); frame_mask: (B, F) or None -> (B, H)."""
        if frame_mask is None:
            return frames.max(dim=1).values
        mask = frame_mask.to(torch.bool).unsqueeze(-1)
        # the dtype's lowest finite value, not -inf: -inf * 0 in backward would give NaN
        lowest = torch.finfo(frames.dtype).min
        return frames.masked_fill(~mask, lowest).max(dim=1).values


class AttentiveStatsPooling(Pooling):
    """Attentive statistics pooling (Okabe et al., 2018): attention-weighted mean and std.

    A small MLP scores every frame; a softmax over the real frames turns the scores
    into weights. ``output_dim == 2 * dim`` (mean and standard deviation concatenated).
    """

    def __init__(self, dim: int, attention_dim: int = 128) -> None:
        super().__init__()
        self.output_dim = 2 * dim
        self.score = nn.Sequential(nn.Linear(dim, attention_dim), nn.Tanh(), nn.Linear(attention_dim, 1))

    def forward(self, frames: Tensor, frame_mask: Tensor | None = None) -> Tensor:
        """frames: (B, F, H); frame_mask: (B, F) or None -> (B, 2H)."""
        mask = _mask_or_all(frames, frame_mask)
        scores = self.score(frames).squeeze(-1)  # (B, F)
        # finite fill, not -inf: padded weights still underflow to exactly 0 after softmax
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=1).unsqueeze(-1)  # (B, F, 1)
        mean = (weights * frames).sum(dim=1)
        variance = (weights * (frames - mean.unsqueeze(1)).pow(2)).sum(dim=1)
        # floor keeps sqrt's gradient finite for constant features
        std = variance.clamp_min(1e-6).sqrt()
        return torch.cat([mean, std], dim=-1)


POOLING: dict[str, type[Pooling]] = {
    "mean": MeanPooling,
    "max": MaxPooling,
    "attention": AttentiveStatsPooling,
}


def build_pooling(name: str, dim: int) -> Pooling:
    """Instantiate the pooling registered under ``name`` for ``dim``-wide frames (has ``.output_dim``)."""
    if name not in POOLING:
        raise ConfigError(f"key 'model.pooling': unknown value {name!r}, expected one of: {', '.join(POOLING)}")
    return POOLING[name](dim)
