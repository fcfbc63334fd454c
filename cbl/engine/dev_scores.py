"""The best epoch's dev scores, kept beside ``best.pt``: what comparing two trials on the same dev utterances reads.

File ``checkpoints/best_dev_scores.txt`` of a run folder::

    # cbl dev scores, epoch 3
    LA_D_0000001 1 0.8123049307197332 LA_0069
    UTT_ID LABEL SCORE SPEAKER        (label 1 bonafide / 0 spoof; the speaker is the rest of the line)

Written atomically whenever an epoch improves on the best dev EER, before ``best.pt``
(a crash between the two reruns the epoch, which rewrites the same scores).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from cbl.errors import CblError
from cbl.metrics import finite_scores
from cbl.yamlio import atomic_write_text

__all__ = ["DEV_SCORES", "DevScores", "read_dev_scores", "write_dev_scores"]

DEV_SCORES = "best_dev_scores.txt"
_HEADER = re.compile(r"# cbl dev scores, epoch (\d+)$")


class DevScores(NamedTuple):
    epoch: int  # 1-based, the epoch the scores are of
    utt_ids: list[str]
    labels: np.ndarray  # (N,) int64, 1 bonafide / 0 spoof
    scores: np.ndarray  # (N,) float64
    speakers: list[str]


def write_dev_scores(
    path: str | os.PathLike[str],
    epoch: int,
    utt_ids: Sequence[str],
    labels: Any,
    scores: Any,
    speakers: Sequence[str],
) -> Path:
    """Write one epoch's dev scores (N utterances) atomically; ``epoch`` 1-based."""
    score_array = finite_scores(scores, "dev scores")
    label_array = np.asarray(labels).reshape(-1)
    if not (len(utt_ids) == label_array.size == score_array.size == len(speakers)):
        raise CblError(
            f"dev scores: {len(utt_ids)} ids, {label_array.size} labels, {score_array.size} scores "
            f"and {len(speakers)} speakers; expected one of each per utterance"
        )
    lines = [f"# cbl dev scores, epoch {int(epoch)}"]
    for utt, label, score, speaker in zip(utt_ids, label_array.tolist(), score_array.tolist(), speakers, strict=True):
        lines.append(f"{utt} {int(label)} {float(score)!r} {str(speaker).strip() or '-'}")
    return atomic_write_text(path, "\n".join(lines) + "\n")


def read_dev_scores(path: str | os.PathLike[str]) -> DevScores:
    """Read a file :func:`write_dev_scores` wrote; CblError naming the file and line when it is not one."""
    source = Path(path)
    if not source.is_file():
        raise CblError(f"{source}: no dev score file (runs before cbl 0.3 did not keep one)")
    lines = source.read_text(encoding="utf-8").splitlines()
    header = _HEADER.match(lines[0].strip()) if lines else None
    if header is None:
        raise CblError(f"{source}:1: expected the header '# cbl dev scores, epoch N'")
    utt_ids: list[str] = []
    labels: list[int] = []
    scores: list[float] = []
    speakers: list[str] = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split(maxsplit=3)
        if len(fields) != 4 or fields[1] not in ("0", "1"):
            raise CblError(f"{source}:{number}: expected 'UTT_ID LABEL(0/1) SCORE SPEAKER', got {line.strip()!r}")
        try:
            score = float(fields[2])
        except ValueError:
            raise CblError(f"{source}:{number}: score {fields[2]!r} is not a number") from None
        if not math.isfinite(score):
            raise CblError(f"{source}:{number}: score {fields[2]!r} is not finite")
        utt_ids.append(fields[0])
        labels.append(int(fields[1]))
        scores.append(score)
        speakers.append(fields[3].strip())
    return DevScores(int(header.group(1)), utt_ids, np.asarray(labels, dtype=np.int64), np.asarray(scores), speakers)
