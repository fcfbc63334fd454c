"""The bonafide-only cluster metric loss, weighted cross-entropy, and their combinations.

Geometry (embeddings z and centers c_k are unit vectors, s_k = cos(z, c_k)):

* Attraction, bonafide only: ``mean(1 - max_k s_k)`` pulls each bonafide embedding
  toward its nearest center. Zero when every bonafide lies on a center.
* Repulsion, spoof only, from **all** centers down to the margin m (a cosine).
  The per-center hinge is on the chord distance ``d(s) = ||z - c|| = sqrt(2 - 2 s)``,

      r_k = relu(d(m) - d(s_k))          (zero exactly when s_k <= m)

  and the centers are combined by a smooth maximum that is a p-norm, p = 1 + 1/T:

      rep(z) = (sum_k r_k ** p) ** (1 / p)

  rep = 0 exactly when every s_k <= m; max_k r_k <= rep <= K**(1/p) max_k r_k, so
  it never under-penalises the nearest center; rep == max_k r_k when a single
  center is violated; T -> 0 gives max_k r_k (hinge on the nearest center),
  T -> inf gives sum_k r_k. ``repulsion="nearest"`` keeps only the hinge on the
  nearest center (an option, not the default: it ignores every other center).

  Why these two shapes (both found by the demo collapsing, both general):

  - Distance, not cosine, in the hinge. ``relu(s - m)`` is a hinge on the
    *squared* distance (s = 1 - d^2/2), so its push on a spoof is proportional to
    d and vanishes when the spoof sits on a center: "everything on the bonafide
    centers" (attraction 0, repulsion at its maximum) was a stationary point that
    training could not leave. A hinge on d (the usual contrastive-loss hinge)
    pushes hardest there. Attraction stays ``1 - s`` (d^2/2, like center loss):
    a bonafide on its center is at rest, a spoof on a center never is.
  - A homogeneous smooth maximum. The earlier ``T log(1 + sum_k(exp(r_k/T) - 1))``
    behaves like ``sum_k r_k`` whenever the hinges are small next to T, so a spoof
    near a bundle of K similar centers (k-means centers on an anisotropic
    embedding space, e.g. at initialisation) was pushed up to K times harder than
    by one center: the repulsion swamped the attraction and pushed every
    embedding, bonafide included, out to the margin. The p-norm's gradient
    weights sum to at most K**(1/p) (1.26 for K = 10, T = 0.1) at every scale.

There are no spoof clusters. Labels: 1 bonafide, 0 spoof.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from cbl.config import LOSS_TYPES, REPULSION_MODES, LossConfig
from cbl.data.labels import check_labels
from cbl.errors import CblError, ConfigError

__all__ = [
    "BonafideClusterLoss",
    "ClusterLossParts",
    "LossParts",
    "compute_loss",
    "repulsion_from_similarities",
]


class ClusterLossParts(NamedTuple):
    total: Tensor  # attraction + alpha * repulsion, scalar
    attraction: Tensor
    repulsion: Tensor


class LossParts(NamedTuple):
    """Scalar tensors; parts that do not apply to the loss type or the batch are 0.0."""

    total: Tensor
    attraction: Tensor
    repulsion: Tensor
    ce: Tensor


_CHORD_EPS = 1e-6  # keeps sqrt's gradient finite (<= 1e3) for a spoof exactly on a center


def _chord(similarities: Tensor) -> Tensor:
    """Chord distance ``||z - c|| = sqrt(2 - 2 cos)`` between unit vectors, from their cosine."""
    return torch.sqrt((2.0 - 2.0 * similarities).clamp_min(0.0) + _CHORD_EPS)


def repulsion_from_similarities(similarities: Tensor, margin: float, temperature: float, mode: str = "all") -> Tensor:
    """Per-spoof repulsion from cosine similarities to the centers (see the module docstring).

    similarities: (N, K) -> (N,), each >= 0 and exactly 0 when all similarities <= margin.
    """
    margin_distance = _chord(torch.as_tensor(margin, dtype=similarities.dtype, device=similarities.device))
    hinge = F.relu(margin_distance - _chord(similarities))  # (N, K)
    if mode == "nearest":
        return hinge.max(dim=1).values
    power = 1.0 + 1.0 / temperature
    # (sum_k r_k^p)^(1/p) = top * (sum_k (r_k / top)^p)^(1/p) for any constant top > 0: dividing by the
    # (detached) row maximum keeps r^p from underflowing or overflowing and makes the inner sum >= 1
    top = hinge.max(dim=1, keepdim=True).values.detach()
    violated = top > 0
    safe_top = torch.where(violated, top, torch.ones_like(top))
    inner = ((hinge / safe_top) ** power).sum(dim=1, keepdim=True)
    # rows with no violated center: exactly 0, with a zero gradient (no 0 ** (1/p) in the graph)
    inner = torch.where(violated, inner, torch.ones_like(inner))
    return torch.where(violated, safe_top * inner ** (1.0 / power), torch.zeros_like(top)).squeeze(1)


class BonafideClusterLoss:
    """Attraction of bonafide embeddings to their nearest center + alpha * repulsion of spoofs from all centers.

    ``__call__(embeddings (B, D), centers (K, D), labels (B,)) -> ClusterLossParts``.
    Each part is a mean over its own class in the batch (0.0 when the batch has
    none of that class), so alpha alone sets the balance, whatever the class mix.
    Centers are treated as constants (they are fitted, not learned).
    """

    def __init__(
        self, margin: float = 0.2, temperature: float = 0.1, repulsion: str = "all", alpha: float = 1.0
    ) -> None:
        if not -1.0 <= margin <= 1.0:
            raise ConfigError(f"key 'loss.margin' is {margin!r}, but must be in [-1, 1] (a cosine)")
        if not temperature > 0:
            raise ConfigError(f"key 'loss.temperature' is {temperature!r}, but must be > 0")
        if repulsion not in REPULSION_MODES:
            options = ", ".join(REPULSION_MODES)
            raise ConfigError(f"key 'loss.repulsion': unknown value {repulsion!r}, expected one of: {options}")
        if not alpha >= 0:
            raise ConfigError(f"key 'loss.alpha' is {alpha!r}, but must be >= 0")
        self.margin = margin
        self.temperature = temperature
        self.repulsion = repulsion
        self.alpha = alpha

    def __call__(self, embeddings: Tensor, centers: Tensor, labels: Tensor) -> ClusterLossParts:
        if centers.ndim != 2 or centers.shape[1] != embeddings.shape[-1]:
            raise CblError(
                f"centers have shape {tuple(centers.shape)}, expected (K, {embeddings.shape[-1]}) for these embeddings"
            )
        # float32 outside autocast: bf16 resolves cosines only to ~0.004, coarse next to a margin
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            z = F.normalize(embeddings.float(), dim=-1)
            c = F.normalize(centers.detach().to(device=z.device, dtype=torch.float32), dim=-1)
            similarities = z @ c.T  # (B, K)
        bonafide = labels.to(z.device).reshape(-1) == 1
        zero = z.new_zeros(())
        attraction = (1.0 - similarities[bonafide].max(dim=1).values).mean() if bool(bonafide.any()) else zero
        spoof = ~bonafide
        if bool(spoof.any()):
            per_spoof = repulsion_from_similarities(similarities[spoof], self.margin, self.temperature, self.repulsion)
            repulsion = per_spoof.mean()
        else:
            repulsion = zero
        return ClusterLossParts(attraction + self.alpha * repulsion, attraction, repulsion)


def _ce_weights(loss_config: LossConfig, class_weights: Tensor | None, like: Tensor) -> Tensor:
    """(2,) weights on ``like``'s device: explicit bonafide weight if configured, else the frequency weights."""
    if loss_config.ce_bonafide_weight > 0:
        weights = torch.tensor([1.0, loss_config.ce_bonafide_weight])
    elif class_weights is None:
        raise CblError(
            "weighted CE needs class_weights (2,) [spoof, bonafide], e.g. "
            "cbl.data.class_weights_from_labels(train_labels), "
            "or loss.ce_bonafide_weight > 0"
        )
    else:
        weights = torch.as_tensor(class_weights, dtype=torch.float32).detach().reshape(-1)
        if weights.numel() != 2 or not bool(torch.isfinite(weights).all()) or not bool((weights > 0).all()):
            raise CblError(f"class_weights must be 2 positive finite numbers [spoof, bonafide], got {weights.tolist()}")
    return weights.to(device=like.device, dtype=like.dtype)


def compute_loss(
    output: Any,
    labels: Tensor,
    centers: Any,
    loss_config: LossConfig,
    class_weights: Tensor | None = None,
) -> LossParts:
    """The training loss for ``loss_config.type``.

    output: a ``DetectorOutput`` (embedding (B, D), logits (B, 2)); labels: (B,) 1/0;
    centers: (K, D) tensor or a ``BonafideCenters`` (needed by the cluster losses);
    class_weights: (2,) [spoof, bonafide] frequency weights, used unless
    ``loss.ce_bonafide_weight > 0``.

    * ``cluster_only``: att + alpha * rep
    * ``combined``: weighted CE + ce_lambda * (att + alpha * rep)
    * ``ce_only``: weighted CE
    """
    if loss_config.type not in LOSS_TYPES:
        options = ", ".join(LOSS_TYPES)
        raise ConfigError(f"key 'loss.type': unknown value {loss_config.type!r}, expected one of: {options}")
    embedding, logits = output.embedding, output.logits
    labels = labels.to(device=logits.device).long().reshape(-1)
    check_labels(labels)
    zero = logits.new_zeros((), dtype=torch.float32)
    attraction = repulsion = ce = zero
    cluster_total = zero
    if loss_config.type in ("cluster_only", "combined"):
        center_tensor = _center_tensor(centers)
        if center_tensor is None:
            raise CblError(
                f"loss.type={loss_config.type} needs bonafide centers, but none were given "
                "(fit them before the first epoch: centers.fit(bonafide_embeddings))"
            )
        cluster = BonafideClusterLoss(
            loss_config.margin, loss_config.temperature, loss_config.repulsion, loss_config.alpha
        )
        cluster_total, attraction, repulsion = cluster(embedding, center_tensor, labels)
    if loss_config.type in ("ce_only", "combined"):
        weights = _ce_weights(loss_config, class_weights, logits)
        ce = F.cross_entropy(logits.float(), labels, weight=weights.float())
    if loss_config.type == "cluster_only":
        total = cluster_total
    elif loss_config.type == "ce_only":
        total = ce
    else:
        total = ce + loss_config.ce_lambda * cluster_total
    return LossParts(total=total, attraction=attraction, repulsion=repulsion, ce=ce)


def _center_tensor(centers: Any) -> Tensor | None:
    """Accept a (K, D) tensor, a ``BonafideCenters`` (its ``.centers``), or None."""
    if centers is None:
        return None
    tensor = getattr(centers, "centers", centers)
    if tensor is None or not isinstance(tensor, Tensor) or tensor.ndim != 2 or tensor.shape[0] == 0:
        return None
    return tensor
