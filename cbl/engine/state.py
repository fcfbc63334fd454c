"""Everything a training run carries from one epoch to the next, saved and restored by one path.

:class:`TrainState` holds the model, the optimizer, the bonafide centers, the
optimizer step, the last finished epoch and the best one so far; its
:meth:`~TrainState.state_dict` is the checkpoint payload and
:meth:`~TrainState.load_state_dict` restores it (with the torch RNG states), so what a
checkpoint holds and what a resume restores cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch

from cbl.centers import BonafideCenters
from cbl.engine.checkpoint import load_model_state, rng_state, set_rng_state
from cbl.metrics import ZNormStats
from cbl.model import SpoofDetector

__all__ = ["TrainState"]


@dataclass
class TrainState:
    """The run's state after ``epoch`` (0-based; -1 before the first epoch ends)."""

    model: SpoofDetector
    optimizer: torch.optim.Optimizer
    centers: BonafideCenters | None  # None for ce_only
    epoch: int = -1
    step: int = 0  # optimizer steps taken (the learning rate is a pure function of it)
    best_dev_eer: float = math.inf
    best_epoch: int = -1  # 1-based, -1 before any
    best_threshold: float = 0.0

    def record(self, epoch: int, dev_eer: float, threshold: float) -> bool:
        """Mark ``epoch`` (0-based) finished with this dev EER; True when it is the best so far."""
        self.epoch = epoch
        improved = dev_eer < self.best_dev_eer
        if improved:
            self.best_dev_eer, self.best_epoch, self.best_threshold = float(dev_eer), epoch + 1, float(threshold)
        return improved

    def state_dict(self, *, dev_eer: float, threshold: float, norm: ZNormStats | None) -> dict[str, Any]:
        """The checkpoint payload: this state, the epoch's own dev EER, threshold and score normalisation, RNGs."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "centers": self.centers.state_dict() if self.centers is not None else {},
            "epoch": self.epoch,
            "step": self.step,
            "dev_eer": float(dev_eer),
            "threshold": float(threshold),
            "best_dev_eer": self.best_dev_eer,
            "best_epoch": self.best_epoch,
            "best_threshold": self.best_threshold,
            "score_norm": dataclasses.asdict(norm) if norm is not None else {},
            "rng": rng_state(),
        }

    def load_state_dict(self, payload: dict[str, Any], source: str) -> None:
        """Restore a payload of :meth:`state_dict` (``source`` names the file in errors), RNG states included."""
        load_model_state(self.model, payload["model"], source)
        self.optimizer.load_state_dict(payload["optimizer"])
        if self.centers is not None and payload.get("centers"):
            self.centers.load_state_dict(payload["centers"])
        self.epoch, self.step = payload["epoch"], payload["step"]
        self.best_dev_eer, self.best_epoch = payload["best_dev_eer"], payload["best_epoch"]
        self.best_threshold = payload["best_threshold"]
        set_rng_state(payload["rng"])
