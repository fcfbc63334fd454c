"""The report's figures, each a function from plain arrays to PNG bytes.

Figures are built with :class:`matplotlib.figure.Figure` directly, never through
``pyplot``: no GUI backend is chosen, no global figure state is kept, and a user
who imports cbl in a notebook keeps their own backend (matplotlib's advice for
headless use). Every figure has a title, axis labels and a legend.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, MaxNLocator, NullLocator

from cbl.metrics import compute_det_curve, compute_eer
from cbl.report.tables import natural_key

__all__ = [
    "ablation_panels",
    "attack_bars",
    "det_curves",
    "distinct_colours",
    "embedding_scatter",
    "importance_bars",
    "keep_legend",
    "learning_curves",
    "png_bytes",
]

_DPI = 100
# line style and end marker per trial state: an early-stopped trial must look cut, not finished
_STATE_STYLE: dict[str, tuple[Any, str | None]] = {
    "finished": ("-", None),
    "stopped": ("--", "X"),
    "error": (":", "x"),
    "running": ("-.", ">"),
}


def png_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, bbox_inches="tight")
    return buffer.getvalue()


def keep_legend(ax: Any, legend: Any) -> None:
    """Keep a first legend when a second one follows; unclipped, so a legend outside the axes is not cut off."""
    ax.add_artist(legend)
    legend.set_clip_on(False)


def distinct_colours(n: int, palette: str = "tab10") -> list[Any]:
    """n distinct colours: a qualitative palette while it lasts, then samples of a continuous map."""
    if n > 10 and palette == "tab10":
        palette = "tab20"
    cmap = colormaps[palette]
    count = getattr(cmap, "N", 256)
    if n <= count <= 20:
        order = list(range(count))
        if palette == "tab20":  # the 10 dark shades first, then their light pairs
            order = order[0::2] + order[1::2]
        return [cmap(i) for i in order[:n]]
    return [colormaps["turbo"](x) for x in np.linspace(0.05, 0.95, max(n, 1))]


# --------------------------------------------------------------------------- sweep
def learning_curves(
    curves: Sequence[tuple[str, str, list[int], list[float]]],
    best: str | None = None,
    band: Sequence[tuple[int, float, float]] = (),
) -> bytes:
    """Dev EER per epoch. curves: (label, state, epochs, dev EERs in [0, 1]); ``best`` is the best trial's label;
    ``band``: (epoch, low, high) of the best trial's 95% CI, shaded."""
    fig = Figure(figsize=(10, 5.5))
    ax = fig.subplots()
    if band:
        ax.fill_between(
            [e for e, _, _ in band],
            [100 * low for _, low, _ in band],
            [100 * high for _, _, high in band],
            color="0.6",
            alpha=0.25,
            linewidth=0,
        )
    palette = distinct_colours(len(curves))
    for (label, state, epochs, eers), colour in zip(curves, palette, strict=True):
        if not epochs:
            continue
        style, marker = _STATE_STYLE.get(state, ("-", None))
        y = [100 * e for e in eers]
        width = 2.6 if label == best else 1.4
        ax.plot(epochs, y, linestyle=style, color=colour, linewidth=width, marker="o", markersize=3, label=label)
        if marker:  # where the trial was cut
            ax.plot(
                epochs[-1], y[-1], marker=marker, color=colour, markersize=11, markeredgecolor="black", linestyle="none"
            )
    ax.set_xlabel("epoch")
    ax.set_ylabel("dev EER [%]")
    ax.set_title(f"Dev EER per epoch, {len(curves)} trials (thick line: best trial)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    trials_legend = ax.legend(
        title="trial",
        fontsize=8,
        title_fontsize=9,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        ncol=1 if len(curves) <= 16 else 2,
    )
    keep_legend(ax, trials_legend)
    drawn = {state for _, state, epochs, _ in curves if epochs and state in _STATE_STYLE}
    states = sorted(drawn, key=list(_STATE_STYLE).index)
    handles = [
        Line2D(
            [],
            [],
            color="0.3",
            linestyle=_STATE_STYLE[s][0],
            marker=_STATE_STYLE[s][1],
            markersize=9,
            markeredgecolor="black",
            label={
                "stopped": "stopped early (ASHA)",
                "finished": "finished",
                "error": "errored",
                "running": "still running",
            }[s],
        )
        for s in states
    ]
    ax.legend(
        handles=handles, title="state", fontsize=8, title_fontsize=9, loc="lower left", bbox_to_anchor=(1.01, 0.0)
    )
    return png_bytes(fig)


def importance_bars(importance: dict[str, float], trials: int) -> bytes:
    """Horizontal bars of fANOVA importance, largest on top."""
    items = sorted(importance.items(), key=lambda kv: kv[1])
    fig = Figure(figsize=(7, 0.5 * len(items) + 1.6))
    ax = fig.subplots()
    ax.barh(
        [k for k, _ in items],
        [v for _, v in items],
        color="tab:blue",
        label=f"fANOVA importance ({trials} finished trials)",
    )
    for i, (_, v) in enumerate(items):
        ax.text(v, i, f" {v:.2f}", va="center", fontsize=9)
    ax.set_xlim(0, max(1.0, max(v for _, v in items) * 1.15))
    ax.set_xlabel("share of the dev-EER variance explained")
    ax.set_ylabel("parameter")
    ax.set_title("Hyperparameter importance for dev EER")
    ax.legend(loc="lower right", fontsize=8)
    return png_bytes(fig)


def ablation_panels(panels: Sequence[tuple[str, Sequence[tuple[str, float, float]]]], title: str) -> bytes:
    """One panel per single-parameter ablation: best and last-epoch dev EER for each value.

    panels: (parameter, [(value label, best dev EER, last-epoch dev EER), ...]), EERs in [0, 1].
    """
    fig = Figure(figsize=(4.2 * max(1, len(panels)), 4.6))
    axes = fig.subplots(1, max(1, len(panels)), squeeze=False)[0]
    for ax, (parameter, values) in zip(axes, panels, strict=True):
        x = np.arange(len(values))
        best = [100 * b for _, b, _ in values]
        last = [100 * last for _, _, last in values]
        bars = ax.bar(x - 0.2, best, 0.4, color="tab:blue", edgecolor="black", linewidth=0.5, label="best epoch")
        ax.bar_label(bars, labels=[f"{v:.1f}" for v in best], fontsize=8, padding=1)
        bars = ax.bar(x + 0.2, last, 0.4, color="tab:orange", edgecolor="black", linewidth=0.5, label="last epoch")
        ax.bar_label(bars, labels=[f"{v:.1f}" for v in last], fontsize=8, padding=1)
        ax.set_xticks(x, [label for label, _, _ in values], fontsize=9)
        ax.set_xlabel(parameter)
        ax.set_ylabel("dev EER [%]")
        ax.margins(y=0.18)
        ax.grid(axis="y", alpha=0.3)
        ax.set_title(parameter, fontsize=10)
    axes[0].legend(fontsize=8, loc="upper left")
    fig.suptitle(title, fontsize=11)
    return png_bytes(fig)


# --------------------------------------------------------------------------- models
_DET_TICKS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8)


def det_curves(curves: Sequence[tuple[str, np.ndarray, np.ndarray]], split: str = "eval") -> bytes:
    """DET curves on normal-deviate (probit) axes. curves: (label, bonafide scores, spoof scores)."""
    from scipy.stats import norm

    fig = Figure(figsize=(6.5, 6.5))
    ax = fig.subplots()
    smallest = min(0.5 / max(len(b), len(s)) for _, b, s in curves)
    low = max(0.0005, min(0.01, smallest))
    high = 0.8

    def probit(rate: Any) -> Any:  # (N,) rates or one rate, on the probit axis
        return norm.ppf(np.clip(rate, low, high))

    for (label, bonafide, spoof), colour in zip(curves, distinct_colours(len(curves)), strict=True):
        frr, far, _ = compute_det_curve(bonafide, spoof)
        eer, _ = compute_eer(bonafide, spoof)
        ax.plot(probit(far), probit(frr), color=colour, linewidth=2, label=f"{label}: EER {100 * eer:.2f}%")
        ax.plot(probit(eer), probit(eer), marker="o", color=colour, markeredgecolor="black", markersize=8)
    ax.plot(
        [probit(low), probit(high)],
        [probit(low), probit(high)],
        color="0.6",
        linestyle=":",
        label="miss = false alarm (EER points on it)",
    )
    ticks = [t for t in _DET_TICKS if low <= t <= high]
    labels = [f"{100 * t:g}" for t in ticks]
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(FixedLocator([norm.ppf(t) for t in ticks]))
        axis.set_minor_locator(NullLocator())
    ax.set_xticklabels(labels)
    ax.set_yticklabels(labels)
    ax.set_xlim(probit(low), probit(high))
    ax.set_ylim(probit(low), probit(high))
    ax.set_aspect("equal")
    ax.grid(alpha=0.35)
    ax.set_xlabel("false-alarm rate: spoofs accepted [%]")
    ax.set_ylabel("miss rate: bonafide rejected [%]")
    ax.set_title(f"DET curves on the {split} split (probit axes)")
    ax.legend(loc="upper right", fontsize=8)
    return png_bytes(fig)


def attack_bars(models: Sequence[tuple[str, dict[str, float]]], seen: set[str]) -> bytes:
    """Grouped bars of per-attack EER (plus "pooled"); attacks unseen in training are hatched and shaded.

    models: (label, {attack: EER in [0, 1]}).
    """
    attacks = sorted({a for _, rows in models for a in rows if a != "pooled"}, key=natural_key)
    ordered = [a for a in attacks if a in seen] + [a for a in attacks if a not in seen] + ["pooled"]
    fig = Figure(figsize=(max(7.0, 0.55 * len(ordered) * max(1, len(models)) + 2), 4.8))
    ax = fig.subplots()
    width = 0.8 / max(1, len(models))
    x = np.arange(len(ordered))
    annotate = len(ordered) * len(models) <= 24
    for m, ((label, rows), colour) in enumerate(zip(models, distinct_colours(len(models)), strict=True)):
        heights = [100 * rows.get(a, math.nan) for a in ordered]
        hatches = ["//" if a not in seen and a != "pooled" else "" for a in ordered]
        bars = ax.bar(
            x + (m - (len(models) - 1) / 2) * width,
            heights,
            width,
            color=colour,
            label=label,
            edgecolor="black",
            linewidth=0.5,
        )
        for bar, hatch in zip(bars, hatches, strict=True):
            bar.set_hatch(hatch)
        if annotate:
            ax.bar_label(bars, labels=["" if math.isnan(h) else f"{h:.1f}" for h in heights], fontsize=7, padding=1)
    unseen = [i for i, a in enumerate(ordered) if a not in seen and a != "pooled"]
    if unseen:
        ax.axvspan(unseen[0] - 0.5, unseen[-1] + 0.5, color="0.92", zorder=0)
    ax.axvline(len(ordered) - 1.5, color="0.5", linewidth=0.8)
    ax.set_xticks(
        x,
        [
            f"{a}\n(unseen)" if i in unseen else (f"{a}\n(seen)" if a != "pooled" else "all\nspoofs")
            for i, a in enumerate(ordered)
        ],
        fontsize=8,
    )
    ax.set_xlabel("attack (shaded + hatched: not in the train split)")
    ax.set_ylabel("EER [%] (bonafide vs that attack)")
    ax.set_title("Per-attack EER on the eval split")
    ax.margins(y=0.15)
    handles, _ = ax.get_legend_handles_labels()
    handles.append(Patch(facecolor="white", edgecolor="black", hatch="//", label="attack unseen in training"))
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", alpha=0.3)
    return png_bytes(fig)


def embedding_scatter(
    points: np.ndarray,
    labels: np.ndarray,
    attacks: Sequence[str],
    nearest: np.ndarray | None,
    centers: np.ndarray | None,
    title: str,
    axis_labels: tuple[str, str],
) -> bytes:
    """2-D projection: bonafide coloured by nearest center (circles), spoofs by attack (crosses), centers as stars.

    points: (N, 2); labels: (N,); nearest: (N,) or None; centers: (K, 2) or None.
    """
    fig = Figure(figsize=(9.5, 6.5))
    ax = fig.subplots()
    bona_handles, bona_title = _bonafide_points(ax, points, labels == 1, nearest, centers)
    spoof_handles = _spoof_points(ax, points, labels, attacks)
    first = ax.legend(
        handles=bona_handles,
        title=bona_title,
        fontsize=8,
        title_fontsize=9,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        ncol=1 if len(bona_handles) <= 12 else 2,
    )
    keep_legend(ax, first)
    if spoof_handles:  # none in the bonafide-only projection
        ax.legend(
            handles=spoof_handles,
            title="spoof, by attack",
            fontsize=8,
            title_fontsize=9,
            loc="lower left",
            bbox_to_anchor=(1.01, 0.0),
            ncol=1 if len(spoof_handles) <= 12 else 2,
        )
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    return png_bytes(fig)


def _bonafide_points(
    ax: Any, points: np.ndarray, bonafide: np.ndarray, nearest: np.ndarray | None, centers: np.ndarray | None
) -> tuple[list[Any], str]:
    """Bonafide points coloured by nearest center, and the centers as stars (one colour for all without centers);
    their legend handles and the legend's title."""
    bona_handles: list[Any] = []
    if nearest is not None and centers is not None:
        cluster_colours = distinct_colours(len(centers))
        for k, colour in enumerate(cluster_colours):
            mask = bonafide & (nearest == k)
            handle = ax.scatter(
                points[mask, 0],
                points[mask, 1],
                s=20,
                color=colour,
                alpha=0.85,
                marker="o",
                edgecolors="black",
                linewidths=0.3,
                zorder=3,
                label=f"c{k} ({int(mask.sum())})",
            )
            bona_handles.append(handle)
        for k, (cx, cy) in enumerate(centers):
            ax.scatter(
                cx, cy, s=320, marker="*", color=cluster_colours[k], edgecolors="black", linewidths=1.2, zorder=5
            )
            ax.annotate(f"c{k}", (cx, cy), xytext=(6, 6), textcoords="offset points", fontsize=9, weight="bold")
        bona_handles.append(
            Line2D(
                [],
                [],
                marker="*",
                color="0.5",
                markeredgecolor="black",
                markersize=14,
                linestyle="none",
                label="bonafide center",
            )
        )
        bona_title = "bonafide, by nearest center"
    else:
        bona_handles.append(
            ax.scatter(
                points[bonafide, 0],
                points[bonafide, 1],
                s=20,
                color="tab:blue",
                alpha=0.85,
                edgecolors="black",
                linewidths=0.3,
                zorder=3,
                label=f"bonafide ({int(bonafide.sum())})",
            )
        )
        bona_title = "bonafide (no centers: ce_only)"
    return bona_handles, bona_title


def _spoof_points(ax: Any, points: np.ndarray, labels: np.ndarray, attacks: Sequence[str]) -> list[Any]:
    """Spoof points as crosses, one colour per attack; their legend handles."""
    attack_array = np.asarray(attacks, dtype=object)
    spoof_kinds = sorted({a for a, label in zip(attacks, labels, strict=True) if label == 0}, key=natural_key)
    spoof_handles = []
    for attack, colour in zip(
        spoof_kinds, distinct_colours(len(spoof_kinds), "Dark2" if len(spoof_kinds) <= 8 else "tab20"), strict=True
    ):
        mask = (labels == 0) & (attack_array == attack)
        spoof_handles.append(
            ax.scatter(
                points[mask, 0],
                points[mask, 1],
                s=20,
                color=colour,
                marker="x",
                alpha=0.6,
                linewidths=1.0,
                zorder=2,
                label=f"{attack} ({int(mask.sum())})",
            )
        )
    return spoof_handles
