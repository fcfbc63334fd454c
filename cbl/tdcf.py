"""The tandem detection cost function (t-DCF) of a countermeasure (CM) and the organisers' ASV scores.

Two published forms, named apart because they give different numbers:

- **ASVspoof 2019** (Kinnunen et al., "t-DCF: a Detection Cost Function for the
  Tandem Assessment of Spoofing Countermeasures and Automatic Speaker
  Verification", Odyssey 2018; ASVspoof 2019 evaluation plan):
  ``t-DCF(s) = (C1 Pmiss_cm(s) + C2 Pfa_cm(s)) / min(C1, C2)`` with
  ``C1 = Ptar (Cmiss_cm - Cmiss_asv Pmiss_asv) - Pnon Cfa_asv Pfa_asv`` and
  ``C2 = Cfa_cm Pspoof (1 - Pmiss_spoof_asv)``. A perfect CM scores 0; a CM that
  accepts everything scores C2 / min(C1, C2) (1 when C2 <= C1), so the minimum is at most 1.
- **ASVspoof 2021**, revised (Kinnunen et al., "Tandem Assessment of Spoofing
  Countermeasures and Automatic Speaker Verification: Fundamentals", IEEE/ACM
  TASLP 2020; ASVspoof 2021 evaluation plan):
  ``t-DCF(s) = (C0 + C1 Pmiss_cm(s) + C2 Pfa_cm(s)) / (C0 + min(C1, C2))`` with
  ``C0 = Ptar Cmiss Pmiss_asv + Pnon Cfa Pfa_asv``, ``C1 = Ptar Cmiss - C0`` and
  ``C2 = Pspoof Cfa_spoof Pfa_spoof_asv``. A perfect CM scores C0 / (C0 + min(C1, C2))
  (the ASV's own errors), one that accepts everything 1 when C2 <= C1.

Both fix the ASV at its EER threshold (target vs non-target, :func:`cbl.metrics.compute_eer`)
with accept = score >= threshold, sweep the CM over every cut of its sorted scores
(:func:`cbl.metrics.compute_det_curve`) and report the minimum. Constants of both
evaluation plans: Pspoof 0.05, Ptar 0.95 x 0.99, Pnon 0.95 x 0.01, miss costs 1,
false-alarm costs 10.

ASV score files: ASVspoof 2019 ``ASVspoof2019.LA.asv.{dev,eval}.gi.trl.scores.txt``,
lines ``SOURCE KEY SCORE`` (``bonafide target 1.23``, ``A07 spoof 0.45``);
ASVspoof 2021 ``keys/LA/ASV/ASVTorch_Kaldi/score.txt``, lines ``SPEAKER TRIAL SCORE``,
paired line by line with ``keys/LA/ASV/trial_metadata.txt`` (``SPEAKER TRIAL CODEC
TRANSMISSION ATTACK KEY TRIM SUBSET``), as the 2021 evaluation package pairs them (a
trial id recurs for several claimed speakers, so ids do not join them).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from cbl.errors import CblError, UsageError
from cbl.metrics import compute_det_curve, compute_eer
from cbl.yamlio import read_text_file

__all__ = [
    "TDCF_2019_COST_MODEL",
    "TDCF_2021_COST_MODEL",
    "AsvErrorRates",
    "AsvScores",
    "asv_error_rates",
    "min_tdcf_2019",
    "min_tdcf_2021",
    "read_asv_scores",
]

_PSPOOF = 0.05
# ASVspoof 2019 evaluation plan
TDCF_2019_COST_MODEL: dict[str, float] = {
    "Pspoof": _PSPOOF,  # prior of a spoofing attack
    "Ptar": (1 - _PSPOOF) * 0.99,  # prior of a target speaker
    "Pnon": (1 - _PSPOOF) * 0.01,  # prior of a non-target speaker
    "Cmiss_asv": 1.0,  # ASV falsely rejects a target
    "Cfa_asv": 10.0,  # ASV falsely accepts a non-target
    "Cmiss_cm": 1.0,  # CM falsely rejects a bonafide trial
    "Cfa_cm": 10.0,  # CM falsely accepts a spoof
}
# ASVspoof 2021 evaluation plan (the costs are of the tandem system)
TDCF_2021_COST_MODEL: dict[str, float] = {
    "Pspoof": _PSPOOF,
    "Ptar": (1 - _PSPOOF) * 0.99,
    "Pnon": (1 - _PSPOOF) * 0.01,
    "Cmiss": 1.0,  # the tandem falsely rejects a target
    "Cfa": 10.0,  # the tandem falsely accepts a non-target
    "Cfa_spoof": 10.0,  # the tandem falsely accepts a spoof
}
_ASV_KEYS = ("target", "nontarget", "spoof")


class AsvErrorRates(NamedTuple):
    """The ASV's operating point: its EER threshold and the error rates there (fractions)."""

    threshold: float
    pfa: float  # non-targets accepted
    pmiss: float  # targets rejected
    pfa_spoof: float  # spoofs accepted (1 - Pmiss_spoof_asv)


def asv_error_rates(target: Any, nontarget: Any, spoof: Any) -> AsvErrorRates:
    """ASV error rates at the ASV's EER threshold (target vs non-target); accept = score >= threshold."""
    target, nontarget, spoof = (np.asarray(a, dtype=np.float64).reshape(-1) for a in (target, nontarget, spoof))
    if spoof.size == 0:
        raise CblError("t-DCF needs ASV scores of spoofed trials, got none")
    threshold = compute_eer(target, nontarget)[1]  # checks that targets and non-targets are there, and finite
    if not np.isfinite(spoof).all():
        raise CblError("ASV spoof scores contain non-finite values")
    return AsvErrorRates(
        float(threshold),
        float(np.mean(nontarget >= threshold)),
        float(np.mean(target < threshold)),
        float(np.mean(spoof >= threshold)),
    )


def _minimum(normalised: np.ndarray, thresholds: np.ndarray) -> tuple[float, float]:
    index = int(np.argmin(normalised))
    return float(normalised[index]), float(thresholds[index])


def min_tdcf_2019(
    bonafide_scores: Any, spoof_scores: Any, asv: AsvErrorRates, cost_model: dict[str, float] | None = None
) -> tuple[float, float]:
    """Normalised minimum t-DCF, ASVspoof 2019 form; ``(min t-DCF, CM threshold)``. Scores (N,), higher = bonafide."""
    cost = TDCF_2019_COST_MODEL if cost_model is None else cost_model
    c1 = cost["Ptar"] * (cost["Cmiss_cm"] - cost["Cmiss_asv"] * asv.pmiss) - cost["Pnon"] * cost["Cfa_asv"] * asv.pfa
    c2 = cost["Cfa_cm"] * cost["Pspoof"] * asv.pfa_spoof
    if c1 <= 0 or c2 <= 0:
        raise CblError(
            f"t-DCF (2019) weights must be positive, got C1={c1:.4g} and C2={c2:.4g} (C2 is 0 when the "
            "ASV rejects every spoof): check the ASV scores"
        )
    pmiss_cm, pfa_cm, thresholds = compute_det_curve(bonafide_scores, spoof_scores)
    return _minimum((c1 * pmiss_cm + c2 * pfa_cm) / min(c1, c2), thresholds)


def min_tdcf_2021(
    bonafide_scores: Any, spoof_scores: Any, asv: AsvErrorRates, cost_model: dict[str, float] | None = None
) -> tuple[float, float]:
    """Normalised minimum t-DCF, revised ASVspoof 2021 form; ``(min t-DCF, CM threshold)``."""
    cost = TDCF_2021_COST_MODEL if cost_model is None else cost_model
    c0 = cost["Ptar"] * cost["Cmiss"] * asv.pmiss + cost["Pnon"] * cost["Cfa"] * asv.pfa
    c1 = cost["Ptar"] * cost["Cmiss"] - c0
    c2 = cost["Pspoof"] * cost["Cfa_spoof"] * asv.pfa_spoof
    default = c0 + min(c1, c2)  # the cost of a CM that accepts (or rejects) everything, whichever is lower
    if c0 < 0 or c1 < 0 or c2 < 0 or default <= 0:
        raise CblError(
            f"t-DCF (2021) weights must be non-negative with a positive default cost, got C0={c0:.4g}, "
            f"C1={c1:.4g}, C2={c2:.4g}: check the ASV scores"
        )
    pmiss_cm, pfa_cm, thresholds = compute_det_curve(bonafide_scores, spoof_scores)
    return _minimum((c0 + c1 * pmiss_cm + c2 * pfa_cm) / default, thresholds)


@dataclass(frozen=True)
class AsvScores:
    """The organisers' ASV trials: one score, key, attack and codec per trial (N,)."""

    source: str
    scores: np.ndarray  # float64
    keys: np.ndarray  # "target" | "nontarget" | "spoof"
    attacks: np.ndarray  # attack id of spoofed trials ("bonafide" or "-" otherwise)
    codecs: np.ndarray | None  # ASVspoof 2021 keys: the codec column; None for 2019 files

    def rates(self, *, attack: str | None = None, codec: str | None = None) -> AsvErrorRates:
        """Error rates on the trials of one condition, as the 2021 package restricts them: a codec
        restricts every trial, an attack only the spoofed ones."""
        keep = np.ones(self.scores.size, dtype=bool)
        if codec is not None:
            if self.codecs is None:
                raise CblError(f"{self.source}: an ASVspoof 2019 ASV score file has no codec column")
            keep &= self.codecs == codec
        spoof = keep & (self.keys == "spoof")
        if attack is not None:
            spoof &= self.attacks == attack
        return asv_error_rates(
            self.scores[keep & (self.keys == "target")],
            self.scores[keep & (self.keys == "nontarget")],
            self.scores[spoof],
        )


def _lines(path: Path) -> list[tuple[int, list[str]]]:
    text = read_text_file(path, UsageError, "ASV file")
    return [
        (n, line.split()) for n, line in enumerate(text.splitlines(), 1) if line.strip() and not line.startswith("#")
    ]


def _score(path: Path, number: int, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{path}:{number}: ASV score {text!r} is not a number") from None
    if not math.isfinite(value):
        raise UsageError(f"{path}:{number}: ASV score {text!r} is not finite")
    return value


def _key(path: Path, number: int, word: str) -> str:
    if word not in _ASV_KEYS:
        raise UsageError(f"{path}:{number}: unknown ASV key {word!r}, expected target, nontarget or spoof")
    return word


def read_asv_scores(
    scores: str | os.PathLike[str], key: str | os.PathLike[str] | None = None, *, subset: str | None = "eval"
) -> AsvScores:
    """The organisers' ASV scores: a 2019 score file alone, or a 2021 ``score.txt`` with its ``trial_metadata.txt``.

    ``subset`` keeps the 2021 rows of that SUBSET column (official scoring: ``eval``);
    None keeps all. Bad lines raise :class:`UsageError` naming the file and line.
    """
    path = Path(scores)
    rows = _lines(path)
    if not rows:
        raise UsageError(f"{path}: ASV score file is empty")
    if key is None:
        number, fields = rows[0]
        source_2019 = fields[0] == "bonafide" or re.fullmatch(r"A\d+", fields[0]) is not None
        if len(fields) == 3 and fields[1] not in _ASV_KEYS and not source_2019:
            raise UsageError(
                f"{path}:{number}: looks like an ASVspoof 2021 ASV score.txt (SPEAKER TRIAL SCORE): "
                "give its trial_metadata.txt too (--asv-key)"
            )
        values, keys, attacks = [], [], []
        for number, fields in rows:
            if len(fields) != 3:
                raise UsageError(
                    f"{path}:{number}: expected 3 columns 'SOURCE KEY SCORE' (ASVspoof 2019 ASV "
                    f"scores), got {len(fields)}"
                )
            attacks.append(fields[0])
            keys.append(_key(path, number, fields[1]))
            values.append(_score(path, number, fields[2]))
        return AsvScores(str(path), np.array(values), np.array(keys), np.array(attacks), None)
    return _read_2021(path, rows, Path(key), subset)


def _read_2021(path: Path, rows: list[tuple[int, list[str]]], key_path: Path, subset: str | None) -> AsvScores:
    meta = _lines(key_path)
    if len(meta) != len(rows):
        raise UsageError(
            f"{path}: {len(rows)} ASV scores but {len(meta)} trials in {key_path}; the 2021 files pair line by line"
        )
    values, keys, attacks, codecs = [], [], [], []
    for (number, fields), (key_number, info) in zip(rows, meta, strict=True):
        if len(fields) != 3:
            raise UsageError(
                f"{path}:{number}: expected 3 columns 'SPEAKER TRIAL SCORE' (ASVspoof 2021 ASV "
                f"scores), got {len(fields)}"
            )
        if len(info) != 8:
            raise UsageError(
                f"{key_path}:{key_number}: expected 8 columns 'SPEAKER TRIAL CODEC TRANSMISSION "
                f"ATTACK KEY TRIM SUBSET' (ASVspoof 2021 LA ASV key), got {len(info)}"
            )
        if fields[:2] != info[:2]:
            raise UsageError(
                f"{path}:{number}: trial '{' '.join(fields[:2])}' but {key_path}:{key_number} holds "
                f"'{' '.join(info[:2])}'; the files must be in the same order"
            )
        if subset is not None and info[7] != subset:
            continue
        values.append(_score(path, number, fields[2]))
        keys.append(_key(key_path, key_number, info[5]))
        attacks.append(info[4])
        codecs.append(info[2])
    if not values:
        raise UsageError(f"{key_path}: no ASV trial of subset {subset!r}")
    return AsvScores(str(path), np.array(values), np.array(keys), np.array(attacks), np.array(codecs))
