"""EER (ASVspoof reference algorithm), per-attack EER, detection scores and score files (t-DCF: cbl.tdcf).

Scores are "bonafide-ness": higher means more likely bonafide. The EER follows the
``compute_det_curve``/``compute_eer`` of the ASVspoof 2019/2021 evaluation package
step for step (including how tied scores are ordered: a stable sort with the
bonafide scores first), so our numbers match the official ones on any input.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from cbl.config import LossConfig
from cbl.errors import CblError
from cbl.yamlio import atomic_write_text

__all__ = [
    "AttackEer",
    "ScoreFile",
    "ZNormStats",
    "combine_scores",
    "compute_det_curve",
    "compute_eer",
    "finite_scores",
    "format_attack_table",
    "is_bonafide",
    "per_attack_eer",
    "read_score_file",
    "score_components",
    "score_from_output",
    "write_score_file",
]


# ----------------------------------------------------------------------------- EER
def _finite_scores(scores: Any, what: str) -> np.ndarray:
    array = np.asarray(scores.detach().cpu() if isinstance(scores, Tensor) else scores, dtype=np.float64).reshape(-1)
    bad = int(np.count_nonzero(~np.isfinite(array)))
    if bad:
        raise CblError(f"{what} contain {bad} non-finite value(s) (NaN or inf); cannot compute an error rate")
    return array


def finite_scores(scores: Any, what: str) -> np.ndarray:
    """Scores (numpy, tensor or sequence) as a flat float64 array; CblError naming ``what`` if one is NaN/inf."""
    return _finite_scores(scores, what)


def _two_classes(bonafide_scores: Any, spoof_scores: Any) -> tuple[np.ndarray, np.ndarray]:
    bonafide = _finite_scores(bonafide_scores, "bonafide scores")
    spoof = _finite_scores(spoof_scores, "spoof scores")
    if bonafide.size == 0 or spoof.size == 0:
        raise CblError(
            f"an error rate needs both bonafide and spoof scores, got {bonafide.size} bonafide and {spoof.size} spoof"
        )
    return bonafide, spoof


def compute_det_curve(bonafide_scores: Any, spoof_scores: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Miss (bonafide rejected) and false-alarm (spoof accepted) rates at every cut of the sorted scores.

    Returns ``(frr, far, thresholds)``, each of length N + 1: point 0 accepts
    everything (frr 0, far 1, threshold just below the lowest score); point i
    rejects the i lowest scores in stable-sort order (bonafide before spoof on ties).
    """
    bonafide, spoof = _two_classes(bonafide_scores, spoof_scores)
    all_scores = np.concatenate((bonafide, spoof))
    labels = np.concatenate((np.ones(bonafide.size), np.zeros(spoof.size)))
    order = np.argsort(all_scores, kind="mergesort")  # stable: ties keep bonafide first, as the reference does
    labels = labels[order]
    bonafide_rejected = np.cumsum(labels)
    spoof_accepted = spoof.size - (np.arange(1, all_scores.size + 1) - bonafide_rejected)
    frr = np.concatenate(([0.0], bonafide_rejected / bonafide.size))
    far = np.concatenate(([1.0], spoof_accepted / spoof.size))
    thresholds = np.concatenate(([all_scores[order[0]] - 0.001], all_scores[order]))
    return frr, far, thresholds


def compute_eer(bonafide_scores: Any, spoof_scores: Any) -> tuple[float, float]:
    """``(eer, threshold)`` as the ASVspoof reference: first cut minimising |frr - far|, eer = their mean.

    bonafide_scores: (Nb,), spoof_scores: (Ns,), numpy arrays, tensors or sequences.
    Raises CblError when a class is empty or a score is NaN/inf.
    """
    frr, far, thresholds = compute_det_curve(bonafide_scores, spoof_scores)
    index = int(np.argmin(np.abs(frr - far)))
    return float(np.mean((frr[index], far[index]))), float(thresholds[index])


def is_bonafide(scores: Any, threshold: float) -> np.ndarray:
    """The decision at a threshold of :func:`compute_eer`: bonafide where ``score > threshold``. ``(N,) -> (N,) bool``.

    compute_eer's threshold is the highest score its operating point rejects (point i
    of :func:`compute_det_curve` rejects the i lowest scores and has the i-th lowest as
    its threshold), so a score equal to the threshold is rejected; with ties at the
    threshold this rejects the whole tie, where the sorted cut may have split it.
    """
    return _finite_scores(scores, "scores") > float(threshold)


class AttackEer(NamedTuple):
    attack: str  # attack id, or "pooled" for all spoofs together
    n: int  # number of spoof trials of this attack
    eer: float


def _natural_key(text: str) -> list[Any]:
    """'A9' < 'A10': attack ids sort by their numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def per_attack_eer(scores: Any, labels: Any, attacks: Sequence[str]) -> list[AttackEer]:
    """EER of all bonafide trials against each attack's spoofs, then against all spoofs ("pooled").

    scores: (N,); labels: (N,) 1 bonafide / 0 spoof; attacks: N attack ids (ignored for bonafide).
    """
    score_array = _finite_scores(scores, "scores")
    label_array = np.asarray(labels.cpu() if isinstance(labels, Tensor) else labels).reshape(-1)
    if not (score_array.size == label_array.size == len(attacks)):
        raise CblError(
            "scores, labels and attacks must have the same length, "
            f"got {score_array.size}, {label_array.size} and {len(attacks)}"
        )
    attack_array = np.asarray([str(a) for a in attacks], dtype=object)
    bonafide = score_array[label_array == 1]
    spoof_mask = label_array == 0
    rows = []
    for attack in sorted(set(attack_array[spoof_mask].tolist()), key=_natural_key):
        attack_scores = score_array[spoof_mask & (attack_array == attack)]
        rows.append(AttackEer(attack, int(attack_scores.size), compute_eer(bonafide, attack_scores)[0]))
    rows.append(AttackEer("pooled", int(spoof_mask.sum()), compute_eer(bonafide, score_array[spoof_mask])[0]))
    return rows


def format_attack_table(rows: Sequence[tuple[str, int, float]]) -> str:
    """Plain-text table: attack, number of spoof trials, EER in percent."""
    width = max([len("attack")] + [len(str(attack)) for attack, _, _ in rows])
    lines = [f"{'attack':<{width}}  {'n':>7}  {'EER (%)':>8}"]
    lines += [f"{attack:<{width}}  {n:>7d}  {100.0 * eer:>8.3f}" for attack, n, eer in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- scores
def score_components(output: Any, centers: Any = None) -> dict[str, Tensor]:
    """Raw detection scores per utterance, each (B,), detached.

    ``ce`` = log p(bonafide) - log p(spoof) = logit[1] - logit[0];
    ``cluster`` = max_k cos(embedding, c_k), present only when centers are given.
    """
    logits = output.logits.detach().float()
    components = {"ce": logits[:, 1] - logits[:, 0]}
    center_tensor = getattr(centers, "centers", centers)
    if center_tensor is not None:
        # float32 outside autocast, as in the loss: the score is the quantity the EER ranks
        with torch.autocast(device_type=output.embedding.device.type, enabled=False):
            z = F.normalize(output.embedding.detach().float(), dim=-1)
            c = F.normalize(center_tensor.detach().to(device=z.device, dtype=torch.float32), dim=-1)
            components["cluster"] = (z @ c.T).max(dim=1).values
    return components


@dataclass(frozen=True)
class ZNormStats:
    """Mean and standard deviation of each raw score, for ``loss.score = sum``.

    Computed without labels on a reference set of utterances (use the dev split's
    scores and reuse them for eval), never per batch: a score must not depend on
    which other utterances share its batch.
    """

    cluster_mean: float
    cluster_std: float
    ce_mean: float
    ce_std: float

    @classmethod
    def from_components(cls, cluster: Any, ce: Any) -> ZNormStats:
        """cluster, ce: (N,) raw scores of the reference set (N >= 1)."""
        cluster_array = _finite_scores(cluster, "cluster scores")
        ce_array = _finite_scores(ce, "CE scores")
        if cluster_array.size == 0 or ce_array.size == 0:
            raise CblError("z-normalisation statistics need at least one score of each kind")
        return cls(
            float(cluster_array.mean()), float(cluster_array.std()), float(ce_array.mean()), float(ce_array.std())
        )


def combine_scores(
    components: dict[str, Tensor], loss_config: LossConfig, norm_stats: ZNormStats | None = None
) -> Tensor:
    """Pick or fuse raw scores (from ``score_components``) into the detection score (B,).

    cluster_only -> cluster; ce_only -> ce; combined -> per ``loss.score``:
    ``cluster``, ``ce``, or ``sum`` = (cluster - mean)/std + (ce - mean)/std with ``norm_stats``.
    """
    rule = {"cluster_only": "cluster", "ce_only": "ce"}.get(loss_config.type, loss_config.score)
    if rule in ("cluster", "sum") and "cluster" not in components:
        raise CblError(f"the '{rule}' score needs bonafide centers, but none were given")
    if rule == "cluster":
        return components["cluster"]
    if rule == "ce":
        return components["ce"]
    if rule != "sum":
        raise CblError(f"unknown score rule {rule!r}, expected cluster, ce or sum")
    if norm_stats is None:
        raise CblError(
            "loss.score=sum needs z-normalisation statistics: "
            "ZNormStats.from_components(...) on the dev split's raw scores"
        )
    floor = 1e-8  # a constant score (std 0) must not divide by zero
    cluster = (components["cluster"] - norm_stats.cluster_mean) / max(norm_stats.cluster_std, floor)
    ce = (components["ce"] - norm_stats.ce_mean) / max(norm_stats.ce_std, floor)
    return cluster + ce


def score_from_output(
    output: Any, centers: Any, loss_config: LossConfig, norm_stats: ZNormStats | None = None
) -> Tensor:
    """Detection score (B,) of a batch, higher = more bonafide (see ``combine_scores`` for the rules)."""
    return combine_scores(score_components(output, centers), loss_config, norm_stats)


# ----------------------------------------------------------------------------- score files
class ScoreFile(NamedTuple):
    utt_ids: list[str]
    scores: np.ndarray  # (N,) float64
    attacks: list[str] | None  # 2019 style only
    keys: list[str] | None  # "bonafide" / "spoof", 2019 style only


def _key_text(key: Any) -> str:
    if isinstance(key, str) and key in ("bonafide", "spoof"):
        return key
    if not isinstance(key, str) and int(key) in (0, 1):
        return "bonafide" if int(key) == 1 else "spoof"
    raise CblError(f"score file key must be 'bonafide'/'spoof' or 1/0, got {key!r}")


def write_score_file(
    path: str | os.PathLike[str],
    utt_ids: Sequence[str],
    scores: Any,
    *,
    attacks: Sequence[str] | None = None,
    keys: Sequence[Any] | None = None,
    style: str = "2021",
) -> Path:
    """Write scores atomically: ``2021`` -> ``UTT_ID SCORE``; ``2019`` -> ``UTT_ID ATTACK KEY SCORE``.

    Scores are written with full precision (``repr``), so reading them back gives
    the same EER. keys may be strings or 1/0 labels.
    """
    score_array = _finite_scores(scores, "scores")
    if len(utt_ids) != score_array.size:
        raise CblError(f"{len(utt_ids)} utterance ids but {score_array.size} scores")
    bad_id = next((u for u in utt_ids if not u or any(ch.isspace() for ch in u)), None)
    if bad_id is not None:
        raise CblError(f"utterance id {bad_id!r} is empty or contains whitespace; score files are space-separated")
    if style == "2021":
        lines = [f"{utt} {float(score)!r}" for utt, score in zip(utt_ids, score_array, strict=True)]
    elif style == "2019":
        if attacks is None or keys is None or len(attacks) != score_array.size or len(keys) != score_array.size:
            raise CblError("a 2019-style score file needs one attack and one key per score")
        lines = [
            f"{utt} {attack} {_key_text(key)} {float(score)!r}"
            for utt, attack, key, score in zip(utt_ids, attacks, keys, score_array, strict=True)
        ]
    else:
        raise CblError(f"score file style {style!r} is unknown, expected '2021' or '2019'")
    return atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))


def read_score_file(path: str | os.PathLike[str]) -> ScoreFile:
    """Read a 2021-style (2 columns) or 2019-style (4 columns) score file."""
    source = Path(path)
    if not source.is_file():
        raise CblError(f"{source}: no such score file")
    utt_ids: list[str] = []
    scores: list[float] = []
    attacks: list[str] = []
    keys: list[str] = []
    columns: int | None = None
    for number, line in enumerate(source.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) not in (2, 4) or (columns is not None and len(fields) != columns):
            expected = f"{columns}" if columns else "2 (UTT_ID SCORE) or 4 (UTT_ID ATTACK KEY SCORE)"
            raise CblError(f"{source}:{number}: expected {expected} columns, got {len(fields)}")
        columns = len(fields)
        try:
            score = float(fields[-1])
        except ValueError:
            raise CblError(f"{source}:{number}: score {fields[-1]!r} is not a number") from None
        if not math.isfinite(score):
            raise CblError(f"{source}:{number}: score {fields[-1]!r} is not finite")
        utt_ids.append(fields[0])
        scores.append(score)
        if columns == 4:
            attacks.append(fields[1])
            keys.append(fields[2])
    four = columns == 4
    return ScoreFile(utt_ids, np.asarray(scores, dtype=np.float64), attacks if four else None, keys if four else None)
