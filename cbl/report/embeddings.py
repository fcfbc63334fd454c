"""The report's view of how the embedding sits: every trial's diagnostics, and a best model's dev embeddings.

Per trial, from its metrics.jsonl (:mod:`cbl.diagnostics` wrote them each epoch):
the last epoch's empty centers, center sizes by center id, bonafide and spoof
similarity to the nearest center, spread and the collapse verdict (a table), and
the same per epoch (a figure). Per analysed model (:mod:`cbl.report.models`): its
dev embeddings projected to 2-D with the centers, then its bonafide alone with a
projection fitted on them, where the sub-populations the centers hold show.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from cbl.diagnostics import collapse_reasons
from cbl.report import figures
from cbl.report.document import Heading, Paragraph, Table, Writer
from cbl.report.models import ModelView
from cbl.report.tables import rank_trials
from cbl.sweep.store import TrialInfo

__all__ = ["diagnostics_curves", "diagnostics_section", "diagnostics_table", "embedding_section"]


def diagnostics_table(trials: Sequence[TrialInfo], keys: Sequence[str], mode: str = "min") -> Table | None:
    """The last epoch's embedding diagnostics of every trial (see :mod:`cbl.diagnostics`), or None if none has any.

    Columns: empty centers of K, the centers' sizes (dev bonafide nearest to each
    center, by center id), mean cosine of dev bonafide and spoof to the nearest
    center and their gap, the dev embeddings' mean pairwise cosine and effective rank.
    """
    rows = []
    for t in rank_trials(trials, mode):
        last = t.history[-1] if t.history else {}
        if "embedding_mean_cosine" not in last:
            continue
        sizes = last.get("cluster_sizes")
        rows.append(
            [
                t.trial_id,
                str(last.get("epoch", "-")),
                f"{last['cluster_empty_clusters']}/{len(sizes)}" if isinstance(sizes, list) else "-",
                " ".join(str(n) for n in sizes) if isinstance(sizes, list) else "-",
                _number(last, "cluster_bonafide_similarity"),
                _number(last, "cluster_spoof_similarity"),
                _number(last, "cluster_similarity_gap"),
                _number(last, "embedding_mean_cosine"),
                _number(last, "embedding_effective_rank", 1),
                "yes" if collapse_reasons(last) else "no",
            ]
        )
    if not rows:
        return None
    return Table(
        [
            "trial",
            "epoch",
            "empty centers",
            "center sizes (c0, c1, ...)",
            "bonafide sim",
            "spoof sim",
            "gap",
            "mean cos",
            "effective rank",
            "collapsed",
        ],
        rows,
        right=(1, 4, 5, 6, 7, 8),
    )


def _number(metrics: dict[str, Any], key: str, digits: int = 2) -> str:
    value = metrics.get(key)
    return f"{value:.{digits}f}" if isinstance(value, float) else "-"


_DIAGNOSTIC_SERIES = (
    "cluster_bonafide_similarity",
    "cluster_spoof_similarity",
    "cluster_empty_clusters",
    "embedding_mean_cosine",
)


def diagnostics_curves(curves: Sequence[tuple[str, list[int], list[dict[str, Any]]]]) -> bytes:
    """Per-epoch embedding diagnostics of each trial: similarities to the nearest center, spread, empty centers.

    curves: (label, epochs, that trial's per-epoch metrics). Left: mean cosine of
    dev bonafide (solid) and spoof (dashed) to the nearest center; middle: mean
    pairwise cosine of all dev embeddings (1 = collapsed onto one point); right:
    centers holding no dev bonafide. Trials without centers (ce_only) appear in
    the middle panel only.
    """
    fig = Figure(figsize=(15, 4.8))
    similarity, spread, empty = fig.subplots(1, 3)
    for (label, epochs, metrics), colour in zip(curves, figures.distinct_colours(len(curves)), strict=True):
        bonafide, spoof, empties, cosine = ([m.get(k, math.nan) for m in metrics] for k in _DIAGNOSTIC_SERIES)
        if any("cluster_bonafide_similarity" in m for m in metrics):
            similarity.plot(epochs, bonafide, color=colour, marker="o", markersize=3, label=label)
            similarity.plot(epochs, spoof, color=colour, linestyle="--", marker="x", markersize=4)
            empty.plot(epochs, empties, color=colour, marker="o", markersize=3)
        spread.plot(epochs, cosine, color=colour, marker="o", markersize=3, label=label)
    similarity.set_title("Similarity to the nearest center (dev)")
    similarity.set_ylabel("mean cosine")
    handles = [
        Line2D([], [], color="0.3", marker="o", label="bonafide"),
        Line2D([], [], color="0.3", linestyle="--", marker="x", label="spoof"),
    ]
    figures.keep_legend(similarity, similarity.legend(handles=handles, fontsize=8, loc="lower left"))
    spread.set_title("Spread: mean pairwise cosine (dev)")
    spread.set_ylabel("mean pairwise cosine (1 = one point)")
    spread.set_ylim(-0.05, 1.05)
    empty.set_title("Centers holding no dev bonafide")
    empty.set_ylabel("empty centers")
    empty.yaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in (similarity, spread, empty):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    spread.legend(
        title="trial",
        fontsize=7,
        title_fontsize=8,
        loc="upper left",
        bbox_to_anchor=(2.25, 1.0),
        ncol=1 if len(curves) <= 16 else 2,
    )
    return figures.png_bytes(fig)


def diagnostics_section(w: Writer, ranked: list[TrialInfo], keys: list[str], mode: str) -> None:
    """How each trial's embedding sat at its last epoch, and per epoch (cbl.diagnostics)."""
    table = diagnostics_table(ranked, keys, mode)
    w.add(Heading(2, "Embedding diagnostics"))
    if table is None:
        w.add(Paragraph("No trial recorded embedding diagnostics (runs from before they existed)."))
        return
    w.add(
        Paragraph(
            "At each trial's last epoch, on the dev split: centers holding no bonafide, the centers' sizes "
            "(by center id: a refit keeps each id on its cluster), the mean cosine of bonafide and of "
            "spoofs to the nearest center and their gap, and the spread of all dev embeddings (mean "
            "pairwise cosine, 1 = one point; effective rank, 1 = one direction). `collapsed`: what "
            "`train` and `run` warn about."
        ),
        table,
    )
    curves = [
        (t.trial_id, [h["epoch"] for h in t.history], t.history)
        for t in ranked
        if any("embedding_mean_cosine" in h for h in t.history)
    ]
    w.figure(
        "diagnostics.png",
        diagnostics_curves(curves),
        "embedding diagnostics per epoch",
        "Solid: bonafide, dashed: spoofs; a healthy cluster loss keeps the solid line high, the dashed one "
        "low and the spread below 1.",
    )


def embedding_section(w: Writer, v: ModelView) -> None:
    from sklearn.decomposition import PCA

    w.add(Heading(3, f"Dev embeddings: {v.role} `{v.trial.trial_id}`"))
    if len(v.dev_embeddings) < 3:
        w.add(Paragraph("Too few dev embeddings for a projection."))
        return
    pca = PCA(n_components=2, random_state=0).fit(v.dev_embeddings)
    ratio = pca.explained_variance_ratio_
    centers = pca.transform(v.centers) if v.centers is not None else None
    sample = (
        f"{len(v.dev_embeddings)} of {v.dev_total}" if len(v.dev_embeddings) < v.dev_total else f"all {v.dev_total}"
    )
    title = (
        f"Dev embeddings, {v.role} {v.trial.trial_id} ({v.loss_type}"
        f"{f', K={len(v.centers)}' if v.centers is not None else ''}), PCA to 2-D"
    )
    png = figures.embedding_scatter(
        pca.transform(v.dev_embeddings),
        v.dev_labels,
        v.dev_attacks,
        v.nearest,
        centers,
        title,
        (f"PC 1 ({100 * ratio[0]:.0f}% of variance)", f"PC 2 ({100 * ratio[1]:.0f}% of variance)"),
    )
    w.figure(
        f"embeddings_{v.trial.trial_id}.png",
        png,
        f"dev embeddings of {v.trial.trial_id}",
        f"{sample} dev utterances; bonafide coloured by their nearest center, whose id (c0, c1, ...) is the "
        "one of the per-center curves `cluster_size_c<k>` in TensorBoard and of the diagnostics table. The "
        f"two components keep {100 * ratio.sum():.0f}% of the variance of the unit-norm embeddings"
        + ("." if ratio.sum() >= 0.8 else ", so distances here are only a rough view of cosine distances."),
    )
    bonafide = v.dev_labels == 1
    if v.centers is None or v.nearest is None or int(bonafide.sum()) < 3:
        return
    # the bonafide alone: the class axis no longer dominates, so the sub-populations the centers hold show
    inner = PCA(n_components=2, random_state=0).fit(v.dev_embeddings[bonafide])
    share = inner.explained_variance_ratio_
    png = figures.embedding_scatter(
        inner.transform(v.dev_embeddings[bonafide]),
        v.dev_labels[bonafide],
        [a for a, keep in zip(v.dev_attacks, bonafide, strict=True) if keep],
        v.nearest[bonafide],
        inner.transform(v.centers),
        f"Dev bonafide and the {len(v.centers)} centers, {v.role} {v.trial.trial_id}, PCA of the bonafide to 2-D",
        (f"PC 1 ({100 * share[0]:.0f}% of the bonafide variance)", f"PC 2 ({100 * share[1]:.0f}%)"),
    )
    w.figure(
        f"bonafide_clusters_{v.trial.trial_id}.png",
        png,
        f"dev bonafide clusters of {v.trial.trial_id}",
        "The same bonafide with a projection fitted on them alone: the clusters the centers hold.",
    )
