"""The trainable: one trial = one :func:`cbl.engine.fit` in ``trials/<trial_id>/`` of the experiment.

Trials keep their checkpoints there rather than in Ray's checkpoint registry: Ray's
experiment snapshot can be older than a trial's newest checkpoint (it is written
every few seconds), and after a SIGKILL a trial then restarts from an older one, or
from scratch. A trial that finds ``last.pt`` in its own folder continues from it,
so a resume loses at most the epoch in progress. It reports once per epoch (one
report = one ASHA step).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import ray
from ray import tune

from cbl.engine import fit
from cbl.engine.frozen import FROZEN_DIR
from cbl.sweep.asha import was_stopped
from cbl.sweep.settings import SweepSettings
from cbl.sweep.store import trial_dir, write_trial_state

__all__ = ["run_trial"]


class _TuneReporter:
    def report(self, metrics: dict[str, Any], checkpoint_dir: Path) -> None:
        tune.report({k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})


def run_trial(config: dict[str, Any], settings: dict[str, Any]) -> None:
    """Ray Tune function trainable: one trial = one :func:`cbl.engine.fit` in ``trials/<trial_id>``."""
    sweep = SweepSettings(**settings)
    context = tune.get_context()
    trial_id = context.get_trial_id()
    experiment_dir = Path(sweep.experiment_dir)
    path = trial_dir(experiment_dir, trial_id)
    if was_stopped(experiment_dir, trial_id):
        return  # ASHA stopped it before the interruption: keep that decision, train nothing more
    if _state(path) in ("finished", "stopped"):
        # it ended after Ray's last snapshot: done, and its optimizer state may be pruned already
        return
    sampled = dict(config)
    write_trial_state(
        path,
        trial_id=trial_id,
        params=sampled,
        state="running",
        ended=False,  # set by the driver when no retry is left (cbl.sweep.retention prunes it then)
        error="",
        node_id=ray.get_runtime_context().get_node_id(),
        host=os.uname().nodename,
    )
    resources = context.get_trial_resources()
    cpus = resources.required_resources.get("CPU", 1) if resources is not None else 1
    trial_config = sweep.trial_config(sampled)
    if trial_config.train.feature_cache and not trial_config.train.feature_cache_dir:
        trial_config.train.feature_cache_dir = str(experiment_dir / "feature_cache")  # one cache for every trial
    if not trial_config.train.frozen_dir:
        trial_config.train.frozen_dir = str(experiment_dir / FROZEN_DIR)  # frozen weights once per experiment
    try:
        result = fit(trial_config, _TuneReporter(), path, cpus=cpus)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        write_trial_state(path, state="error", error=reason)
        raise
    write_trial_state(path, state="finished", best_dev_eer=result.best_dev_eer, best_epoch=result.best_epoch)


def _state(path: Path) -> str:
    try:
        return str(json.loads((path / "trial.json").read_text()).get("state", ""))
    except (OSError, ValueError):
        return ""
