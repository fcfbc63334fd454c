"""A run's folder: its layout, the per-epoch history, the checkpoint to resume from, one epoch written.

Layout::

    config.yaml                 the config the run was asked to train (runtime keys as given)
    metrics.jsonl               one JSON line per epoch
    checkpoints/last.pt         the newest epoch (model, optimizer, centers, step, best, RNG, config)
    checkpoints/previous.pt     the one before, with train.keep_previous_checkpoint: the fallback when
                                last.pt is found damaged (default: none, last.pt is checked when written)
    checkpoints/best.pt         the epoch with the lowest dev EER (no optimizer state)
    checkpoints/best_dev_scores.txt   that epoch's dev scores (cbl.engine.dev_scores), written just before best.pt

The history line of an epoch is written before its checkpoint: a crash between
the two reruns the epoch and drops the line (:func:`truncate_history`).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from cbl.config import ExperimentConfig, check_same_config
from cbl.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from cbl.errors import CblError
from cbl.yamlio import atomic_write_text

__all__ = [
    "BEST",
    "CHECKPOINTS",
    "HISTORY",
    "LAST",
    "PREVIOUS",
    "append_history",
    "read_history",
    "resume_payload",
    "truncate_history",
    "write_epoch",
]

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
LAST = "last.pt"
PREVIOUS = "previous.pt"  # the checkpoint before last.pt (train.keep_previous_checkpoint), the fallback
BEST = "best.pt"
HISTORY = "metrics.jsonl"


def read_history(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The per-epoch metrics of a run (empty when none was written yet)."""
    path = Path(run_dir) / HISTORY
    if not path.is_file():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    history = []
    for number, line in enumerate(lines, 1):
        try:
            history.append(json.loads(line))
        except ValueError:
            if number == len(lines):
                break  # a last line cut short by a kill mid-write: that epoch was not checkpointed either
            raise CblError(f"{path}:{number}: not a JSON line (the file is damaged)") from None
    return history


def append_history(run_dir: Path, metrics: dict[str, Any]) -> None:
    """Append one epoch's line; a failed write (disk full) is an OSError naming the file."""
    path = run_dir / HISTORY
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(metrics) + "\n")
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or os.strerror(exc.errno or 0), str(path)) from None


def truncate_history(run_dir: Path, last_epoch_index: int) -> None:
    """Drop history lines after the checkpointed epoch (an epoch that ran but was not checkpointed)."""
    path = run_dir / HISTORY
    if not path.is_file():
        return
    keep = [json.dumps(m) for m in read_history(run_dir) if m["epoch"] <= last_epoch_index + 1]
    atomic_write_text(path, "".join(f"{line}\n" for line in keep))


def resume_payload(run_dir: Path, config: ExperimentConfig) -> tuple[dict[str, Any] | None, Path | None]:
    """The payload to resume from: ``last.pt``, or ``previous.pt`` when last.pt is unreadable.

    Returns (None, None) for a fresh run. A checkpoint of another configuration is
    refused; when every checkpoint present is unreadable, the error names them all.
    """
    ckpt_dir = run_dir / CHECKPOINTS
    failures: list[str] = []
    for path in (ckpt_dir / LAST, ckpt_dir / PREVIOUS):
        if not path.is_file():
            continue
        try:
            payload, saved = load_checkpoint(path)
        except CheckpointError as exc:
            logger.warning("%s; trying the previous checkpoint", exc)
            failures.append(str(exc))
            continue
        check_same_config(
            saved, config, folder=run_dir, advice="resume it with its own config.yaml, or train into a new folder"
        )
        if failures:
            logger.warning("resuming %s from %s (epoch %d)", run_dir, path.name, payload["epoch"] + 1)
        return payload, path
    if failures:
        raise CheckpointError(f"no usable checkpoint to resume from: {' / '.join(failures)}")
    return None, None


def write_epoch(
    run_dir: Path, metrics: dict[str, Any], payload: dict[str, Any], config: ExperimentConfig, *, improved: bool
) -> None:
    """One finished epoch on disk: its history line, best.pt when it ``improved``, then last.pt.

    ``config``: what the run was asked to train. By default one resume checkpoint is kept:
    the new last.pt goes to a temporary file (fsync), is read back and checked
    (:func:`cbl.engine.checkpoint.verify_written`), renamed over last.pt, and only then is a
    previous.pt deleted. A kill before the rename leaves the old last.pt, after it the new
    one (and at worst a stale previous.pt, which the resume reads only if last.pt is
    unreadable). The transient: the temporary file next to last.pt while it is written.
    With ``train.keep_previous_checkpoint`` the old last.pt is renamed to previous.pt first
    (a kill between the two leaves previous.pt, which :func:`resume_payload` falls back to).
    """
    ckpt_dir = run_dir / CHECKPOINTS
    append_history(run_dir, metrics)  # first: a crash before last.pt is written reruns this epoch, drops the line
    if improved:
        save_checkpoint(ckpt_dir / BEST, {k: v for k, v in payload.items() if k != "optimizer"}, config)
    last, previous = ckpt_dir / LAST, ckpt_dir / PREVIOUS
    if config.train.keep_previous_checkpoint:
        if last.is_file():
            os.replace(last, previous)
        save_checkpoint(last, payload, config)
        return
    save_checkpoint(last, payload, config, verify=True)
    previous.unlink(missing_ok=True)
