"""Bootstrap confidence intervals of the EER, and the paired bootstrap of two systems' EER difference.

A bootstrap replicate is the EER of a resample of the trials: by utterance (each
class resampled on its own, so every replicate keeps the bonafide and spoof counts),
or, with ``groups`` (speakers), a cluster bootstrap: draw groups with replacement
and take all their utterances (Efron & Tibshirani, *An Introduction to the
Bootstrap*, 1993, ch. 13 for percentile intervals; Field & Welsh, "Bootstrapping
clustered data", JRSS B 2007, for resampling clusters). The interval is the
percentile interval of the replicates.

A replicate's EER is exactly what :func:`cbl.metrics.compute_eer` gives on the
resampled trials (the ASVspoof reference algorithm, ties included), computed
without building the resample: the scores are sorted once (stable, bonafide first on
ties, as the reference does), a resample is a vector of counts per trial, and the
DET path of the resample is the sorted order walked with those counts. Along that
path frr - far only grows, so the reference's "first cut minimising |frr - far|" is
one of the two points around its zero crossing: a bisection over the cumulative
counts finds the trial where it crosses and integer arithmetic the exact step
inside that trial's copies. All resamples of a chunk are rows of one matrix.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
from torch import Tensor

from cbl.errors import CblError
from cbl.metrics import compute_eer, finite_scores

__all__ = [
    "UNKNOWN_SPEAKERS",
    "EerDifference",
    "EerInterval",
    "MeanInterval",
    "Seed",
    "TooFewGroups",
    "bootstrap_eer_ci",
    "bootstrap_eer_replicates",
    "eer_interval_fields",
    "format_interval",
    "format_range",
    "mean_interval",
    "paired_bootstrap_eer",
    "speaker_groups",
    "weighted_eer",
]

Seed = int | Sequence[int]  # numpy.random.default_rng's seeds: an int, or ints such as (run seed, epoch)

# Matrix cells (resamples x trials) per chunk: 2 M int64 cells are 16 MB a matrix, a few
# matrices alive at once; large enough that numpy's per-call overhead is negligible.
CHUNK_CELLS = 2_000_000
# Fewer valid replicates than this share (a cluster resample without bonafide or without
# spoof has no EER) means too few groups hold both classes for the interval to mean much:
# with one bonafide-only group among many, a third of the resamples miss it.
MIN_VALID_SHARE = 0.9


# What protocols write where they do not name a speaker (the folder protocol's "-").
UNKNOWN_SPEAKERS = ("", "-")


class TooFewGroups(CblError):
    """A group bootstrap where too many resamples lack a class: too few groups hold both."""


class EerInterval(NamedTuple):
    eer: float  # the EER of the trials as given (cbl.metrics.compute_eer)
    low: float  # percentile interval of the bootstrap replicates
    high: float
    n_resamples: int  # replicates the interval is made of (cluster resamples missing a class are left out)
    level: float  # e.g. 0.95


class EerDifference(NamedTuple):
    difference: float  # EER(a) - EER(b) on the trials as given
    low: float  # percentile interval of the paired replicates of the difference
    high: float
    p_value: float  # two-sided, H0: no difference (see paired_bootstrap_eer)
    n_resamples: int
    level: float


class MeanInterval(NamedTuple):
    mean: float
    std: float  # sample standard deviation (n - 1); NaN for one value
    low: float  # Student-t interval of the mean at ``level``; NaN for one value
    high: float
    n: int
    level: float


# ----------------------------------------------------------------------------- input
def _labels(labels: Any, size: int) -> np.ndarray:
    label_array = np.asarray(labels.detach().cpu() if isinstance(labels, Tensor) else labels).reshape(-1)
    if label_array.size != size:
        raise CblError(f"{size} scores but {label_array.size} labels")
    if not np.isin(label_array, (0, 1)).all():
        raise CblError("labels must be 1 (bonafide) or 0 (spoof)")
    label_array = label_array.astype(np.int64)
    bonafide = int(label_array.sum())
    if bonafide == 0 or bonafide == size:
        raise CblError(
            f"an error rate needs both bonafide and spoof scores, got {bonafide} bonafide and {size - bonafide} spoof"
        )
    return label_array


def _check_settings(n_resamples: int, level: float) -> None:
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 1:
        raise CblError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    if not 0.0 < level < 1.0:
        raise CblError(f"level must lie strictly between 0 and 1, got {level!r}")


class _SortedTrials(NamedTuple):
    order: np.ndarray  # (N,) trial indices in the reference's sort order
    rank: np.ndarray  # (N,) the sorted position of each trial (the inverse of order)
    shift: np.ndarray  # (N,) int64, 32 at a bonafide sorted position, 0 at a spoof one (see _eer_of_counts)


def _sort(scores: np.ndarray, labels: np.ndarray) -> _SortedTrials:
    """Sort by score, bonafide before spoof on ties (compute_det_curve's stable sort of bonafide + spoof)."""
    order = np.lexsort((labels == 0, scores))
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return _SortedTrials(order, rank, np.where(labels[order] == 1, 32, 0).astype(np.int64))


# ----------------------------------------------------------------------------- the EER of counts
# A row's counts go into one int64 cumulative sum: bonafide counts in the high 32 bits, spoof
# counts in the low ones; exact while a resample holds fewer than 2**31 trials.
MAX_RESAMPLE_TRIALS = 2**31 - 1


def _eer_of_counts(trials: _SortedTrials, counts: np.ndarray) -> np.ndarray:
    """EER of each row of counts (R, N) (trial i taken counts[r, i] times, in the sorted order); NaN without a class."""
    cumulative = np.cumsum(np.left_shift(counts, trials.shift), axis=1)
    n_bonafide, n_spoof = cumulative[:, -1] >> 32, cumulative[:, -1] & 0xFFFFFFFF
    valid = (n_bonafide > 0) & (n_spoof > 0)
    nb = np.where(valid, n_bonafide, 1)
    ns = np.where(valid, n_spoof, 1)
    rows = np.arange(counts.shape[0])

    def point(boundary: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(bonafide rejected, spoof rejected) after the first ``boundary`` sorted trials."""
        packed = np.where(boundary > 0, cumulative[rows, np.maximum(boundary - 1, 0)], 0)
        return packed >> 32, packed & 0xFFFFFFFF

    # bisection for the first boundary where frr >= far, i.e. bonafide * ns >= (ns - spoof) * nb
    low, high = np.zeros_like(nb), np.full_like(nb, counts.shape[1])
    while np.any(high - low > 1):
        middle = (low + high) // 2
        bonafide, spoof = point(middle)
        crossed = bonafide * ns >= (ns - spoof) * nb
        high, low = np.where(crossed, middle, high), np.where(crossed, low, middle)
    before_bonafide, before_spoof = point(high - 1)
    crossing_is_bonafide = trials.shift[high - 1] > 0
    # the first step inside the crossing trial's copies where frr >= far
    bonafide_steps = -(-((ns - before_spoof) * nb) // ns) - before_bonafide
    spoof_steps = ns - before_spoof - (before_bonafide * ns) // nb
    steps = np.where(crossing_is_bonafide, bonafide_steps, spoof_steps)
    after = (
        before_bonafide + np.where(crossing_is_bonafide, steps, 0),
        before_spoof + np.where(crossing_is_bonafide, 0, steps),
    )
    step_bonafide = crossing_is_bonafide.astype(np.int64)
    before = (after[0] - step_bonafide, after[1] - (1 - step_bonafide))
    frr_before, far_before = before[0] / nb, (ns - before[1]) / ns
    frr_after, far_after = after[0] / nb, (ns - after[1]) / ns
    take_before = np.abs(frr_before - far_before) <= np.abs(frr_after - far_after)  # the reference's first minimum
    eer = np.where(take_before, (frr_before + far_before) / 2, (frr_after + far_after) / 2)
    return np.where(valid, eer, np.nan)


def weighted_eer(scores: Any, labels: Any, weights: Any) -> np.ndarray | float:
    """EER of the trials with trial i taken ``weights[..., i]`` times (non-negative integers).

    scores, labels: (N,), labels 1 bonafide / 0 spoof; weights: (N,) -> float, or
    (R, N) -> (R,). Equals :func:`cbl.metrics.compute_eer` of the repeated trials
    exactly (all ones: of the trials themselves); NaN where a row leaves a class empty.
    """
    score_array = finite_scores(scores, "scores")
    label_array = _labels(labels, score_array.size)
    weight_array = np.asarray(weights)
    if weight_array.shape[-1:] != score_array.shape or weight_array.ndim > 2:
        raise CblError(f"weights must have shape (N,) or (R, N) with N = {score_array.size}, got {weight_array.shape}")
    if not np.issubdtype(weight_array.dtype, np.integer) or (weight_array < 0).any():
        raise CblError("weights must be non-negative integers (how many times each trial is taken)")
    trials = _sort(score_array, label_array)
    if int(weight_array.sum(axis=-1).max()) > MAX_RESAMPLE_TRIALS:
        raise CblError(f"weights must sum to at most {MAX_RESAMPLE_TRIALS} trials a row")
    eers = _eer_of_counts(trials, np.atleast_2d(weight_array).astype(np.int64)[:, trials.order])
    return float(eers[0]) if weight_array.ndim == 1 else eers


# ----------------------------------------------------------------------------- resampling
class _Plan(NamedTuple):
    """What one resample draws: from each stratum, as many units as it has, with replacement."""

    strata: list[np.ndarray]  # trial indices of each class (by trial), or [arange(G)] (by group)
    group_of_trial: np.ndarray | None  # (N,) group index of each trial; None: the units are trials


def _plan(labels: np.ndarray, groups: Any) -> _Plan:
    if groups is None:  # by trial, bonafide and spoof apart: every resample keeps both counts
        return _Plan([np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)], None)
    group_list = [str(g) for g in (groups.tolist() if isinstance(groups, np.ndarray) else groups)]
    if len(group_list) != labels.size:
        raise CblError(f"{labels.size} scores but {len(group_list)} groups")
    _, group_of_trial = np.unique(np.asarray(group_list, dtype=object), return_inverse=True)
    group_of_trial = group_of_trial.reshape(-1)
    n_groups = int(group_of_trial.max()) + 1
    largest = int(np.bincount(group_of_trial).max())
    if n_groups * largest > MAX_RESAMPLE_TRIALS:
        raise CblError(
            f"{n_groups} groups of up to {largest} trials: a resample could pass {MAX_RESAMPLE_TRIALS} trials"
        )
    return _Plan([np.arange(n_groups)], group_of_trial)


def _draw_chunks(plan: _Plan, n_resamples: int, seed: Seed, n_trials: int) -> Iterator[list[np.ndarray]]:
    """Per chunk of resamples, the draws (rows, stratum size) of each stratum, positions within it."""
    rng = np.random.default_rng(seed)
    rows_per_chunk = max(1, CHUNK_CELLS // n_trials)
    for start in range(0, n_resamples, rows_per_chunk):
        rows = min(rows_per_chunk, n_resamples - start)
        yield [rng.integers(0, stratum.size, (rows, stratum.size)) for stratum in plan.strata]


def _sorted_counts(plan: _Plan, draws: list[np.ndarray], trials: _SortedTrials) -> np.ndarray:
    """How often each sorted position is taken (rows, N) by the resamples of ``draws``."""
    rows, n_trials = draws[0].shape[0], trials.order.size
    if plan.group_of_trial is None:  # map each draw straight to its sorted position, then count
        offsets = (np.arange(rows) * n_trials)[:, None]
        targets = [
            (np.take(trials.rank[stratum], drawn) + offsets).reshape(-1)
            for stratum, drawn in zip(plan.strata, draws, strict=True)
        ]
        return np.bincount(np.concatenate(targets), minlength=rows * n_trials).reshape(rows, n_trials)
    n_groups = plan.strata[0].size
    offsets = (np.arange(rows) * n_groups)[:, None]
    group_counts = np.bincount((draws[0] + offsets).reshape(-1), minlength=rows * n_groups).reshape(rows, n_groups)
    return np.take(group_counts, plan.group_of_trial[trials.order], axis=1)


def bootstrap_eer_replicates(
    scores: Any, labels: Any, *, groups: Any = None, n_resamples: int = 1000, seed: Seed = 0
) -> np.ndarray:
    """The EER of each of ``n_resamples`` resamples (n_resamples,), NaN where a cluster resample lacks a class.

    scores, labels: (N,); groups: N group ids (speakers) or None (see the module docstring).
    """
    _check_settings(n_resamples, 0.5)
    score_array = finite_scores(scores, "scores")
    label_array = _labels(labels, score_array.size)
    trials, plan = _sort(score_array, label_array), _plan(label_array, groups)
    chunks = _draw_chunks(plan, n_resamples, seed, score_array.size)
    return np.concatenate([_eer_of_counts(trials, _sorted_counts(plan, draws, trials)) for draws in chunks])


def _valid(replicates: np.ndarray) -> np.ndarray:
    valid = replicates[~np.isnan(replicates)]
    if valid.size < MIN_VALID_SHARE * replicates.size:
        raise TooFewGroups(
            f"only {valid.size} of {replicates.size} group resamples hold both bonafide and spoof trials; "
            "too few groups have both classes for a group bootstrap (resample by utterance instead)"
        )
    return valid


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(values, (tail, 1.0 - tail))
    return float(low), float(high)


def bootstrap_eer_ci(
    scores: Any, labels: Any, *, groups: Any = None, n_resamples: int = 1000, level: float = 0.95, seed: Seed = 0
) -> EerInterval:
    """The EER of the trials and its bootstrap percentile interval at ``level``.

    scores: (N,) higher = more bonafide; labels: (N,) 1 bonafide / 0 spoof; groups: N
    group ids (e.g. speakers) for a cluster bootstrap, or None to resample trials
    within each class. Seeded: the same inputs and seed give the same interval (seed:
    an int, or a sequence of ints such as ``(run seed, epoch)``).
    """
    _check_settings(n_resamples, level)
    score_array = finite_scores(scores, "scores")
    label_array = _labels(labels, score_array.size)
    replicates = _valid(
        bootstrap_eer_replicates(score_array, label_array, groups=groups, n_resamples=n_resamples, seed=seed)
    )
    eer, _ = compute_eer(score_array[label_array == 1], score_array[label_array == 0])
    return EerInterval(eer, *_percentiles(replicates, level), int(replicates.size), level)


def paired_bootstrap_eer(
    scores_a: Any,
    scores_b: Any,
    labels: Any,
    *,
    groups: Any = None,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: Seed = 0,
) -> EerDifference:
    """EER(a) - EER(b) of two systems scored on the same trials, its interval and a two-sided p-value.

    Each resample takes the same trials (or groups) for both systems, so what the
    two share (hard trials, speakers) cancels out of the difference. The p-value
    inverts the percentile interval: p = min(1, 2 * min(P*(d <= 0), P*(d >= 0))), with
    P* the share of replicates, each count + 1 over replicates + 1 (so it is never 0);
    p < 1 - level where the interval excludes 0.
    scores_a, scores_b, labels: (N,), position i the same trial in both.
    """
    _check_settings(n_resamples, level)
    a = finite_scores(scores_a, "scores of system a")
    b = finite_scores(scores_b, "scores of system b")
    if a.size != b.size:
        raise CblError(f"a paired comparison needs scores of the same trials, got {a.size} and {b.size} scores")
    label_array = _labels(labels, a.size)
    trials_a, trials_b, plan = _sort(a, label_array), _sort(b, label_array), _plan(label_array, groups)
    replicates = np.concatenate(
        [
            _eer_of_counts(trials_a, _sorted_counts(plan, draws, trials_a))
            - _eer_of_counts(trials_b, _sorted_counts(plan, draws, trials_b))
            for draws in _draw_chunks(plan, n_resamples, seed, a.size)
        ]
    )
    differences = _valid(replicates)
    bonafide = label_array == 1
    difference = compute_eer(a[bonafide], a[~bonafide])[0] - compute_eer(b[bonafide], b[~bonafide])[0]
    below, above = (int(np.count_nonzero(hits)) for hits in (differences <= 0.0, differences >= 0.0))
    p_value = min(1.0, 2.0 * (min(below, above) + 1) / (differences.size + 1))
    return EerDifference(difference, *_percentiles(differences, level), p_value, int(differences.size), level)


def speaker_groups(speakers: Sequence[str]) -> list[str] | None:
    """The speakers as bootstrap groups, or None when the protocol does not name every speaker."""
    groups = [str(s) for s in speakers]
    return None if not groups or any(s.strip() in UNKNOWN_SPEAKERS for s in groups) else groups


def eer_interval_fields(
    prefix: str,
    scores: Any,
    labels: Any,
    speakers: Sequence[str],
    *,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: Seed = 0,
) -> dict[str, float | int]:
    """``{prefix}_low``, ``{prefix}_high`` and ``{prefix}_ci_speakers`` of an EER, as cbl writes them.

    Resampled by speaker when the protocol names every speaker (``_ci_speakers`` the
    number of speakers), else by utterance (``_ci_speakers`` 0), also when too few
    speakers hold both classes for a speaker bootstrap. scores, labels, speakers: (N,).
    """
    groups = speaker_groups(speakers)
    if groups is not None:
        try:
            interval = bootstrap_eer_ci(scores, labels, groups=groups, n_resamples=n_resamples, level=level, seed=seed)
            return {
                f"{prefix}_low": interval.low,
                f"{prefix}_high": interval.high,
                f"{prefix}_ci_speakers": len(set(groups)),
            }
        except TooFewGroups:
            pass
    interval = bootstrap_eer_ci(scores, labels, n_resamples=n_resamples, level=level, seed=seed)
    return {f"{prefix}_low": interval.low, f"{prefix}_high": interval.high, f"{prefix}_ci_speakers": 0}


def format_range(fields: dict[str, Any], prefix: str = "dev_eer") -> str:
    """``10.10-14.90%`` from ``{prefix}_low``/``{prefix}_high`` of a metrics line, "" when it has none."""
    low, high = fields.get(f"{prefix}_low"), fields.get(f"{prefix}_high")
    if not isinstance(low, (int, float)) or not isinstance(high, (int, float)):
        return ""
    return f"{100 * low:.2f}-{100 * high:.2f}%"


def format_interval(fields: dict[str, Any], prefix: str = "dev_eer", level: float = 0.95) -> str:
    """``95% CI 10.10-14.90%`` from ``{prefix}_low``/``{prefix}_high`` of a metrics line, "" when it has none."""
    text = format_range(fields, prefix)
    return f"{100 * level:.0f}% CI {text}" if text else ""


def mean_interval(values: Sequence[float], level: float = 0.95) -> MeanInterval:
    """Mean, std and the Student-t interval of the mean of a few runs (e.g. one eval EER per seed).

    mean +- t(1 - (1 - level) / 2, n - 1) * std / sqrt(n): the interval for the mean of
    runs that vary as a normal sample; with 3 seeds t is 4.30, so it is wide, as it should be.
    """
    _check_settings(1, level)
    array = np.asarray([float(v) for v in values], dtype=np.float64)
    if array.size == 0 or not np.all(np.isfinite(array)):
        raise CblError(f"a mean interval needs one or more finite values, got {array.tolist()}")
    mean = float(array.mean())
    if array.size < 2:
        return MeanInterval(mean, math.nan, math.nan, math.nan, 1, level)
    from scipy.stats import t as student_t  # only the multi-seed summary needs scipy.stats

    std = float(array.std(ddof=1))
    half = float(student_t.ppf(1.0 - (1.0 - level) / 2.0, array.size - 1)) * std / math.sqrt(array.size)
    return MeanInterval(mean, std, mean - half, mean + half, int(array.size), level)
