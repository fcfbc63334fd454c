"""Condition tables as the official ASVspoof 2021 package prints them, from small keys in the real line formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cbl.breakdowns import TdcfScorer, attack_breakdown, condition_breakdowns, format_breakdown
from cbl.data.protocols import read_asvspoof2021
from cbl.metrics import compute_eer
from cbl.tdcf import min_tdcf_2021, read_asv_scores

LA_KEY = """\
LA_0009 LA_E_1000001 none none - bonafide notrim eval
LA_0009 LA_E_1000002 none none A07 spoof notrim eval
LA_0009 LA_E_1000003 alaw ita_tx - bonafide notrim eval
LA_0009 LA_E_1000004 alaw ita_tx A07 spoof notrim eval
LA_0010 LA_E_1000005 alaw ita_tx A08 spoof notrim eval
LA_0010 LA_E_1000006 pstn sin_tx - bonafide notrim eval
LA_0010 LA_E_1000007 pstn sin_tx A08 spoof notrim eval
LA_0010 LA_E_1000008 gsm loc_tx A07 spoof notrim eval
LA_0010 LA_E_1000009 none none A07 spoof notrim progress
"""
DF_KEY = """\
LA_0023 DF_E_2000001 nocodec asvspoof - bonafide notrim eval bonafide - - - -
LA_0023 DF_E_2000002 nocodec asvspoof A14 spoof notrim eval traditional_vocoder - - - -
LA_0023 DF_E_2000003 low_mp3 vcc2018 - bonafide notrim eval bonafide - - - -
LA_0023 DF_E_2000004 low_mp3 vcc2018 A16 spoof notrim eval waveform_concatenation - - - -
LA_0023 DF_E_2000005 nocodec vcc2020 A09 spoof notrim eval neural_vocoder_autoregressive - - - -
LA_0023 DF_E_2000006 low_mp3 vcc2020 A10 spoof notrim eval traditional_vocoder - - - -
"""


def protocol(tmp_path: Path, text: str, track: str):
    key = tmp_path / f"{track}_trial_metadata.txt"
    key.write_text(text)
    audio = tmp_path / "flac"
    audio.mkdir(exist_ok=True)
    for line in text.splitlines():
        (audio / f"{line.split()[1]}.flac").touch()
    return read_asvspoof2021(key, audio, track=track)


def test_la_codec_conditions_keep_both_classes_of_the_condition(tmp_path: Path) -> None:
    records = protocol(tmp_path, LA_KEY, "la")
    assert len(records) == 8  # the progress row is not scored
    scores = np.array([3.0, 1.0, 2.0, 2.5, 0.0, 4.0, 5.0, 1.5])
    (codecs,) = condition_breakdowns(records, scores)
    assert codecs.title == "codec condition (2021 LA)" and codecs.tdcf_form is None
    by_name = {row.condition: row for row in codecs.rows}
    assert list(by_name) == ["C1", "C2", "C3", "C6", "pooled"]  # official order, only conditions present
    assert (by_name["C2"].bonafide, by_name["C2"].spoof) == (1, 2)  # alaw: its bonafide and its spoofs
    assert by_name["C2"].eer == compute_eer([2.0], [2.5, 0.0])[0]
    assert by_name["C3"].eer == compute_eer([4.0], [5.0])[0]
    assert by_name["C6"].eer is None and by_name["C6"].spoof == 1  # gsm: no bonafide trial, no EER
    assert by_name["pooled"].eer == compute_eer(scores[[0, 2, 5]], scores[[1, 3, 4, 6, 7]])[0]
    table = format_breakdown(codecs).splitlines()
    assert table[0].split() == ["codec", "condition", "(2021", "LA)", "bonafide", "spoof", "EER", "(%)"]
    assert table[4].split() == ["C6", "0", "1", "-"]


def test_df_vocoder_groups_pair_all_bonafide_with_the_groups_spoofs(tmp_path: Path) -> None:
    records = protocol(tmp_path, DF_KEY, "df")
    scores = np.array([2.0, 1.0, 0.5, 3.0, 0.0, 1.5])
    vocoders, codecs = condition_breakdowns(records, scores)
    assert vocoders.title == "vocoder group (2021 DF)" and codecs.title == "codec condition (2021 DF)"
    rows = {row.condition: row for row in vocoders.rows}
    assert list(rows) == ["Traditional", "Wav.Concat.", "Neural AR", "pooled"]
    assert (rows["Traditional"].bonafide, rows["Traditional"].spoof) == (2, 2)
    assert rows["Traditional"].eer == compute_eer([2.0, 0.5], [1.0, 1.5])[0]
    assert rows["Wav.Concat."].eer == compute_eer([2.0, 0.5], [3.0])[0]
    rows = {row.condition: row for row in codecs.rows}
    assert list(rows) == ["C1", "C2", "pooled"]  # nocodec, low_mp3
    assert rows["C2"].eer == compute_eer([0.5], [3.0, 1.5])[0]


def test_condition_rows_carry_the_2021_min_tdcf_of_their_asv_trials(tmp_path: Path) -> None:
    records = protocol(tmp_path, LA_KEY, "la")
    scores = np.array([3.0, 1.0, 2.0, 2.5, 0.0, 4.0, 5.0, 1.5])
    asv_key = tmp_path / "asv_trial_metadata.txt"
    rows = []
    for codec, trans in (("none", "none"), ("alaw", "ita_tx")):
        rows += [f"LA_0009 LA_E_30{i} {codec} {trans} - target notrim eval" for i in range(3)]
        rows += [f"LA_0010 LA_E_31{i} {codec} {trans} - nontarget notrim eval" for i in range(3)]
        rows += [f"LA_0009 LA_E_32{i} {codec} {trans} A07 spoof notrim eval" for i in range(2)]
    asv_key.write_text("\n".join(rows) + "\n")
    values = [3.0, 4.0, 5.0, 0.0, 1.0, 2.5, 4.5, 0.5] * 2
    (tmp_path / "score.txt").write_text(
        "".join(f"{' '.join(r.split()[:2])} {v}\n" for r, v in zip(rows, values, strict=True))
    )
    asv = read_asv_scores(tmp_path / "score.txt", asv_key)
    scorer = TdcfScorer(asv, "2021")
    (codecs,) = condition_breakdowns(records, scores, scorer)
    assert codecs.tdcf_form == "2021"
    by_name = {row.condition: row for row in codecs.rows}
    assert by_name["C2"].min_tdcf == min_tdcf_2021([2.0], [2.5, 0.0], asv.rates(codec="alaw"))[0]
    assert by_name["C3"].min_tdcf is None  # the ASV has no pstn trial
    assert by_name["pooled"].min_tdcf == min_tdcf_2021(scores[[0, 2, 5]], scores[[1, 3, 4, 6, 7]], asv.rates())[0]
    attacks = attack_breakdown(scores, [r.label for r in records], [r.attack for r in records], scorer)
    by_attack = {row.condition: row for row in attacks.rows}
    assert by_attack["A07"].min_tdcf == pytest.approx(
        min_tdcf_2021(scores[[0, 2, 5]], scores[[1, 3, 7]], asv.rates(attack="A07"))[0]
    )
    assert by_attack["A08"].min_tdcf is None  # no ASV spoof trial of A08
    assert "min t-DCF (2021)" in format_breakdown(attacks).splitlines()[0]


def test_2019_protocols_get_no_condition_tables(tmp_path: Path) -> None:
    from cbl.data.protocols import Record

    records = [Record("a", "/x", 1, "-", "s"), Record("b", "/y", 0, "A01", "s")]
    assert condition_breakdowns(records, [1.0, 0.0]) == []
