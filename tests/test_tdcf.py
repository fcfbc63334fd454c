"""t-DCF, ASVspoof 2019 and 2021 forms, against hand-computed cases and the published properties; ASV score files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cbl.errors import CblError, UsageError
from cbl.tdcf import (
    TDCF_2019_COST_MODEL,
    TDCF_2021_COST_MODEL,
    asv_error_rates,
    min_tdcf_2019,
    min_tdcf_2021,
    read_asv_scores,
)

PTAR, PNON, PSPOOF = 0.95 * 0.99, 0.95 * 0.01, 0.05

# ASV targets [3, 4], non-targets [0, 1], spoofs [5, 6]: the reference's EER threshold is 1.0 (the cut
# after the two non-targets), accept = score >= threshold: Pfa_asv = 0.5 (the non-target 1.0), Pmiss_asv = 0,
# every spoof accepted: Pfa_spoof_asv = 1.
ASV = asv_error_rates([3.0, 4.0], [0.0, 1.0], [5.0, 6.0])


def test_the_published_constants() -> None:
    for model in (TDCF_2019_COST_MODEL, TDCF_2021_COST_MODEL):
        assert (model["Pspoof"], model["Ptar"], model["Pnon"]) == pytest.approx((PSPOOF, PTAR, PNON))
        assert model["Ptar"] + model["Pnon"] + model["Pspoof"] == pytest.approx(1.0)
    assert [TDCF_2019_COST_MODEL[k] for k in ("Cmiss_asv", "Cfa_asv", "Cmiss_cm", "Cfa_cm")] == [1, 10, 1, 10]
    assert [TDCF_2021_COST_MODEL[k] for k in ("Cmiss", "Cfa", "Cfa_spoof")] == [1, 10, 10]


def test_asv_operating_point_is_its_eer_threshold_with_accept_at_or_above() -> None:
    assert ASV.threshold == 1.0 and (ASV.pfa, ASV.pmiss, ASV.pfa_spoof) == (0.5, 0.0, 1.0)
    half = asv_error_rates([3.0, 4.0], [0.0, 1.0], [0.5, 6.0])
    assert half.pfa_spoof == 0.5
    with pytest.raises(CblError, match="ASV scores of spoofed trials"):
        asv_error_rates([3.0], [0.0], [])


def test_2019_form_hand_computed() -> None:
    """C1 = Ptar (1 - 0) - Pnon 10 0.5 = 0.893, C2 = 10 Pspoof 1 = 0.5, normalised by min(C1, C2) = 0.5."""
    c1, c2 = PTAR - PNON * 10 * 0.5, 10 * PSPOOF
    # CM bonafide [0, 5], spoof [1, 2]: the cut rejecting {0, 1, 2} misses 1 of 2 bonafide, accepts no spoof
    value, threshold = min_tdcf_2019([0.0, 5.0], [1.0, 2.0], ASV)
    assert value == pytest.approx(c1 * 0.5 / min(c1, c2)) and value == pytest.approx(0.893)
    assert threshold == 2.0
    assert min_tdcf_2019([0.0, 5.0, 6.0, 7.0], [1.0, 2.0], ASV)[0] == pytest.approx(c1 * 0.25 / 0.5)


def test_2021_form_hand_computed() -> None:
    """C0 = Ptar 1 0 + Pnon 10 0.5 = 0.0475, C1 = Ptar - C0 = 0.893, C2 = Pspoof 10 1 = 0.5, default C0 + 0.5."""
    c0 = PNON * 10 * 0.5
    c1, c2 = PTAR - c0, PSPOOF * 10
    value, threshold = min_tdcf_2021([0.0, 5.0], [1.0, 2.0], ASV)
    assert value == pytest.approx((c0 + c1 * 0.5) / (c0 + min(c1, c2))) and value == pytest.approx(0.902283, abs=1e-6)
    assert threshold == 2.0


def test_the_published_properties() -> None:
    rng = np.random.default_rng(0)
    asv = asv_error_rates(rng.normal(3, 1, 200), rng.normal(-3, 1, 2000), rng.normal(2, 1, 500))
    # a perfect CM: 2019 form 0; 2021 form C0 / (C0 + min(C1, C2)), the ASV's own errors
    perfect = ([2.0, 3.0], [0.0, 1.0])
    assert min_tdcf_2019(*perfect, asv)[0] == 0.0
    c0 = PTAR * asv.pmiss + PNON * 10 * asv.pfa
    c1, c2 = PTAR - c0, PSPOOF * 10 * asv.pfa_spoof
    assert min_tdcf_2021(*perfect, asv)[0] == pytest.approx(c0 / (c0 + min(c1, c2)))
    assert 0 < min_tdcf_2021(*perfect, asv)[0] < 0.2
    # a CM that cannot tell (all scores equal): the best it can do is accept or reject all -> 1 in both forms
    assert min_tdcf_2019([1.0] * 5, [1.0] * 5, asv)[0] == pytest.approx(1.0)
    assert min_tdcf_2021([1.0] * 5, [1.0] * 5, asv)[0] == pytest.approx(1.0)
    # any CM: the minimum is at most 1 (the accept-all point is on the curve) and better CMs cost less
    bonafide, spoof = rng.normal(1, 1, 300), rng.normal(-1, 1, 300)
    for tdcf in (min_tdcf_2019, min_tdcf_2021):
        worse, better = tdcf(bonafide, spoof, asv)[0], tdcf(bonafide + 2, spoof, asv)[0]
        assert better < worse <= 1.0


def test_weights_that_cannot_normalise_are_an_error() -> None:
    rejects_spoofs = asv_error_rates([3.0, 4.0], [0.0, 1.0], [-5.0, -6.0])  # Pfa_spoof_asv = 0 -> C2 = 0
    with pytest.raises(CblError, match=r"t-DCF \(2019\) weights must be positive"):
        min_tdcf_2019([1.0, 2.0], [0.0], rejects_spoofs)
    assert min_tdcf_2021([1.0, 2.0], [0.0], rejects_spoofs)[0] == pytest.approx(1.0)  # C0 / (C0 + 0): nothing to gain


# ----------------------------------------------------------------------------- score files
def test_reads_the_2019_asv_score_file(tmp_path: Path) -> None:
    path = tmp_path / "ASVspoof2019.LA.asv.eval.gi.trl.scores.txt"
    path.write_text(
        "bonafide target 3.0\nbonafide target 4.0\nbonafide nontarget 0.0\nbonafide nontarget 1.0\n"
        "A07 spoof 5.0\nA08 spoof 0.5\n"
    )
    asv = read_asv_scores(path)
    assert asv.keys.tolist() == ["target"] * 2 + ["nontarget"] * 2 + ["spoof"] * 2 and asv.codecs is None
    assert asv.rates() == (1.0, 0.5, 0.0, 0.5)
    assert asv.rates(attack="A07").pfa_spoof == 1.0 and asv.rates(attack="A08").pfa_spoof == 0.0


def test_reads_the_2021_asv_scores_with_their_key(tmp_path: Path) -> None:
    key = tmp_path / "trial_metadata.txt"
    key.write_text(
        "LA_0007 LA_E_1 none none bonafide target notrim eval\n"
        "LA_0008 LA_E_1 none none bonafide nontarget notrim eval\n"  # the same trial, another claim
        "LA_0007 LA_E_2 alaw ita_tx bonafide target notrim eval\n"
        "LA_0008 LA_E_3 alaw ita_tx bonafide nontarget notrim eval\n"
        "LA_0007 LA_E_4 alaw ita_tx A07 spoof notrim eval\n"
        "LA_0007 LA_E_5 none none A08 spoof notrim progress\n"
    )
    scores = tmp_path / "score.txt"
    scores.write_text(
        "LA_0007 LA_E_1 3.0\nLA_0008 LA_E_1 0.0\nLA_0007 LA_E_2 4.0\nLA_0008 LA_E_3 1.0\n"
        "LA_0007 LA_E_4 5.0\nLA_0007 LA_E_5 9.0\n"
    )
    asv = read_asv_scores(scores, key)
    assert asv.scores.tolist() == [3.0, 0.0, 4.0, 1.0, 5.0]  # the progress row left out
    assert asv.codecs.tolist() == ["none", "none", "alaw", "alaw", "alaw"]
    assert asv.rates() == (1.0, 0.5, 0.0, 1.0)
    assert asv.rates(codec="alaw").threshold == 1.0
    with pytest.raises(UsageError, match=r"score.txt:1: looks like an ASVspoof 2021 ASV score.txt .*--asv-key"):
        read_asv_scores(scores)
    scores.write_text(
        "LA_0007 LA_E_1 3.0\nLA_0008 LA_E_9 0.0\nLA_0007 LA_E_2 4.0\nLA_0008 LA_E_3 1.0\n"
        "LA_0007 LA_E_4 5.0\nLA_0007 LA_E_5 9.0\n"
    )
    with pytest.raises(UsageError, match=r"score.txt:2: trial 'LA_0008 LA_E_9' but .*trial_metadata.txt:2 holds"):
        read_asv_scores(scores, key)


@pytest.mark.parametrize(
    "text, message",
    [
        ("bonafide target\n", r"asv.txt:1: expected 3 columns 'SOURCE KEY SCORE'"),
        ("bonafide genuine 1.0\n", r"asv.txt:1: unknown ASV key 'genuine', expected target, nontarget or spoof"),
        ("bonafide target x\n", r"asv.txt:1: ASV score 'x' is not a number"),
        ("bonafide target nan\n", r"asv.txt:1: ASV score 'nan' is not finite"),
        ("", r"asv.txt: ASV score file is empty"),
    ],
)
def test_bad_asv_score_lines_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "asv.txt"
    path.write_text(text)
    with pytest.raises(UsageError, match=message):
        read_asv_scores(path)
