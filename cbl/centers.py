"""Bonafide centers: K unit vectors that the cluster loss pulls bonafide embeddings toward.

Two ways to keep them current:

* ``kmeans`` (:class:`KMeansCenters`): scikit-learn's KMeans on L2-normalised
  bonafide embeddings, centers renormalised afterwards (Euclidean k-means on the
  unit sphere, the usual stand-in for spherical k-means). ``refresh`` refits on
  the embeddings the training loop gives it (an eval-mode pass over a fixed
  sample of bonafide training audio, see :mod:`cbl.engine.center_passes`): first every center
  that no embedding is nearest to is re-seeded on the bonafide embedding farthest
  from every center (:func:`reseed_dead_centers`), then k-means warm-starts from
  those centers (``init=previous, n_init=1``), the new centers are matched one to
  one to the previous ones by the Hungarian assignment on cosine
  (:func:`match_centers`), so center k stays "the same cluster" from epoch to
  epoch whatever order k-means returns them in (per-center statistics, TensorBoard
  curves and the report's colours follow one cluster), and each center moves a
  fraction ``step`` of the way to its match (``centers.refit_step``, 0.2: on the
  demo, full jumps every epoch put the centers among the spoofs). ``refresh(...,
  min_similarity=m)`` leaves out bonafide embeddings within cosine m of no center
  (the training loop passes the spoof margin: bonafide the centers already treat
  as spoofs should not drag a center among the spoofs).
* ``online`` (:class:`OnlineCenters`): initialised by the same k-means, then an
  exponential moving average per training step; a center that receives no
  bonafide sample for ``dead_after_steps`` steps is re-seeded from the bonafide
  sample that lies farthest from its nearest center.

The training loop can treat both alike: call ``update_step`` every step and
``refresh`` every ``centers.refresh_every`` epochs; each method ignores the call
that does not apply to it. ``state_dict`` holds tensors only, so the centers fit
into checkpoints loaded with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from cbl.config import CLUSTER_METHODS, CentersConfig
from cbl.errors import CblError, ConfigError

__all__ = [
    "BonafideCenters",
    "KMeansCenters",
    "OnlineCenters",
    "RefitInfo",
    "build_centers",
    "cluster_stats",
    "match_centers",
    "reseed_dead_centers",
]

logger = logging.getLogger(__name__)


def _as_unit_float(embeddings: Any, what: str) -> Tensor:
    """(N, D) detached float32, L2-normalised; CblError on non-finite values."""
    tensor = torch.as_tensor(embeddings).detach().float()
    if tensor.ndim != 2:
        raise CblError(f"{what} must have shape (N, D), got {tuple(tensor.shape)}")
    if not bool(torch.isfinite(tensor).all()):
        raise CblError(f"{what} contain NaN or inf values (did training diverge?)")
    return F.normalize(tensor, dim=-1)


def match_centers(new: Tensor, previous: Tensor) -> Tensor:
    """The permutation of ``new`` (K, D) that best matches ``previous`` (K, D) one to one, by cosine.

    Returns ``order`` (K,) such that ``new[order][k]`` is the new center assigned to
    previous center k: the assignment maximising the summed cosine (the Hungarian
    algorithm, scipy's ``linear_sum_assignment``). K! orderings, solved in O(K^3).
    """
    from scipy.optimize import linear_sum_assignment

    similarity = (
        F.normalize(previous.detach().float().cpu(), dim=-1) @ F.normalize(new.detach().float().cpu(), dim=-1).T
    ).numpy()  # (previous, new)
    rows, cols = linear_sum_assignment(similarity, maximize=True)
    order = torch.empty(similarity.shape[0], dtype=torch.long)
    order[torch.as_tensor(rows)] = torch.as_tensor(cols)
    return order


def reseed_dead_centers(centers: Tensor, points: Tensor) -> tuple[Tensor, list[int]]:
    """Move every center that no point is nearest to onto a point far from every center.

    centers: (K, D) unit; points: (N, D) unit. Dead centers are taken in id order;
    each goes to the point whose similarity to its nearest center (the centers
    updated so far included) is the lowest, so two dead centers never land on the
    same point and a re-seeded center is not next to a live one. A point that
    coincides with a center (cosine > 1 - 1e-6) is no new seed: when no other
    point is left (every embedding on a few spots, a collapse), the center stays
    dead. Returns (new centers (K, D), ids of the re-seeded centers).
    """
    centers = centers.clone()
    if points.shape[0] == 0:
        return centers, []
    counts = torch.bincount((points @ centers.T).argmax(dim=1), minlength=centers.shape[0])
    reseeded: list[int] = []
    for k in torch.nonzero(counts == 0).flatten().tolist():
        nearest = (points @ centers.T).max(dim=1).values  # (N,)
        far = int(nearest.argmin())
        if float(nearest[far]) > 1.0 - 1e-6:
            break  # every point sits on a center: nothing distinct to seed from
        centers[k] = points[far]
        reseeded.append(k)
    return centers, reseeded


@dataclass
class RefitInfo:
    """What the last k-means refit did, for the run's diagnostics."""

    reseeded: int = 0  # dead centers re-seeded before the refit
    dead_after: int = 0  # centers still holding no embedding of the refit sample afterwards
    min_cosine_to_previous: float = 1.0  # the farthest any matched center moved (cosine to its old self)
    permuted: bool = False  # k-means returned the clusters in another order (the matching undid it)
    trimmed: int = 0  # embeddings left out: at most min_similarity from every center


class BonafideCenters:
    """K unit-norm bonafide centers ``centers`` (K, D), or None before the first ``fit``."""

    method = "kmeans"

    def __init__(self, num_clusters: int, dim: int, seed: int = 0) -> None:
        if num_clusters < 1:
            raise ConfigError(f"key 'loss.num_clusters' is {num_clusters}, but must be >= 1")
        if dim < 1:
            raise ConfigError(f"embedding dimension is {dim}, but must be >= 1")
        self.num_clusters = num_clusters
        self.dim = dim
        self.seed = seed
        self.centers: Tensor | None = None
        self.device = torch.device("cpu")

    @property
    def is_fitted(self) -> bool:
        return self.centers is not None

    def to(self, device: torch.device | str) -> BonafideCenters:
        """Keep the centers on ``device`` (the model's), so the loss needs no per-step copy."""
        self.device = torch.device(device)
        if self.centers is not None:
            self.centers = self.centers.to(self.device)
        return self

    def _kmeans(self, embeddings: Tensor, init: Tensor | None) -> Tensor:
        from sklearn.cluster import KMeans

        points = _as_unit_float(embeddings, "bonafide embeddings")
        if points.shape[1] != self.dim:
            raise CblError(f"bonafide embeddings have dimension {points.shape[1]}, but the centers have {self.dim}")
        if points.shape[0] < self.num_clusters:
            raise CblError(
                f"num_clusters K={self.num_clusters} but only {points.shape[0]} bonafide embeddings are available "
                "to fit the centers; lower loss.num_clusters or use more bonafide audio"
            )
        data = points.cpu().numpy().astype(np.float64)
        if init is None:
            # a few k-means++ restarts: the first fit decides the ids every later refresh keeps
            kmeans = KMeans(n_clusters=self.num_clusters, init="k-means++", n_init=4, random_state=self.seed)
        else:
            previous = init.detach().cpu().double().numpy()
            kmeans = KMeans(n_clusters=self.num_clusters, init=previous, n_init=1, random_state=self.seed)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            kmeans.fit(data)
        for warning in caught:
            # typically "fewer distinct points than clusters": worth knowing, not worth stopping for
            logger.warning("k-means: %s", warning.message)
        centers = torch.from_numpy(kmeans.cluster_centers_).float()
        return F.normalize(centers, dim=-1).to(self.device)

    def fit(self, embeddings: Any) -> Tensor:
        """Fit from scratch (k-means++) on bonafide embeddings (N, D); returns the centers (K, D)."""
        self.centers = self._kmeans(torch.as_tensor(embeddings), init=None)
        return self.centers

    def refresh(self, embeddings: Any) -> Tensor:
        """Epoch-level update from the epoch's bonafide embeddings (N, D); subclasses decide what it does."""
        raise NotImplementedError

    def update_step(self, bonafide_embeddings: Tensor) -> None:
        """Step-level update from one batch's bonafide embeddings (n, D); subclasses decide what it does."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Tensor]:
        """Tensors only (checkpoint-safe under ``weights_only=True``); unfitted centers are a (0, D) tensor."""
        centers = self.centers if self.centers is not None else torch.zeros(0, self.dim)
        return {"centers": centers.detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore what ``state_dict`` returned; CblError when K or D differ from this run's."""
        if "centers" not in state:
            raise CblError("centers state has no 'centers' entry (not written by BonafideCenters.state_dict)")
        centers = torch.as_tensor(state["centers"]).float()
        if centers.shape[0] == 0:
            self.centers = None
            return
        if tuple(centers.shape) != (self.num_clusters, self.dim):
            raise CblError(
                f"checkpoint centers have shape {tuple(centers.shape)}, but this run expects "
                f"K={self.num_clusters} centers of dimension {self.dim}"
            )
        # saved centers are unit-norm already: restore them bit for bit (F.normalize is not
        # idempotent in float32, and a resumed run must equal an uninterrupted one)
        norms = centers.norm(dim=-1)
        if not torch.allclose(norms, torch.ones_like(norms), atol=1e-5):
            centers = F.normalize(centers, dim=-1)
        self.centers = centers.to(self.device)


class KMeansCenters(BonafideCenters):
    """Centers refitted by k-means every refresh: dead ones re-seeded, warm-started, matched to the previous ids."""

    method = "kmeans"

    def __init__(self, num_clusters: int, dim: int, seed: int = 0, step: float = 1.0) -> None:
        super().__init__(num_clusters, dim, seed)
        if not 0.0 < step <= 1.0:
            raise ConfigError(f"key 'centers.refit_step' is {step!r}, but must be in (0, 1]")
        self.step = step
        self.last_refit = RefitInfo()

    def refresh(self, embeddings: Any, min_similarity: float | None = None) -> Tensor:
        """Refit on (N, D) bonafide embeddings (see the module docstring); fits from scratch if never fitted.

        ``min_similarity``: leave out the embeddings whose cosine to every current
        center is at most this (bonafide the centers already treat as spoofs), unless
        fewer than K would remain.
        """
        if self.centers is None:
            return self.fit(embeddings)
        points = _as_unit_float(embeddings, "bonafide embeddings").to(self.device)
        previous = self.centers
        trimmed = 0
        if min_similarity is not None:
            inside = (points @ previous.T).max(dim=1).values > min_similarity
            if int(inside.sum()) >= self.num_clusters:
                trimmed = int((~inside).sum())
                points = points[inside]
        start, reseeded = reseed_dead_centers(previous, points)
        if reseeded:
            logger.info("k-means centers: re-seeded %d dead center(s) %s", len(reseeded), reseeded)
        fitted = self._kmeans(points, init=start)
        order = match_centers(fitted, previous)
        matched = fitted[order.to(fitted.device)]
        if self.step < 1.0:  # every center moves part of the way to its match (a re-seeded one toward its new seed)
            matched = F.normalize((1.0 - self.step) * previous + self.step * matched, dim=-1)
        self.centers = matched
        counts = torch.bincount((points @ self.centers.T).argmax(dim=1), minlength=self.num_clusters)
        self.last_refit = RefitInfo(
            reseeded=len(reseeded),
            dead_after=int((counts == 0).sum()),
            min_cosine_to_previous=float((self.centers * previous).sum(dim=1).min()),
            permuted=bool((order != torch.arange(self.num_clusters)).any()),
            trimmed=trimmed,
        )
        return self.centers

    def update_step(self, bonafide_embeddings: Tensor) -> None:
        """No-op: k-means centers change only at ``refresh``."""


class OnlineCenters(BonafideCenters):
    """Centers that follow the bonafide embeddings by an EMA per step.

    ``c_k <- m c_k + (1 - m) mean(z assigned to k)``, renormalised; m = ``momentum``.
    """

    method = "online"

    def __init__(
        self, num_clusters: int, dim: int, seed: int = 0, momentum: float = 0.99, dead_after_steps: int = 50
    ) -> None:
        super().__init__(num_clusters, dim, seed)
        if not 0.0 <= momentum <= 1.0:
            raise ConfigError(f"key 'centers.ema_momentum' is {momentum!r}, but must be in [0, 1]")
        if dead_after_steps < 1:
            raise ConfigError(f"dead_after_steps is {dead_after_steps}, but must be >= 1")
        self.momentum = momentum
        # 50 steps: with K=10 and ~2 bonafide per batch a healthy center goes unassigned that long with p ~ 1e-4
        self.dead_after_steps = dead_after_steps
        self.steps_since_assigned = torch.zeros(num_clusters, dtype=torch.long)

    def to(self, device: torch.device | str) -> OnlineCenters:
        super().to(device)
        self.steps_since_assigned = self.steps_since_assigned.to(self.device)
        return self

    def fit(self, embeddings: Any) -> Tensor:
        """Initialise by k-means++ on a first set of bonafide embeddings (N, D)."""
        super().fit(embeddings)
        self.steps_since_assigned = torch.zeros(self.num_clusters, dtype=torch.long, device=self.device)
        assert self.centers is not None
        return self.centers

    def refresh(self, embeddings: Any) -> Tensor:
        """Initialise if never fitted; afterwards a no-op (the per-step EMA keeps the centers current)."""
        if self.centers is None:
            return self.fit(embeddings)
        return self.centers

    @torch.no_grad()
    def update_step(self, bonafide_embeddings: Tensor) -> None:
        """EMA update from one batch's bonafide embeddings (n, D), n may be 0; then re-seed dead centers."""
        if self.centers is None:
            raise CblError("online centers must be initialised with fit(bonafide_embeddings) before update_step")
        self.steps_since_assigned += 1
        if bonafide_embeddings.shape[0] == 0:
            return
        z = _as_unit_float(bonafide_embeddings, "bonafide embeddings").to(self.device)
        # a fresh tensor, not an in-place edit: a loss graph may still hold the old centers
        self.centers = self.centers.clone()
        similarities = z @ self.centers.T  # (n, K)
        nearest_similarity, assignment = similarities.max(dim=1)
        counts = torch.bincount(assignment, minlength=self.num_clusters)  # (K,)
        sums = torch.zeros_like(self.centers).index_add_(0, assignment, z)
        assigned = counts > 0
        means = sums[assigned] / counts[assigned].unsqueeze(1).to(z.dtype)
        updated = self.momentum * self.centers[assigned] + (1.0 - self.momentum) * means
        self.centers[assigned] = F.normalize(updated, dim=-1)
        self.steps_since_assigned[assigned] = 0
        self._reseed_dead(z, nearest_similarity)

    def _reseed_dead(self, z: Tensor, nearest_similarity: Tensor) -> None:
        """Move each dead center onto a distinct bonafide sample, farthest-from-its-center first."""
        assert self.centers is not None
        dead = torch.nonzero(self.steps_since_assigned >= self.dead_after_steps).flatten()
        if dead.numel() == 0:
            return
        farthest = torch.argsort(nearest_similarity)[: dead.numel()]
        dead = dead[: farthest.numel()]
        self.centers[dead] = z[farthest]
        self.steps_since_assigned[dead] = 0
        logger.info("online centers: re-seeded %d dead center(s) %s", dead.numel(), dead.tolist())

    def state_dict(self) -> dict[str, Tensor]:
        state = super().state_dict()
        state["steps_since_assigned"] = self.steps_since_assigned.detach().cpu().clone()
        return state

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        super().load_state_dict(state)
        steps = state.get("steps_since_assigned")
        if steps is not None and tuple(steps.shape) == (self.num_clusters,):
            self.steps_since_assigned = steps.long().to(self.device)
        else:
            self.steps_since_assigned = torch.zeros(self.num_clusters, dtype=torch.long, device=self.device)


def build_centers(centers_config: CentersConfig, num_clusters: int, dim: int) -> BonafideCenters:
    """``centers.method`` -> KMeansCenters or OnlineCenters with K=num_clusters (loss.num_clusters), D=dim."""
    if centers_config.method == "kmeans":
        return KMeansCenters(num_clusters, dim, seed=centers_config.seed, step=centers_config.refit_step)
    if centers_config.method == "online":
        return OnlineCenters(num_clusters, dim, seed=centers_config.seed, momentum=centers_config.ema_momentum)
    raise ConfigError(
        f"key 'centers.method': unknown value {centers_config.method!r}, expected one of: {', '.join(CLUSTER_METHODS)}"
    )


def cluster_stats(centers: Any, bonafide_embeddings: Any, spoof_embeddings: Any = None) -> dict[str, Any]:
    """Numbers for logging how the centers sit among the embeddings.

    centers: (K, D) tensor or BonafideCenters; bonafide/spoof embeddings: (N, D).
    Returns ``cluster_sizes`` (bonafide count per center, list of K ints),
    ``empty_clusters``, ``bonafide_similarity`` and ``spoof_similarity`` (mean cosine
    to the nearest center, floats). A similarity whose embeddings are missing or
    empty is left out rather than reported as NaN.
    """
    center_tensor = getattr(centers, "centers", centers)
    if center_tensor is None:
        raise CblError("cluster_stats needs fitted centers, got None")
    c = F.normalize(torch.as_tensor(center_tensor).detach().float().cpu(), dim=-1)
    stats: dict[str, Any] = {}
    bonafide = _as_unit_float(bonafide_embeddings, "bonafide embeddings").cpu()
    if bonafide.shape[0]:
        nearest, assignment = (bonafide @ c.T).max(dim=1)
        sizes = torch.bincount(assignment, minlength=c.shape[0])
        stats["cluster_sizes"] = [int(v) for v in sizes]
        stats["empty_clusters"] = int((sizes == 0).sum())
        stats["bonafide_similarity"] = float(nearest.mean())
    else:
        stats["cluster_sizes"] = [0] * c.shape[0]
        stats["empty_clusters"] = int(c.shape[0])
    if spoof_embeddings is not None:
        spoof = _as_unit_float(spoof_embeddings, "spoof embeddings").cpu()
        if spoof.shape[0]:
            stats["spoof_similarity"] = float((spoof @ c.T).max(dim=1).values.mean())
    return stats
