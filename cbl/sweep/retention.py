"""Checkpoint retention: what an experiment folder keeps of each trial once it has ended.

While a trial runs it keeps what a resume needs (``last.pt``, ``previous.pt``)
and its ``best.pt``. Once the store says it has ended (``trial.json`` state
finished, stopped, lost, or an error with no retry left: :func:`has_ended`) its optimizer state goes (``last.pt``,
``previous.pt`` and any temporary file a kill left), and only the best
``checkpoints.keep_best`` trials of the sweep keep ``best.pt`` (ranked like
:func:`cbl.sweep.store.best_trial`, running trials included: a running trial's
best only improves, so an ended trial ranked below K now stays below K). A
trial named by a final evaluation's summary keeps its ``best.pt`` whatever its
rank. Metrics, config and history are never touched.

Crash safety: the decision is made from what the store says (``trial.json`` is
written atomically before any pruning), and every file removed is one a resume
cannot need: a trial the store calls ended is never trained again
(:func:`cbl.sweep.trial.run_trial` returns at once for it). A kill during pruning
leaves some of those files behind; the next pass (at the next trial end, at the
end of the sweep, or ``cbl-search prune``) removes them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from cbl.engine.footprint import format_bytes
from cbl.engine.run_dir import CHECKPOINTS, LAST, PREVIOUS
from cbl.sweep.store import TrialInfo, rank_trials, read_trials

__all__ = ["ENDED_STATES", "PruneResult", "has_ended", "plan_prune", "prune_experiment"]

logger = logging.getLogger(__name__)

# what a trial folder says once Ray will not train it again (lost: Ray re-ran it under another id)
ENDED_STATES = ("finished", "stopped", "error", "lost")
FINAL_DIR = "final_eval"  # cbl.sweep.final_eval writes its summaries here


@dataclass
class PruneResult:
    """The files a pass removed (or would remove) and their bytes."""

    removed: list[Path] = field(default_factory=list)
    freed_bytes: int = 0
    kept_best: list[str] = field(default_factory=list)  # trial ids whose best.pt is kept

    def line(self) -> str:
        return (
            f"pruned {len(self.removed)} checkpoint file(s), freed {format_bytes(self.freed_bytes)}; "
            f"best.pt kept for {len(self.kept_best)} trial(s)"
            + (f" ({', '.join(self.kept_best)})" if self.kept_best else "")
        )


def _final_eval_trials(experiment_dir: Path) -> set[str]:
    """Trials a final evaluation scored (their best.pt is never deleted)."""
    out = set()
    for summary in (experiment_dir / FINAL_DIR).glob("summary-*.json"):
        try:
            out.add(str(json.loads(summary.read_text())["trial_id"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def _optimizer_files(trial: TrialInfo) -> list[Path]:
    folder = trial.path / CHECKPOINTS
    files = [folder / LAST, folder / PREVIOUS]
    files += sorted(folder.glob(".*.tmp"))  # an atomic write cut short by a kill (cbl.yamlio)
    return [f for f in files if f.is_file()]


def has_ended(trial: TrialInfo, *, sweep_running: bool) -> bool:
    """Whether Ray will not train ``trial`` again: finished, stopped, lost, or an error with no retry left.

    While the sweep runs, a trial's own ``error`` may be retried by Ray (``failure.max_failures``) from its
    last.pt: only the driver's mark says no retry is left. With no driver running, every error is final
    (``resume --retry-errored`` then restarts a pruned trial from its first epoch).
    """
    if trial.state == "error":
        return trial.final or not sweep_running
    return trial.state in ENDED_STATES


def plan_prune(
    experiment_dir: Path, keep_best: int, mode: str = "min", *, sweep_running: bool = True
) -> tuple[list[Path], list[str]]:
    """The files the policy removes now, and the trial ids whose best.pt it keeps; nothing is deleted."""
    if keep_best < 1:
        raise ValueError(f"keep_best is {keep_best}, but must be >= 1 (the best trial's checkpoint is always kept)")
    trials = read_trials(experiment_dir)
    ranked = [t for t in rank_trials(trials, mode) if t.state != "lost"]
    keep = {t.trial_id for t in ranked[:keep_best]} | _final_eval_trials(experiment_dir)
    remove: list[Path] = []
    for trial in trials:
        if not has_ended(trial, sweep_running=sweep_running):
            continue
        remove += _optimizer_files(trial)
        if trial.trial_id not in keep and trial.best_checkpoint.is_file():
            remove.append(trial.best_checkpoint)
    kept = [t.trial_id for t in ranked if t.trial_id in keep]
    return remove, kept


def prune_experiment(
    experiment_dir: Path, keep_best: int, mode: str = "min", *, sweep_running: bool = True
) -> PruneResult:
    """Apply the policy to ``experiment_dir`` now; a file that vanished meanwhile is skipped."""
    remove, kept = plan_prune(experiment_dir, keep_best, mode, sweep_running=sweep_running)
    result = PruneResult(kept_best=kept)
    for path in remove:
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            continue
        result.removed.append(path)
        result.freed_bytes += size
    return result
