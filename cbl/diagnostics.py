"""How the embedding sits, every epoch: its spread, the centers' sizes, and whether the run collapsed.

A cluster loss can reach a low value by a degenerate solution: every embedding
(bonafide and spoof) on one or two points, most centers holding no bonafide at
all. The dev EER alone does not say why a run stopped learning; these numbers do.
:func:`embedding_diagnostics` computes them from the dev embeddings the epoch
scores anyway (no extra pass); :func:`collapse_warning` turns a run's last epoch
into one line naming what to change.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from cbl.centers import cluster_stats
from cbl.config import load_config
from cbl.errors import CblError, join_first

__all__ = [
    "COLLAPSE_MEAN_COSINE",
    "collapse_reasons",
    "collapse_warning",
    "effective_rank",
    "embedding_diagnostics",
    "mean_pairwise_cosine",
    "sweep_collapse_warning",
]

# Collapse thresholds, from the demo (tiny random-weight model): a random-init model's dev embeddings have
# a mean pairwise cosine of ~0.9-0.97 (one narrow cone), trained healthy runs 0.1-0.6, collapsed runs >= 0.98
COLLAPSE_MEAN_COSINE = 0.95
COLLAPSE_SIMILARITY_GAP = 0.05  # bonafide and spoof equally close to the centers: the centers tell nothing apart
COLLAPSE_EMPTY_SHARE = 0.5  # more than half of the centers hold no dev bonafide


def _unit(embeddings: Any) -> torch.Tensor:
    return F.normalize(torch.as_tensor(embeddings).detach().float().cpu(), dim=-1)


def effective_rank(embeddings: Any) -> float:
    """exp(entropy) of the normalised singular values of the (N, D) unit embeddings (Roy & Vetterli, 2007).

    1.0 when every embedding is the same vector; D when they spread evenly over D
    orthogonal directions. Computed on the uncentred matrix, so a collapse onto
    one point reads 1 (centring would measure the noise around that point).
    NaN for fewer than two embeddings.
    """
    z = _unit(embeddings)
    if z.shape[0] < 2:
        return math.nan
    singular = torch.linalg.svdvals(z.double())
    p = singular / singular.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def mean_pairwise_cosine(embeddings: Any) -> float:
    """Mean cosine over all pairs i != j of the (N, D) embeddings, in O(N D): (|sum z|^2 - N) / (N (N - 1)).

    ~0 for embeddings spread over the sphere, 1 when all are the same point. NaN for N < 2.
    """
    z = _unit(embeddings).double()
    n = z.shape[0]
    if n < 2:
        return math.nan
    return float(((z.sum(dim=0) ** 2).sum() - n) / (n * (n - 1)))


def embedding_diagnostics(embeddings: Any, labels: Any, centers: Any = None) -> dict[str, Any]:
    """The per-epoch diagnostics of (N, D) dev embeddings with labels (N,) 1/0 and centers (K, D) or None.

    Keys: ``embedding_effective_rank``, ``embedding_mean_cosine`` (all dev
    embeddings), and with centers ``cluster_empty_clusters``, ``cluster_sizes``
    (list of K), ``cluster_size_c{k}`` (one scalar per center, for TensorBoard),
    ``cluster_bonafide_similarity``, ``cluster_spoof_similarity`` (mean cosine to
    the nearest center) and ``cluster_similarity_gap`` (their difference).
    """
    z = _unit(embeddings)
    labels = torch.as_tensor(labels).reshape(-1)
    out: dict[str, Any] = {
        "embedding_effective_rank": effective_rank(z),
        "embedding_mean_cosine": mean_pairwise_cosine(z),
    }
    center_tensor = getattr(centers, "centers", centers)
    if center_tensor is None:
        return out
    stats = cluster_stats(center_tensor, z[labels == 1], z[labels == 0])
    out.update({key if key.startswith("cluster_") else f"cluster_{key}": value for key, value in stats.items()})
    out.update({f"cluster_size_c{k}": size for k, size in enumerate(stats["cluster_sizes"])})
    if "bonafide_similarity" in stats and "spoof_similarity" in stats:
        out["cluster_similarity_gap"] = stats["bonafide_similarity"] - stats["spoof_similarity"]
    return out


def collapse_reasons(metrics: Mapping[str, Any]) -> list[str]:
    """What in one epoch's metrics says the embedding collapsed (empty list: it did not).

    A collapse is a spread gone (mean pairwise cosine >= 0.95) or centers that no
    longer tell the classes apart (spoofs as close to them as bonafide, both >= 0.9).
    Empty centers alone are not one: a center that the embeddings left early in a
    run moves back a step per refit (``centers.refit_step``); more than half of them
    empty is named beside a collapse.
    """
    reasons = []
    cosine = metrics.get("embedding_mean_cosine")
    if isinstance(cosine, (int, float)) and cosine >= COLLAPSE_MEAN_COSINE:
        reasons.append(f"mean pairwise cosine {cosine:.2f}")
    bonafide, spoof = metrics.get("cluster_bonafide_similarity"), metrics.get("cluster_spoof_similarity")
    if (
        isinstance(bonafide, (int, float))
        and isinstance(spoof, (int, float))
        and spoof >= 0.9
        and bonafide - spoof < COLLAPSE_SIMILARITY_GAP
    ):
        reasons.append(f"bonafide and spoof both at cosine {bonafide:.2f}/{spoof:.2f} to the nearest center")
    sizes = metrics.get("cluster_sizes")
    empty = metrics.get("cluster_empty_clusters")
    if (
        reasons
        and isinstance(sizes, list)
        and sizes
        and isinstance(empty, int)
        and empty > COLLAPSE_EMPTY_SHARE * len(sizes)
    ):
        reasons.append(f"{empty} of {len(sizes)} centers empty")
    return reasons


def collapse_warning(metrics: Mapping[str, Any], config: Any = None) -> str | None:
    """One warning line when the epoch's metrics show a collapse, naming what to change; else None."""
    reasons = collapse_reasons(metrics)
    if not reasons:
        return None
    advice = "lower the learning rates (optim.lr, optim.head_lr) or add optim.warmup_epochs"
    loss = getattr(config, "loss", None)
    if loss is not None and getattr(loss, "type", "") != "ce_only":
        advice = (
            "lower loss.alpha (stable below ~0.8), centers.refit_step or the learning rates (optim.lr, optim.head_lr)"
        )
        if getattr(loss, "attraction", "distance") != "distance" or not getattr(loss, "spread_weight", 1.0):
            advice = "use loss.attraction=distance and loss.spread_weight=1 (the defaults), or " + advice
    return f"warning: the embedding collapsed by epoch {metrics.get('epoch', '?')} ({'; '.join(reasons)}): {advice}"


def sweep_collapse_warning(trials: Any) -> str | None:
    """One line for a sweep: which trials ended with a collapsed embedding (``TrialInfo`` list), or None."""
    collapsed = [(t, collapse_reasons(t.history[-1])) for t in trials if t.history]
    collapsed = [(t, reasons) for t, reasons in collapsed if reasons]
    if not collapsed:
        return None
    first, reasons = collapsed[0]
    try:
        config = load_config(first.path / "config.yaml")
    except (OSError, CblError):
        config = None
    advice = collapse_warning(first.history[-1], config) or ""
    advice = advice.split("): ", 1)[-1]
    shown = join_first([t.trial_id for t, _ in collapsed])
    return (
        f"warning: {len(collapsed)} of {len(trials)} trials ended with a collapsed embedding ({shown}; "
        f"{first.trial_id}: {'; '.join(reasons)}): {advice}"
    )
