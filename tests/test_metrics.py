"""EER against an independent brute force (random and tied scores), per-attack EER, scores, score files."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cbl.config import LossConfig
from cbl.errors import CblError
from cbl.metrics import (
    ZNormStats,
    compute_det_curve,
    compute_eer,
    format_attack_table,
    is_bonafide,
    per_attack_eer,
    read_score_file,
    score_components,
    score_from_output,
    write_score_file,
)
from cbl.model import DetectorOutput


def brute_force_eer(bonafide: list[float], spoof: list[float]) -> tuple[float, float]:
    """Sweep every cut of the score list, sorted by score with bonafide first among equal scores.

    A cut after position i rejects trials [0, i) (the reference's tie order); the
    threshold of cut i is the i-th lowest score (cut 0: lowest score - 0.001).
    Written with plain loops, independently of cbl.metrics.
    """
    trials = sorted([(s, 0) for s in bonafide] + [(s, 1) for s in spoof], key=lambda t: (t[0], t[1]))
    best = None
    for cut in range(len(trials) + 1):
        missed = sum(1 for s, is_spoof in trials[:cut] if not is_spoof)
        accepted = sum(1 for s, is_spoof in trials[cut:] if is_spoof)
        frr, far = missed / len(bonafide), accepted / len(spoof)
        threshold = trials[0][0] - 0.001 if cut == 0 else trials[cut - 1][0]
        if best is None or abs(frr - far) < best[0]:
            best = (abs(frr - far), (frr + far) / 2, threshold)
    assert best is not None
    return best[1], best[2]


@pytest.mark.parametrize("seed", range(6))
def test_eer_matches_brute_force_on_random_scores(seed: int) -> None:
    rng = np.random.default_rng(seed)
    bonafide = rng.normal(1.0, 1.0, size=rng.integers(1, 40)).tolist()
    spoof = rng.normal(0.0, 1.0, size=rng.integers(1, 60)).tolist()
    eer, threshold = compute_eer(bonafide, spoof)
    expected_eer, expected_threshold = brute_force_eer(bonafide, spoof)
    assert eer == pytest.approx(expected_eer, abs=1e-12)
    assert threshold == pytest.approx(expected_threshold, abs=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_eer_matches_brute_force_on_tied_scores(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    bonafide = rng.integers(0, 4, size=rng.integers(1, 30)).astype(float).tolist()
    spoof = rng.integers(-1, 3, size=rng.integers(1, 30)).astype(float).tolist()
    assert compute_eer(bonafide, spoof) == pytest.approx(brute_force_eer(bonafide, spoof), abs=1e-12)


def test_eer_all_tied_follows_the_reference_quirk() -> None:
    # hand-computed with the reference: frr [0, .5, 1, 1, 1], far [1, 1, 1, .5, 0] -> index 2, EER 1.0
    assert compute_eer([1.0, 1.0], [1.0, 1.0]) == (1.0, 1.0)


def test_eer_of_separable_and_simple_cases() -> None:
    assert compute_eer([2.0, 3.0], [0.0, 1.0]) == (0.0, 1.0)
    assert compute_eer(np.array([0.0]), torch.tensor([1.0]))[0] == 1.0
    eer, _ = compute_eer([1.0, 3.0], [0.0, 2.0])
    assert eer == 0.5


@pytest.mark.parametrize(
    "bonafide, spoof, message",
    [
        ([], [0.1], "got 0 bonafide and 1 spoof"),
        ([0.1, 0.2], [], "got 2 bonafide and 0 spoof"),
        ([0.1, float("nan")], [0.0], "bonafide scores contain 1 non-finite value"),
        ([0.1], [float("inf"), float("-inf")], "spoof scores contain 2 non-finite value"),
    ],
)
def test_degenerate_eer_input_is_a_clear_error(bonafide, spoof, message: str) -> None:
    with pytest.raises(CblError, match=message):
        compute_eer(bonafide, spoof)


@pytest.mark.parametrize("seed", range(6))
def test_deciding_above_the_eer_threshold_reproduces_the_eer_point(seed: int) -> None:
    """is_bonafide(score > threshold) makes exactly the errors the EER operating point counts (no ties)."""
    rng = np.random.default_rng(200 + seed)
    bonafide, spoof = rng.normal(1.0, 1.0, rng.integers(1, 40)), rng.normal(0.0, 1.0, rng.integers(1, 60))
    frr, far, thresholds = compute_det_curve(bonafide, spoof)
    index = int(np.argmin(np.abs(frr - far)))
    eer, threshold = compute_eer(bonafide, spoof)
    assert threshold == thresholds[index]
    assert np.mean(~is_bonafide(bonafide, threshold)) == frr[index]
    assert np.mean(is_bonafide(spoof, threshold)) == far[index]
    assert (np.mean(~is_bonafide(bonafide, threshold)) + np.mean(is_bonafide(spoof, threshold))) / 2 == eer
    # a score equal to the threshold is rejected (it is the last score the EER point rejects)
    assert not is_bonafide([threshold], threshold)[0] and is_bonafide([threshold + 1e-9], threshold)[0]


def test_per_attack_eer_pairs_all_bonafide_with_each_attack() -> None:
    rng = np.random.default_rng(7)
    bonafide = rng.normal(2.0, 1.0, 50)
    easy = rng.normal(-5.0, 0.1, 20)  # A2: perfectly separated
    hard = rng.normal(2.0, 1.0, 30)  # A10: indistinguishable
    scores = np.concatenate([bonafide, hard, easy])
    labels = [1] * 50 + [0] * 50
    attacks = ["-"] * 50 + ["A10"] * 30 + ["A2"] * 20
    rows = per_attack_eer(scores, labels, attacks)
    assert [row.attack for row in rows] == ["A2", "A10", "pooled"]  # natural order, pooled last
    assert [row.n for row in rows] == [20, 30, 50]
    assert rows[0].eer == 0.0
    assert rows[1].eer == compute_eer(bonafide, hard)[0]
    assert rows[2].eer == compute_eer(bonafide, np.concatenate([hard, easy]))[0]
    table = format_attack_table(rows)
    assert table.splitlines()[0].split() == ["attack", "n", "EER", "(%)"]
    assert "A2" in table.splitlines()[1] and "0.000" in table.splitlines()[1]
    with pytest.raises(CblError, match="same length"):
        per_attack_eer(scores, labels[:-1], attacks)


def detector_output() -> tuple[DetectorOutput, torch.Tensor]:
    embedding = F.normalize(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0], [-1.0, 0.0, 0.0]]), dim=-1)
    logits = torch.tensor([[0.0, 2.0], [1.0, 0.5], [3.0, -1.0]])
    centers = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    return DetectorOutput(embedding, logits), centers


def test_score_rules() -> None:
    output, centers = detector_output()
    cluster = score_from_output(output, centers, LossConfig(type="cluster_only"))
    assert cluster.tolist() == pytest.approx([1.0, 2**-0.5, 0.0])  # max cosine to the centers
    ce = score_from_output(output, None, LossConfig(type="ce_only"))
    log_probs = torch.log_softmax(output.logits, dim=-1)
    assert ce.tolist() == pytest.approx((log_probs[:, 1] - log_probs[:, 0]).tolist())
    assert score_from_output(output, centers, LossConfig(type="combined", score="cluster")).tolist() == cluster.tolist()
    assert score_from_output(output, centers, LossConfig(type="combined", score="ce")).tolist() == ce.tolist()
    components = score_components(output, centers)
    stats = ZNormStats.from_components(components["cluster"], components["ce"])
    fused = score_from_output(output, centers, LossConfig(type="combined", score="sum"), stats)
    expected = (cluster - cluster.mean()) / cluster.std(unbiased=False) + (ce - ce.mean()) / ce.std(unbiased=False)
    assert fused.tolist() == pytest.approx(expected.tolist(), abs=1e-5)
    with pytest.raises(CblError, match=re.escape("loss.score=sum needs z-normalisation statistics")):
        score_from_output(output, centers, LossConfig(type="combined", score="sum"))
    with pytest.raises(CblError, match="'cluster' score needs bonafide centers"):
        score_from_output(output, None, LossConfig(type="cluster_only"))


@pytest.mark.parametrize("style", ["2021", "2019"])
def test_score_file_round_trip(style: str, tmp_path) -> None:
    rng = np.random.default_rng(8)
    scores = rng.normal(size=5)
    ids = [f"LA_E_{i:07d}" for i in range(5)]
    attacks = ["-", "A07", "A19", "-", "A07"]
    keys = [1, 0, 0, "bonafide", "spoof"]
    path = write_score_file(tmp_path / "scores.txt", ids, scores, attacks=attacks, keys=keys, style=style)
    first = path.read_text().splitlines()[0].split()
    assert len(first) == (2 if style == "2021" else 4)
    loaded = read_score_file(path)
    assert loaded.utt_ids == ids
    assert np.array_equal(loaded.scores, scores)  # full precision: the EER is unchanged by a round trip
    if style == "2019":
        assert first[:3] == ["LA_E_0000000", "-", "bonafide"]
        assert loaded.attacks == attacks and loaded.keys == ["bonafide", "spoof", "spoof", "bonafide", "spoof"]
    else:
        assert loaded.attacks is None and loaded.keys is None


def test_score_file_errors(tmp_path) -> None:
    with pytest.raises(CblError, match="2 utterance ids but 1 scores"):
        write_score_file(tmp_path / "a.txt", ["a", "b"], [0.1])
    with pytest.raises(CblError, match="needs one attack and one key per score"):
        write_score_file(tmp_path / "a.txt", ["a"], [0.1], style="2019")
    with pytest.raises(CblError, match="contains whitespace"):
        write_score_file(tmp_path / "a.txt", ["a b"], [0.1])
    bad = tmp_path / "bad.txt"
    bad.write_text("a 0.5\nb x y 0.1\n")
    with pytest.raises(CblError, match=r"bad.txt:2: expected 2 columns, got 4"):
        read_score_file(bad)
    bad.write_text("a zero\n")
    with pytest.raises(CblError, match=r"bad.txt:1: score 'zero' is not a number"):
        read_score_file(bad)
