"""Is the best trial really better than the runner-up? Paired bootstraps of dev EER differences against the best.

Every trial keeps its best epoch's dev scores (:mod:`cbl.engine.dev_scores`). Two
trials are compared on the same dev utterances: each bootstrap resample takes the
same utterances (or, when the protocol names every speaker, the same speakers) for
both, so what the two share cancels out of the difference
(:func:`cbl.uncertainty.paired_bootstrap_eer`). The difference is trial - best: above
0 the trial is worse; its p-value says whether that could be resampling noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cbl.engine.dev_scores import DEV_SCORES, DevScores, read_dev_scores
from cbl.errors import CblError
from cbl.sweep.store import TrialInfo, best_trial
from cbl.uncertainty import EerDifference, TooFewGroups, paired_bootstrap_eer, speaker_groups

__all__ = [
    "COMPARE_RESAMPLES",
    "COMPARE_TOP",
    "Comparison",
    "compare_to_best",
    "format_difference",
    "ranked_trials",
    "vs_best_column",
]

COMPARE_TOP = 5  # status compares the best with the next 4: the ones a reader would pick between
COMPARE_RESAMPLES = 1000  # the p-value's resolution is 2 / 1001; about 1 s for 25,000 dev utterances
COMPARE_SEED = 0  # the same folder gives the same comparisons every time it is read


@dataclass(frozen=True)
class Comparison:
    trial_id: str
    result: EerDifference | None  # EER(trial) - EER(best); None when it could not be computed
    by_speaker: bool = False  # resampled by speaker (else by utterance)
    reason: str = ""  # why there is no result


def ranked_trials(trials: Sequence[TrialInfo]) -> list[TrialInfo]:
    """Trials with a dev EER, best (lowest) first."""
    return sorted((t for t in trials if not math.isnan(t.best_dev_eer)), key=lambda t: t.best_dev_eer)


def _scores_of(trial: TrialInfo) -> DevScores | str:
    path = trial.path / "checkpoints" / DEV_SCORES
    if not path.is_file():
        return f"no dev scores kept (checkpoints/{DEV_SCORES}: trained before cbl kept them)"
    try:
        scores = read_dev_scores(path)
    except CblError as exc:
        return str(exc)
    if scores.epoch != trial.best_epoch:
        return f"its dev scores are of epoch {scores.epoch}, its best epoch is {trial.best_epoch}"
    return scores


def _compare(best: DevScores, other: DevScores, trial_id: str, n_resamples: int, seed: int) -> Comparison:
    position = {utt: i for i, utt in enumerate(other.utt_ids)}
    if len(position) != len(best.utt_ids) or any(utt not in position for utt in best.utt_ids):
        return Comparison(trial_id, None, reason="scored other dev utterances than the best trial")
    aligned = np.asarray([position[utt] for utt in best.utt_ids])
    if not np.array_equal(other.labels[aligned], best.labels):
        return Comparison(trial_id, None, reason="its dev labels differ from the best trial's")
    groups = speaker_groups(best.speakers)
    if groups is not None:
        try:
            result = paired_bootstrap_eer(
                other.scores[aligned], best.scores, best.labels, groups=groups, n_resamples=n_resamples, seed=seed
            )
            return Comparison(trial_id, result, by_speaker=True)
        except TooFewGroups:
            pass
    result = paired_bootstrap_eer(other.scores[aligned], best.scores, best.labels, n_resamples=n_resamples, seed=seed)
    return Comparison(trial_id, result)


def compare_to_best(
    best: TrialInfo,
    others: Sequence[TrialInfo],
    *,
    n_resamples: int = COMPARE_RESAMPLES,
    seed: int = COMPARE_SEED,
) -> dict[str, Comparison]:
    """trial id -> the paired bootstrap of EER(trial) - EER(best) on the dev utterances, for each of ``others``."""
    best_scores = _scores_of(best)
    out: dict[str, Comparison] = {}
    for trial in others:
        if trial.trial_id == best.trial_id:
            continue
        if isinstance(best_scores, str):
            out[trial.trial_id] = Comparison(trial.trial_id, None, reason=f"the best trial: {best_scores}")
            continue
        scores = _scores_of(trial)
        out[trial.trial_id] = (
            Comparison(trial.trial_id, None, reason=scores)
            if isinstance(scores, str)
            else _compare(best_scores, scores, trial.trial_id, n_resamples, seed)
        )
    return out


def format_difference(comparison: Comparison | None) -> str:
    """``+0.52 [-0.10, +1.20] p=0.09`` (EER points, trial - best), ``-`` without a result."""
    if comparison is None or comparison.result is None:
        return "-"
    r = comparison.result
    return f"{100 * r.difference:+.2f} [{100 * r.low:+.2f}, {100 * r.high:+.2f}] p={r.p_value:.2g}"


def vs_best_column(trials: Sequence[TrialInfo], top: int = COMPARE_TOP) -> tuple[dict[str, str], list[str]]:
    """The status table's "vs best" cells for the ``top`` trials (the best one: ``best``), and why any is missing."""
    best = best_trial(list(trials))
    if best is None:
        return {}, []
    others = [t for t in ranked_trials(trials) if t.trial_id != best.trial_id][: max(0, top - 1)]
    if not others:
        return {}, []
    comparisons = compare_to_best(best, others)
    cells = {best.trial_id: "best", **{k: format_difference(c) for k, c in comparisons.items()}}
    notes = [f"vs best: {c.trial_id}: {c.reason}" for c in comparisons.values() if c.result is None]
    return cells, notes
