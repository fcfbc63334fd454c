"""The report's "Is the best trial really better?" section: paired bootstraps against the best trial.

Two tables, both from :func:`cbl.sweep.compare.compare_to_best` (the same dev
utterances, resampled by speaker when the protocol names them): the top trials
against the best, and, for each value of each searched parameter, the best trial
drawing that value against the best. A row is distinguishable from the best when
its p-value is below 1 - 0.95, i.e. when the 95% CI of the difference excludes 0.
"""

from __future__ import annotations

from collections.abc import Sequence

from cbl.report.document import Block, Heading, Paragraph, Table
from cbl.report.tables import MarginalRow, format_eer
from cbl.sweep.compare import COMPARE_RESAMPLES, COMPARE_TOP, Comparison, compare_to_best, ranked_trials
from cbl.sweep.store import TrialInfo, best_epoch_line
from cbl.uncertainty import format_range

__all__ = ["ALPHA", "comparison_blocks", "verdict"]

ALPHA = 0.05  # 1 - the level of the intervals shown beside it


def verdict(comparison: Comparison | None) -> str:
    """``yes`` / ``no`` (distinguishable from the best at ALPHA), or why it is unknown."""
    if comparison is None or comparison.result is None:
        return f"unknown: {comparison.reason}" if comparison is not None else "-"
    return "yes" if comparison.result.p_value < ALPHA else "no"


def _cells(comparison: Comparison | None) -> list[str]:
    if comparison is None or comparison.result is None:
        return ["-", "-", verdict(comparison)]
    r = comparison.result
    return [
        f"{100 * r.difference:+.2f} [{100 * r.low:+.2f}, {100 * r.high:+.2f}]",
        f"{r.p_value:.2g}",
        verdict(comparison),
    ]


def comparison_blocks(trials: Sequence[TrialInfo], best: TrialInfo | None, rows: Sequence[MarginalRow]) -> list[Block]:
    """The section's heading, text and its two tables ([] without a best trial)."""
    if best is None:
        return []
    by_id = {t.trial_id: t for t in trials}
    top = [t for t in ranked_trials(trials) if t.trial_id != best.trial_id][: COMPARE_TOP - 1]
    leaders = [by_id[r.best_trial] for r in rows if r.best_trial in by_id and r.best_trial != best.trial_id]
    wanted = {t.trial_id: t for t in [*top, *leaders]}
    comparisons = compare_to_best(best, list(wanted.values()))
    compared = ["difference, points [95% CI]", "p", "distinguishable"]
    top_table = Table(
        ["trial", "best dev EER", "95% CI", *compared],
        [[best.trial_id, format_eer(best.best_dev_eer), format_range(best_epoch_line(best)) or "-", "best", "", ""]]
        + [
            [
                t.trial_id,
                format_eer(t.best_dev_eer),
                format_range(best_epoch_line(t)) or "-",
                *_cells(comparisons.get(t.trial_id)),
            ]
            for t in top
        ],
        right=(1, 2, 3, 4),
    )
    value_table = Table(
        ["parameter", "value", "its best trial", "best dev EER", *compared],
        [
            [
                r.key,
                r.value,
                r.best_trial,
                format_eer(r.best),
                *(["best", "", ""] if r.best_trial == best.trial_id else _cells(comparisons.get(r.best_trial))),
            ]
            for r in rows
            if r.best_trial
        ],
        right=(3, 4, 5),
    )
    return [
        Heading(2, "Is the best trial really better?"),
        Paragraph(
            f"Paired bootstrap ({COMPARE_RESAMPLES} resamples) of the dev EER difference against the best trial "
            f"`{best.trial_id}`, on the same dev utterances with each trial's best-epoch scores, resampled by "
            "speaker when the protocol names them: the difference (above 0: worse than the best) with its 95% "
            f"CI and a two-sided p-value; distinguishable when p < {ALPHA}. First the top trials, then the best "
            "trial of each parameter value."
        ),
        top_table,
        value_table,
    ]
