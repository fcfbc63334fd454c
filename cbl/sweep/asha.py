"""ASHA whose decisions survive a resume.

Ray Tune drops the scheduler's state when it snapshots an experiment and rebuilds
ASHA empty on restore, so a weak trial that an uninterrupted sweep stops at its
first rung would run to the end after a resume. This
subclass writes its rungs and the set of trials it stopped to a JSON file in the
experiment folder after every decision (atomically) and reads it back when
restored: the rungs are as before the interruption, and a trial it already
stopped is stopped again at its first report (or, via :func:`was_stopped`, before
it trains at all).

Progress is measured in the trial's own reported ``epoch`` (not Ray's
``training_iteration``, which restarts from zero when a trial is resumed from our
own checkpoint store rather than from a Ray checkpoint).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from cbl.yamlio import atomic_write_text

__all__ = ["STATE_FILE", "PersistentASHA", "was_stopped"]

STATE_FILE = "scheduler_state.json"


def _read_state(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def was_stopped(experiment_dir: str | Path, trial_id: str) -> bool:
    """Whether the scheduler of this experiment stopped ``trial_id`` early before an interruption."""
    return trial_id in _read_state(Path(experiment_dir) / STATE_FILE).get("stopped", [])


class PersistentASHA(ASHAScheduler):
    """``ASHAScheduler(time_attr="epoch")`` that persists its rungs to ``experiment_dir/scheduler_state.json``."""

    def __init__(self, experiment_dir: str, *, max_t: int, grace_period: int, reduction_factor: float) -> None:
        super().__init__(time_attr="epoch", max_t=max_t, grace_period=grace_period, reduction_factor=reduction_factor)
        self._state_path = str(Path(experiment_dir) / STATE_FILE)
        self._stopped: set[str] = set()
        self._loaded = False

    # -------------------------------------------------------------- persistence
    def _load_once(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        state = _read_state(Path(self._state_path))
        if not state:
            return
        self._stopped = set(state.get("stopped", []))
        # a state file of another bracket count restores the brackets it has
        for bracket, saved in zip(self._brackets, state.get("brackets", []), strict=False):
            by_milestone = {float(m): recorded for m, recorded in saved}
            bracket._rungs = [
                (milestone, dict(by_milestone.get(float(milestone), recorded)))
                for milestone, recorded in bracket._rungs
            ]

    def _save(self) -> None:
        state = {
            "stopped": sorted(self._stopped),
            "brackets": [[[milestone, recorded] for milestone, recorded in b._rungs] for b in self._brackets],
        }
        atomic_write_text(self._state_path, json.dumps(state, indent=1))

    def __getstate__(self) -> dict[str, Any]:
        # tuner.pkl keeps the constructor's view; the JSON file is the truth after a restore
        state = self.__dict__.copy()
        state["_loaded"] = False
        return state

    # -------------------------------------------------------------- hooks
    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._load_once()
        super().on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        self._load_once()
        if trial.trial_id in self._stopped:
            return TrialScheduler.STOP
        action = super().on_trial_result(tune_controller, trial, result)
        if action == TrialScheduler.STOP and result.get(self._time_attr, 0) < self._max_t:
            self._stopped.add(trial.trial_id)
        self._save()
        return action
