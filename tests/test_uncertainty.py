"""Bootstrap EER intervals and the paired bootstrap: exactness against compute_eer, coverage, groups, p-values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cbl.errors import CblError
from cbl.metrics import compute_eer
from cbl.uncertainty import (
    bootstrap_eer_ci,
    bootstrap_eer_replicates,
    paired_bootstrap_eer,
    weighted_eer,
)


def _trials(rng: np.random.Generator, n: int, tied: bool) -> tuple[np.ndarray, np.ndarray]:
    scores = rng.integers(0, 5, size=n).astype(float) if tied else rng.normal(size=n)
    labels = rng.integers(0, 2, size=n)
    labels[:2] = (1, 0)
    return scores, labels


def _gaussian(rng: np.random.Generator, n: int, separation: float) -> tuple[np.ndarray, np.ndarray]:
    """n bonafide ~ N(separation, 1) and n spoof ~ N(0, 1): population EER Phi(-separation / 2)."""
    scores = np.concatenate((rng.normal(separation, 1.0, n), rng.normal(0.0, 1.0, n)))
    return scores, np.concatenate((np.ones(n, dtype=int), np.zeros(n, dtype=int)))


def test_weighted_eer_at_weight_one_is_compute_eer_exactly_also_with_ties() -> None:
    rng = np.random.default_rng(0)
    for case in range(200):
        scores, labels = _trials(rng, int(rng.integers(2, 60)), tied=case % 2 == 0)
        reference, _ = compute_eer(scores[labels == 1], scores[labels == 0])
        assert weighted_eer(scores, labels, np.ones(scores.size, dtype=int)) == reference


def test_weighted_eer_is_compute_eer_of_the_repeated_trials() -> None:
    rng = np.random.default_rng(1)
    for case in range(100):
        scores, labels = _trials(rng, int(rng.integers(2, 40)), tied=case % 2 == 0)
        weights = rng.integers(0, 5, size=(4, scores.size))
        eers = weighted_eer(scores, labels, weights)
        for row, eer in zip(weights, eers, strict=True):
            repeated, repeated_labels = np.repeat(scores, row), np.repeat(labels, row)
            if repeated_labels.min() == repeated_labels.max():
                assert math.isnan(eer)
                continue
            assert eer == compute_eer(repeated[repeated_labels == 1], repeated[repeated_labels == 0])[0]


def test_the_interval_covers_a_known_population_eer_in_about_95_percent_of_simulated_draws() -> None:
    from scipy.stats import norm

    separation, draws = 2.0, 200
    population_eer = float(norm.cdf(-separation / 2))
    rng = np.random.default_rng(2026)
    covered = 0
    for draw in range(draws):
        scores, labels = _gaussian(rng, 500, separation)
        interval = bootstrap_eer_ci(scores, labels, n_resamples=200, seed=draw)
        assert interval.low <= interval.eer <= interval.high
        covered += interval.low <= population_eer <= interval.high
    # Binomial(200, 0.95): mean 190, sd 3.1; +-3 sd (an interval of half the width covers ~68%)
    assert 181 <= covered <= 199, covered


def test_resampling_by_group_widens_the_interval_when_scores_are_correlated_within_groups() -> None:
    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(20), 100)
    labels = np.tile(np.r_[np.ones(50, dtype=int), np.zeros(50, dtype=int)], 20)
    group_shift = rng.normal(0.0, 1.0, 20)[groups]  # a speaker's scores move together
    scores = 2.0 * labels + group_shift + rng.normal(0.0, 0.5, labels.size)
    by_trial = bootstrap_eer_ci(scores, labels, n_resamples=300, seed=1)
    by_group = bootstrap_eer_ci(scores, labels, groups=[f"spk{g}" for g in groups], n_resamples=300, seed=1)
    assert by_group.eer == by_trial.eer
    assert (by_group.high - by_group.low) > 1.5 * (by_trial.high - by_trial.low)


def test_the_interval_is_seeded() -> None:
    scores, labels = _gaussian(np.random.default_rng(4), 100, 1.5)
    first = bootstrap_eer_ci(scores, labels, n_resamples=100, seed=7)
    assert bootstrap_eer_ci(scores, labels, n_resamples=100, seed=7) == first
    assert bootstrap_eer_ci(scores, labels, n_resamples=100, seed=8) != first
    assert first.n_resamples == 100 and first.level == 0.95


def test_utterance_resamples_keep_both_class_counts() -> None:
    scores, labels = _gaussian(np.random.default_rng(5), 30, 3.0)
    replicates = bootstrap_eer_replicates(scores, labels, n_resamples=500, seed=0)
    assert replicates.shape == (500,) and not np.isnan(replicates).any()


def test_group_resamples_missing_a_class_are_left_out_and_counted() -> None:
    rng = np.random.default_rng(6)
    labels = np.r_[np.ones(10, dtype=int), np.zeros(10, dtype=int), np.ones(10, dtype=int), np.zeros(20, dtype=int)]
    scores = 2.0 * labels + rng.normal(size=labels.size)
    groups = ["a"] * 20 + ["b"] * 20 + ["c"] * 10  # c holds spoof only: 1 resample in 27 draws c three times
    interval = bootstrap_eer_ci(scores, labels, groups=groups, n_resamples=1000, seed=0)
    assert 930 < interval.n_resamples < 1000


def test_a_group_bootstrap_with_single_class_groups_is_refused() -> None:
    scores, labels = _gaussian(np.random.default_rng(7), 20, 2.0)
    groups = ["bonafide_speaker"] * 20 + ["spoof_speaker"] * 20
    with pytest.raises(CblError, match="too few groups have both classes"):
        bootstrap_eer_ci(scores, labels, groups=groups, n_resamples=200)


def test_paired_bootstrap_of_identical_scores_gives_p_one() -> None:
    scores, labels = _gaussian(np.random.default_rng(8), 200, 2.0)
    result = paired_bootstrap_eer(scores, scores.copy(), labels, n_resamples=300)
    assert result.difference == 0.0 and result.low == 0.0 and result.high == 0.0
    assert result.p_value == 1.0


def test_paired_bootstrap_of_clearly_different_systems_gives_p_below_one_percent() -> None:
    rng = np.random.default_rng(9)
    scores, labels = _gaussian(rng, 500, 1.0)
    better = scores + 1.5 * labels  # same trials, bonafide pushed up
    result = paired_bootstrap_eer(scores, better, labels, n_resamples=1000, seed=3)
    eer_a = compute_eer(scores[labels == 1], scores[labels == 0])[0]
    eer_b = compute_eer(better[labels == 1], better[labels == 0])[0]
    assert result.difference == eer_a - eer_b > 0
    assert result.low > 0 and result.p_value < 0.01


def test_paired_bootstrap_p_value_agrees_with_whether_the_interval_holds_zero() -> None:
    rng = np.random.default_rng(10)
    for shift in (0.0, 0.05, 0.1, 0.2, 0.4):
        scores, labels = _gaussian(rng, 300, 1.5)
        other = scores + shift * labels + rng.normal(0.0, 0.3, scores.size)
        result = paired_bootstrap_eer(scores, other, labels, groups=None, n_resamples=400, seed=1)
        assert (result.p_value < 0.05) == (result.low > 0 or result.high < 0), (shift, result)


def test_paired_bootstrap_by_group_draws_the_same_groups_for_both_systems() -> None:
    rng = np.random.default_rng(11)
    groups = np.repeat(np.arange(10), 40)
    labels = np.tile(np.r_[np.ones(20, dtype=int), np.zeros(20, dtype=int)], 10)
    scores = 2.0 * labels + rng.normal(0.0, 1.0, 10)[groups] + rng.normal(0.0, 0.5, labels.size)
    result = paired_bootstrap_eer(scores, scores + 0.0, labels, groups=groups, n_resamples=200)
    assert result.p_value == 1.0 and result.low == result.high == 0.0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: bootstrap_eer_ci([0.1, float("nan")], [1, 0]), "scores contain 1 non-finite"),
        (lambda: bootstrap_eer_ci([0.1, 0.2], [1, 1]), "needs both bonafide and spoof scores, got 2 bonafide and 0"),
        (lambda: bootstrap_eer_ci([0.1, 0.2, 0.3], [1, 0]), "3 scores but 2 labels"),
        (lambda: bootstrap_eer_ci([0.1, 0.2], [1, 2]), r"labels must be 1 \(bonafide\) or 0 \(spoof\)"),
        (lambda: bootstrap_eer_ci([0.1, 0.2], [1, 0], level=1.0), "level must lie strictly between 0 and 1"),
        (lambda: bootstrap_eer_ci([0.1, 0.2], [1, 0], n_resamples=0), "n_resamples must be a positive integer"),
        (lambda: bootstrap_eer_ci([0.1, 0.2], [1, 0], groups=["a"]), "2 scores but 1 groups"),
        (lambda: paired_bootstrap_eer([0.1, 0.2], [0.1], [1, 0]), "same trials, got 2 and 1 scores"),
        (lambda: weighted_eer([0.1, 0.2], [1, 0], [1, -1]), "weights must be non-negative integers"),
        (lambda: weighted_eer([0.1, 0.2], [1, 0], [1, 1, 1]), r"weights must have shape \(N,\) or \(R, N\)"),
    ],
)
def test_bad_input_is_a_one_line_error(call, message: str) -> None:
    with pytest.raises(CblError, match=message):
        call()


def test_the_mean_interval_of_three_seeds_is_the_student_t_interval() -> None:
    from cbl.uncertainty import mean_interval

    interval = mean_interval([0.10, 0.12, 0.14])
    t_975_two_degrees = 4.302652729911275  # Student t, 97.5th percentile, 2 degrees of freedom (tables)
    half = t_975_two_degrees * 0.02 / math.sqrt(3)
    assert interval.mean == pytest.approx(0.12) and interval.std == pytest.approx(0.02) and interval.n == 3
    assert (interval.low, interval.high) == (pytest.approx(0.12 - half), pytest.approx(0.12 + half))
    single = mean_interval([0.1])
    assert single.mean == 0.1 and math.isnan(single.low) and math.isnan(single.std)
    with pytest.raises(CblError, match="one or more finite values"):
        mean_interval([])


def test_a_multi_seed_final_reports_mean_std_and_the_interval_of_the_mean() -> None:
    from cbl.sweep.final_eval import FinalEval

    final = FinalEval("t1", 0.1, 2, "eval", selection=(0, 0.1), eers=[(1, 0.10), (2, 0.12), (3, 0.14)])
    assert final.mean_ci == (pytest.approx(0.070317, abs=1e-6), pytest.approx(0.169683, abs=1e-6))
    assert final.summary_line().splitlines()[1] == (
        "final eval EER 12.00% +- 2.00% over 3 fresh seeds (seed 1: 10.00%, seed 2: 12.00%, seed 3: 14.00%); "
        "95% CI of the mean 7.03-16.97%"
    )
    assert FinalEval("t1", 0.1, 2, "eval", selection=(0, 0.1), eers=[(1, 0.1)]).mean_ci is None
