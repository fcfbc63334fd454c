"""Results by condition, as the official ASVspoof 2021 evaluation package prints them.

Besides the per-attack table (:func:`cbl.metrics.per_attack_eer`):

- 2021 LA: by codec condition C1-C7, from the key's codec column (column 3):
  C1 none, C2 alaw, C3 pstn, C4 g722, C5 ulaw, C6 gsm, C7 opus;
- 2021 DF: by vocoder group (column 9): Traditional, Wav.Concat., Neural AR,
  Neural non-AR, Unknown; and by compression condition C1-C9 (column 3): nocodec,
  low_mp3, high_mp3, low_m4a, high_m4a, low_ogg, high_ogg, mp3m4a, oggm4a.

As in that package (its ``config.py`` and ``main.py``): a row of a factor that only
spoofs carry (attack, vocoder group) pairs every bonafide trial with that row's
spoofs; a row of a factor both classes carry (codec) keeps the bonafide and the
spoof trials of that condition; "pooled" keeps everything. With the organisers' ASV
scores a row also gets its min t-DCF, the ASV trials restricted the same way
(2021 keys: the revised 2021 form; otherwise the 2019 form). The package's full
attack x codec grid is not printed, only its margins. Values a key holds beyond
the official lists get rows of their own, after the official ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from cbl.errors import CblError
from cbl.metrics import compute_eer, per_attack_eer
from cbl.tdcf import AsvScores, min_tdcf_2019, min_tdcf_2021

__all__ = [
    "DF_CODEC_CONDITIONS",
    "DF_VOCODER_GROUPS",
    "LA_CODEC_CONDITIONS",
    "Breakdown",
    "ConditionRow",
    "TdcfScorer",
    "attack_breakdown",
    "condition_breakdowns",
    "format_breakdown",
]

# (label printed, value in the key), in the official order
LA_CODEC_CONDITIONS = (
    ("C1", "none"),
    ("C2", "alaw"),
    ("C3", "pstn"),
    ("C4", "g722"),
    ("C5", "ulaw"),
    ("C6", "gsm"),
    ("C7", "opus"),
)
DF_VOCODER_GROUPS = (
    ("Traditional", "traditional_vocoder"),
    ("Wav.Concat.", "waveform_concatenation"),
    ("Neural AR", "neural_vocoder_autoregressive"),
    ("Neural non-AR", "neural_vocoder_nonautoregressive"),
    ("Unknown", "unknown"),
)
DF_CODEC_CONDITIONS = (
    ("C1", "nocodec"),
    ("C2", "low_mp3"),
    ("C3", "high_mp3"),
    ("C4", "low_m4a"),
    ("C5", "high_m4a"),
    ("C6", "low_ogg"),
    ("C7", "high_ogg"),
    ("C8", "mp3m4a"),
    ("C9", "oggm4a"),
)


class ConditionRow(NamedTuple):
    condition: str  # C1, an attack id, a vocoder group, or "pooled"
    bonafide: int  # bonafide trials in the row
    spoof: int  # spoof trials in the row
    eer: float | None  # None when the row lacks one of the classes
    min_tdcf: float | None = None  # with ASV scores, when the ASV has trials of the row


class Breakdown(NamedTuple):
    title: str  # the first column's heading: "attack", "codec condition (2021 LA)", ...
    rows: list[ConditionRow]
    tdcf_form: str | None = None  # "2019" or "2021": the form of the min t-DCF column; None without ASV scores


class TdcfScorer:
    """The organisers' ASV scores and the t-DCF form a protocol is scored with."""

    def __init__(self, asv: AsvScores, form: str) -> None:
        self.asv, self.form = asv, form
        self._forms = {"2019": min_tdcf_2019, "2021": min_tdcf_2021}

    def pooled(self, bonafide: np.ndarray, spoof: np.ndarray) -> dict[str, float]:
        """The pooled min t-DCF in both forms (a form whose weights the ASV scores do not allow is left out)."""
        rates = self.asv.rates()
        out = {}
        for form, tdcf in self._forms.items():
            try:
                out[form] = tdcf(bonafide, spoof, rates)[0]
            except CblError:
                continue
        return out

    def row(self, bonafide: np.ndarray, spoof: np.ndarray, **condition: str | None) -> float | None:
        """This scorer's form on one condition's trials; None when the ASV or the CM lacks trials of it."""
        try:
            return self._forms[self.form](bonafide, spoof, self.asv.rates(**condition))[0]
        except CblError:
            return None


def _labels(labels: Any) -> np.ndarray:
    return np.asarray(labels).reshape(-1)


def attack_breakdown(scores: Any, labels: Any, attacks: Sequence[str], scorer: TdcfScorer | None = None) -> Breakdown:
    """Per attack (every bonafide trial against each attack's spoofs), then pooled; EER from :func:`per_attack_eer`."""
    scores, labels = np.asarray(scores, dtype=np.float64), _labels(labels)
    attack_array = np.asarray([str(a) for a in attacks], dtype=object)
    bonafide = scores[labels == 1]
    rows = []
    for row in per_attack_eer(scores, labels, attacks):
        spoof_mask = (labels == 0) & ((attack_array == row.attack) if row.attack != "pooled" else True)
        tdcf = None
        if scorer is not None:
            tdcf = scorer.row(bonafide, scores[spoof_mask], attack=None if row.attack == "pooled" else row.attack)
        rows.append(ConditionRow(row.attack, int(bonafide.size), row.n, row.eer, tdcf))
    return Breakdown("attack", rows, scorer.form if scorer is not None else None)


def _factor_rows(
    scores: np.ndarray,
    labels: np.ndarray,
    values: np.ndarray,
    official: Sequence[tuple[str, str]],
    spoof_only: bool,
    tdcf: Callable[..., float | None] | None,
    asv_key: str | None,
) -> list[ConditionRow]:
    present = set(values[labels == 0].tolist()) | (set() if spoof_only else set(values[labels == 1].tolist()))
    known = {value for _, value in official}
    order = [(label, value) for label, value in official if value in present]
    order += [(value, value) for value in sorted(present - known - {"-", "bonafide"})]
    rows = []
    for label, value in [*order, ("pooled", None)]:
        in_row = np.ones(values.size, dtype=bool) if value is None else values == value
        bonafide = scores[(labels == 1) & (True if spoof_only or value is None else in_row)]
        spoof = scores[(labels == 0) & in_row]
        eer = compute_eer(bonafide, spoof)[0] if bonafide.size and spoof.size else None
        cost = None
        if tdcf is not None and bonafide.size and spoof.size:
            cost = tdcf(bonafide, spoof, **({asv_key: value} if asv_key and value is not None else {}))
        rows.append(ConditionRow(label, int(bonafide.size), int(spoof.size), eer, cost))
    return rows


def condition_breakdowns(records: Sequence[Any], scores: Any, scorer: TdcfScorer | None = None) -> list[Breakdown]:
    """The official condition tables that apply to ``records`` (2021 LA or DF keys, told apart by their columns)."""
    if not records:
        return []
    scores, labels = np.asarray(scores, dtype=np.float64), np.array([r.label for r in records])
    meta = records[0].meta

    def column(name: str) -> np.ndarray:
        return np.array([r.meta.get(name, "") for r in records], dtype=object)

    out = []
    if "transmission" in meta:  # 2021 LA: the ASV key carries the codec too (2021 form)
        with_tdcf = scorer is not None and scorer.asv.codecs is not None
        tdcf = scorer.row if scorer is not None and with_tdcf else None
        rows = _factor_rows(scores, labels, column("codec"), LA_CODEC_CONDITIONS, False, tdcf, "codec")
        out.append(
            Breakdown("codec condition (2021 LA)", rows, scorer.form if scorer is not None and with_tdcf else None)
        )
    if "vocoder" in meta:  # 2021 DF: EER only, as the official DF tables (the DF track has no ASV)
        out.append(
            Breakdown(
                "vocoder group (2021 DF)",
                _factor_rows(scores, labels, column("vocoder"), DF_VOCODER_GROUPS, True, None, None),
            )
        )
        out.append(
            Breakdown(
                "codec condition (2021 DF)",
                _factor_rows(scores, labels, column("codec"), DF_CODEC_CONDITIONS, False, None, None),
            )
        )
    return out


def format_breakdown(breakdown: Breakdown) -> str:
    """Plain-text table: condition, bonafide and spoof trials, EER in percent (and min t-DCF)."""
    width = max([len(breakdown.title)] + [len(row.condition) for row in breakdown.rows])
    tdcf = f"  min t-DCF ({breakdown.tdcf_form})" if breakdown.tdcf_form else ""
    lines = [f"{breakdown.title:<{width}}  {'bonafide':>8}  {'spoof':>7}  {'EER (%)':>8}{tdcf}"]
    for row in breakdown.rows:
        eer = f"{100.0 * row.eer:>8.3f}" if row.eer is not None else f"{'-':>8}"
        cost = ""
        if breakdown.tdcf_form:
            cost = f"  {row.min_tdcf:>{len(tdcf) - 2}.4f}" if row.min_tdcf is not None else f"  {'-':>{len(tdcf) - 2}}"
        lines.append(f"{row.condition:<{width}}  {row.bonafide:>8d}  {row.spoof:>7d}  {eer}{cost}")
    return "\n".join(lines)
