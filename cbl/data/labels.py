"""Labels and the class weights they imply: 1 = bonafide, 0 = spoof, everywhere.

The weighting rule lives with the labels: a weighted cross-entropy (:mod:`cbl.losses`)
takes the weights as an argument and never counts a protocol itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from cbl.config import DataConfig
from cbl.data.protocols import Record
from cbl.errors import CblError, ProtocolError

__all__ = ["check_labels", "class_weights", "class_weights_from_labels", "training_class_weights"]


def check_labels(labels: Tensor) -> None:
    """Raise :class:`CblError` naming the first values that are neither 1 (bonafide) nor 0 (spoof)."""
    if labels.numel() and bool(((labels != 0) & (labels != 1)).any()):
        bad = sorted({int(v) for v in labels[(labels != 0) & (labels != 1)].tolist()})[:5]
        raise CblError(f"labels must be 1 (bonafide) or 0 (spoof), got {bad}")


def class_weights_from_labels(labels: Any) -> Tensor:
    """Inverse-frequency CE weights (2,): index 0 spoof, 1 bonafide; ``w_c = N / (2 N_c)``.

    labels: (N,) of 1 (bonafide) / 0 (spoof), e.g. the whole training protocol.
    The minority class (bonafide on ASVspoof) gets the larger weight. A class that
    is absent gets weight 1 (it never appears in a CE term anyway).
    """
    labels = torch.as_tensor(labels).reshape(-1)
    check_labels(labels)
    total = labels.numel()
    counts = torch.stack([(labels == 0).sum(), (labels == 1).sum()]).to(torch.float32)
    weights = torch.where(counts > 0, total / (2.0 * counts.clamp_min(1.0)), torch.ones_like(counts))
    return weights


def class_weights(records: Sequence[Record]) -> torch.Tensor:
    """Inverse-frequency class weights ``(2,)`` of a protocol: index 0 spoof, 1 bonafide.

    The weights are :func:`class_weights_from_labels` (``N / (2 N_c)``): the minority
    class (bonafide in ASVspoof) gets the larger weight. Raises :class:`ProtocolError`
    when a class is absent (weighted CE would be undefined).
    """
    labels = [r.label for r in records]
    for label, name in ((0, "spoof"), (1, "bonafide")):
        if label not in labels:
            raise ProtocolError(f"cannot weight classes: the records contain no {name} utterance")
    return class_weights_from_labels(labels)


def training_class_weights(records: Sequence[Record], data: DataConfig) -> torch.Tensor:
    """The frequency CE weights ``(2,)`` [spoof, bonafide] a run trains with: :func:`class_weights`, or
    uniform ``[1, 1]`` with ``data.balanced_sampling``.

    Balanced batches already hold both classes equally often; weighting them by their
    protocol frequencies as well would count the imbalance twice (bonafide ~8.8x
    spoof on ASVspoof 2019 LA). An explicit ``loss.ce_bonafide_weight`` replaces these
    weights in the loss either way. Raises :class:`ProtocolError` when a class is absent.
    """
    weights = class_weights(records)
    return torch.ones_like(weights) if data.balanced_sampling else weights
