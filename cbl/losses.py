"""The bonafide-only cluster metric loss, weighted cross-entropy, and their combinations.

Geometry (embeddings z and centers c_k are unit vectors, s_k = cos(z, c_k), and
``d_k = ||z - c_k|| = sqrt(2 - 2 s_k)`` the chord distance, computed from the
difference vectors so that it is exact down to 0):

* Attraction, bonafide only, to the nearest center, by ``loss.attraction``:

  - ``distance`` (default): ``sqrt(d^2 + e^2) - e`` with ``e = d(bonafide_margin)``
    (0.45 at 0.9): linear in the distance (a unit pull) beyond ~e, quadratic and
    gentle inside, zero on the center;
  - ``margin``: ``relu(bonafide_margin - s)``, OC-Softmax's m_real as a hinge: a
    bonafide within cos 0.9 of its center is left alone;
  - ``to_center``: ``1 - s``, the seed's pull to cosine 1 (d^2 / 2, like center loss).

* Repulsion, spoof only, from **all** centers down to the margin m (a cosine):
  per-center hinges ``r_k = relu(d(m) - d_k)`` (zero exactly when s_k <= m),
  combined by a smooth maximum that is a p-norm, p = 1 + 1/T:
  ``rep(z) = (sum_k r_k ** p) ** (1 / p)``. rep = 0 exactly when every s_k <= m;
  max_k r_k <= rep <= K**(1/p) max_k r_k; T -> 0 gives the hinge on the nearest
  center, T -> inf the sum. ``repulsion="nearest"`` keeps only the nearest center.

* Spread, every embedding of the batch (``loss.spread_weight``, default 1):
  ``relu(spread_target - sqrt(1 - |mean z|^2))``, see :func:`batch_spread_shortfall`;
  with ``loss.bonafide_spread_target`` > 0 (off by default) the same hinge on the
  batch's bonafide alone, so that they keep what tells their sub-populations apart
  (measured on the demo at 0.6: bonafide mean pairwise cosine 0.41 instead of
  0.90, speaker gender linearly decodable from them 81% instead of 59% (chance
  52%), the recording channel hardly (44% vs 40%, chance 38%); best dev EER 7.8%
  instead of 4.1%).

``cluster_only``: att + alpha * rep + spread_weight * spread. The seed's loss is
``loss.attraction=to_center loss.spread_weight=0 loss.alpha=1`` (with exact
distances; its ``sqrt(2 - 2 s + 1e-6)`` is gone, see below).

Why this shape. Each part answers a way the demo (tiny random-weight wav2vec2,
k-means centers refit every epoch) collapsed; the numbers are measured there
(cbl/data/demo.py, default profile, single runs):

- **Exact distances.** ``sqrt(2 - 2 s + 1e-6)`` made a ball of radius ~1e-3
  around each center where a spoof got no push (gradient 3e-11 at distance 1e-5);
  ``||z - c||`` gives a unit push, pointing from the center to the spoof, at every
  distance > 0. A hinge on the distance rather than on the cosine for the same
  reason: ``relu(s - m)``'s push is proportional to d and vanishes on a center.
- **A linear attraction.** While the model cannot yet tell the classes apart,
  moving *every* embedding by a distance x away from the centers changes the loss
  by ``att'(x) - alpha * x * g`` per unit, where g <= K^(1/p) is the repulsion's
  slope. With ``1 - s`` or ``margin`` (slope sin(theta), ~0 near the center; the
  margin's first 26 degrees cost nothing at all) that move always pays: measured
  with ``margin``, both classes moved away together to cos ~0.5 of the centers
  within the first epoch (the balance point sin(theta/2) = alpha/2 at alpha = 1),
  the next refit put the centers back among them, and the chase repeated every
  epoch (the batch's mean pairwise cosine went from 0.96 to 1.00: one point, best
  dev EER 43%). With ``distance`` the attraction's slope is ~1 beyond e,
  so for alpha * K^(1/p) < 1 (alpha < 0.81 at K = 10, T = 0.1) the joint move
  never pays and the loss can only fall by separating spoofs from bonafide
  (measured: bonafide stayed at cos 0.92-1.00 of their centers through the epoch
  while spoofs left). Hence the default alpha 0.5 and the searched range
  0.125-0.75 (search_spaces/). Measured (cluster_only, K 10, 6 epochs): alpha
  0.125 / 0.25 / 0.5 / 0.75 / 1 / 2 / 5 gave best dev EER 13.6 / 11.4 / 4.1 / 4.4 /
  4.1 / 13.1 / 33.1%; at 5 half the centers ended empty with bonafide and spoofs
  alike at cosine 0.37 / 0.30 of them.
- **A spread term with a gradient at the collapse.** Even then a random model
  can map every input to nearly one point (batch mean cosine 0.999, every
  embedding on a center, bonafide and spoof similarity 1.00/1.00); at such a point
  any smooth function of the pairwise distances has a vanishing gradient. The
  square root in the spread hinge gives every embedding a push away from the
  batch mean of order 1/B however close they all are, so a collapsed batch is
  never at rest; it is zero once the batch is spread (mean pairwise cosine below
  ~0.75), so it does not fight the clusters.
- **A homogeneous smooth maximum.** The earlier ``T log(1 + sum_k(exp(r_k/T) - 1))``
  behaved like ``sum_k r_k`` when the hinges are small next to T, so a spoof near
  a bundle of similar centers was pushed up to K times harder than by one; the
  p-norm's gradient weights sum to at most K**(1/p) (1.23 for K = 10, T = 0.1).

The centers themselves move slowly (``centers.refit_step``, :mod:`cbl.centers`).
There are no spoof clusters. Labels: 1 bonafide, 0 spoof.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from cbl.config import ATTRACTION_MODES, LOSS_TYPES, REPULSION_MODES, LossConfig
from cbl.data.labels import check_labels
from cbl.errors import CblError, ConfigError

__all__ = [
    "BonafideClusterLoss",
    "ClusterLossParts",
    "LossParts",
    "batch_spread_shortfall",
    "compute_loss",
    "repulsion_from_distances",
    "repulsion_from_similarities",
]


class ClusterLossParts(NamedTuple):
    total: Tensor  # attraction + alpha * repulsion + spread_weight * spread, scalar
    attraction: Tensor
    repulsion: Tensor
    spread: Tensor = torch.zeros(())


class LossParts(NamedTuple):
    """Scalar tensors; parts that do not apply to the loss type or the batch are 0.0."""

    total: Tensor
    attraction: Tensor
    repulsion: Tensor
    ce: Tensor
    spread: Tensor = torch.zeros(())  # the batch spread hinge (unweighted)


def _chord_distances(z: Tensor, c: Tensor) -> Tensor:
    """Chord distances ``||z_i - c_k||`` (B, K) of unit vectors z (B, D) and c (K, D), from the differences.

    Exact down to 0: ``sqrt(2 - 2 cos)`` loses everything below ~3e-4 to float32 cancellation
    (1 - cos underflows), and smoothing its sqrt with an epsilon made a ball of radius ~1e-3
    around each center where a spoof got no push (a gradient of 3e-11 at distance 1e-5). Here
    the gradient has norm 1 at every distance > 0, pointing from the center to the spoof.
    """
    return (z.unsqueeze(1) - c.unsqueeze(0)).norm(dim=-1)


def _margin_distance(margin: float) -> float:
    """The chord distance ``sqrt(2 - 2 m)`` at cosine ``m``."""
    return math.sqrt(max(0.0, 2.0 - 2.0 * margin))


def repulsion_from_distances(distances: Tensor, margin: float, temperature: float, mode: str = "all") -> Tensor:
    """Per-spoof repulsion from chord distances to the centers (see the module docstring).

    distances: (N, K) -> (N,), each >= 0 and exactly 0 when every distance >= d(margin).
    """
    hinge = F.relu(_margin_distance(margin) - distances)  # (N, K)
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


def repulsion_from_similarities(similarities: Tensor, margin: float, temperature: float, mode: str = "all") -> Tensor:
    """:func:`repulsion_from_distances` on ``d = sqrt(2 - 2 s)`` for cosine similarities (N, K) -> (N,).

    For analysis and tests; the loss itself uses exact distances (:func:`_chord_distances`).
    """
    distances = torch.sqrt((2.0 - 2.0 * similarities).clamp_min(1e-12))  # clamp: a finite gradient at s = 1
    return repulsion_from_distances(distances, margin, temperature, mode)


class BonafideClusterLoss:
    """Attraction of bonafide embeddings to their nearest center + alpha * repulsion of spoofs from all centers.

    ``__call__(embeddings (B, D), centers (K, D), labels (B,)) -> ClusterLossParts``.
    Each part is a mean over its own class in the batch (0.0 when the batch has
    none of that class), so alpha alone sets the balance, whatever the class mix.
    Centers are treated as constants (they are fitted, not learned).
    ``attraction="margin"``: ``relu(bonafide_margin - s)`` (a bonafide within the
    margin of its nearest center is left where it is); ``"to_center"``: ``1 - s``
    (the seed's pull to cosine 1).
    """

    def __init__(
        self,
        margin: float = 0.2,
        temperature: float = 0.1,
        repulsion: str = "all",
        alpha: float = 1.0,
        attraction: str = "distance",
        bonafide_margin: float = 0.9,
        spread_weight: float = 0.0,
        spread_target: float = 0.5,
        bonafide_spread_target: float = 0.0,
    ) -> None:
        if not -1.0 <= margin <= 1.0:
            raise ConfigError(f"key 'loss.margin' is {margin!r}, but must be in [-1, 1] (a cosine)")
        if not temperature > 0:
            raise ConfigError(f"key 'loss.temperature' is {temperature!r}, but must be > 0")
        if repulsion not in REPULSION_MODES:
            options = ", ".join(REPULSION_MODES)
            raise ConfigError(f"key 'loss.repulsion': unknown value {repulsion!r}, expected one of: {options}")
        if attraction not in ATTRACTION_MODES:
            options = ", ".join(ATTRACTION_MODES)
            raise ConfigError(f"key 'loss.attraction': unknown value {attraction!r}, expected one of: {options}")
        if not margin < bonafide_margin <= 1.0:
            raise ConfigError(
                f"key 'loss.bonafide_margin' is {bonafide_margin!r}, but must be in "
                f"(loss.margin = {margin!r}, 1] (bonafide must sit closer to a center than spoofs)"
            )
        if not alpha >= 0:
            raise ConfigError(f"key 'loss.alpha' is {alpha!r}, but must be >= 0")
        self.margin = margin
        self.temperature = temperature
        self.repulsion = repulsion
        self.alpha = alpha
        self.attraction = attraction
        self.bonafide_margin = bonafide_margin
        self.spread_weight = spread_weight
        self.spread_target = spread_target
        self.bonafide_spread_target = bonafide_spread_target

    def __call__(self, embeddings: Tensor, centers: Tensor, labels: Tensor) -> ClusterLossParts:
        if centers.ndim != 2 or centers.shape[1] != embeddings.shape[-1]:
            raise CblError(
                f"centers have shape {tuple(centers.shape)}, expected (K, {embeddings.shape[-1]}) for these embeddings"
            )
        # float32 outside autocast: bf16 resolves cosines only to ~0.004, coarse next to a margin
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            z = F.normalize(embeddings.float(), dim=-1)
            c = F.normalize(centers.detach().to(device=z.device, dtype=torch.float32), dim=-1)
        bonafide = labels.to(z.device).reshape(-1) == 1
        zero = z.new_zeros(())
        if bool(bonafide.any()):
            if self.attraction == "distance":
                softness = _margin_distance(self.bonafide_margin)
                nearest_distance = _chord_distances(z[bonafide], c).min(dim=1).values
                attraction = (torch.sqrt(nearest_distance**2 + softness**2) - softness).mean()
            else:
                nearest = (z[bonafide] @ c.T).max(dim=1).values
                target = self.bonafide_margin if self.attraction == "margin" else 1.0
                attraction = F.relu(target - nearest).mean()
        else:
            attraction = zero
        spoof = ~bonafide
        if bool(spoof.any()):
            distances = _chord_distances(z[spoof], c)  # (S, K)
            repulsion = repulsion_from_distances(distances, self.margin, self.temperature, self.repulsion).mean()
        else:
            repulsion = zero
        spread = zero
        if self.spread_weight > 0:
            spread = batch_spread_shortfall(z, self.spread_target)
            if self.bonafide_spread_target > 0:
                spread = spread + batch_spread_shortfall(z[bonafide], self.bonafide_spread_target)
        total = attraction + self.alpha * repulsion + self.spread_weight * spread
        return ClusterLossParts(total, attraction, repulsion, spread)


def batch_spread_shortfall(z: Tensor, target: float) -> Tensor:
    """``relu(target - sqrt(1 - |mean z|^2))`` for unit embeddings z (B, D): how far the batch is from a spread.

    ``1 - |mean z|^2`` is the total variance of unit vectors (0 when all are one
    point, ~1 when spread over the sphere), its square root their RMS chord
    distance to the mean over sqrt 2. Its gradient does not vanish at a collapse:
    each embedding is pushed away from the batch mean with a force of order 1/B
    however close they all are (the sqrt), so a point-like batch is never at rest.
    0 for fewer than two embeddings.
    """
    if z.shape[0] < 2:
        return z.new_zeros(())
    variance = (1.0 - (z.mean(dim=0) ** 2).sum()).clamp_min(1e-12)
    return F.relu(target - variance.sqrt())


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

    * ``cluster_only``: att + alpha * rep + spread_weight * spread
    * ``combined``: weighted CE + ce_lambda * (att + alpha * rep + spread_weight * spread)
    * ``ce_only``: weighted CE
    """
    if loss_config.type not in LOSS_TYPES:
        options = ", ".join(LOSS_TYPES)
        raise ConfigError(f"key 'loss.type': unknown value {loss_config.type!r}, expected one of: {options}")
    embedding, logits = output.embedding, output.logits
    labels = labels.to(device=logits.device).long().reshape(-1)
    check_labels(labels)
    zero = logits.new_zeros((), dtype=torch.float32)
    attraction = repulsion = ce = spread = zero
    cluster_total = zero
    if loss_config.type in ("cluster_only", "combined"):
        center_tensor = _center_tensor(centers)
        if center_tensor is None:
            raise CblError(
                f"loss.type={loss_config.type} needs bonafide centers, but none were given "
                "(fit them before the first epoch: centers.fit(bonafide_embeddings))"
            )
        cluster = BonafideClusterLoss(
            loss_config.margin,
            loss_config.temperature,
            loss_config.repulsion,
            loss_config.alpha,
            loss_config.attraction,
            loss_config.bonafide_margin,
            loss_config.spread_weight,
            loss_config.spread_target,
            loss_config.bonafide_spread_target,
        )
        cluster_total, attraction, repulsion, spread = cluster(embedding, center_tensor, labels)
    if loss_config.type in ("ce_only", "combined"):
        weights = _ce_weights(loss_config, class_weights, logits)
        ce = F.cross_entropy(logits.float(), labels, weight=weights.float())
    if loss_config.type == "cluster_only":
        total = cluster_total
    elif loss_config.type == "ce_only":
        total = ce
    else:
        total = ce + loss_config.ce_lambda * cluster_total
    return LossParts(total=total, attraction=attraction, repulsion=repulsion, ce=ce, spread=spread)


def _center_tensor(centers: Any) -> Tensor | None:
    """Accept a (K, D) tensor, a ``BonafideCenters`` (its ``.centers``), or None."""
    if centers is None:
        return None
    tensor = getattr(centers, "centers", centers)
    if tensor is None or not isinstance(tensor, Tensor) or tensor.ndim != 2 or tensor.shape[0] == 0:
        return None
    return tensor
