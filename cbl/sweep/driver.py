"""The driver side of a sweep: start (or join) Ray, build the Tuner, run it, say what happens in one line each.

The trainable (:func:`cbl.sweep.trial.run_trial`) trains each trial in its own
folder of the experiment; this side only starts, resumes and watches them.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune import Callback

from cbl.engine.run_dir import read_history
from cbl.errors import CblError
from cbl.sweep.asha import PersistentASHA
from cbl.sweep.budget import concurrent_trials, local_gpu_memory, say_budget
from cbl.sweep.retention import prune_experiment
from cbl.sweep.sampling import total_trials
from cbl.sweep.searchers import build_searcher
from cbl.sweep.settings import SweepSettings
from cbl.sweep.space import SearchSpace
from cbl.sweep.store import best_trial, format_param, read_trials, trial_dir, write_sweep, write_trial_state
from cbl.sweep.trial import run_trial
from cbl.uncertainty import format_interval

__all__ = ["TrialLines", "build_tuner", "mark_lost_trials", "run_sweep", "start_ray"]


def start_ray(address: str | None, spec: SearchSpace) -> dict[str, float]:
    """Start a private local Ray (or join ``address``); fail early when a trial cannot fit the cluster."""
    if ray.is_initialized():
        resources = ray.cluster_resources()
    else:
        kwargs: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "configure_logging": True,
            "logging_level": "ERROR",
        }
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(address="local", object_store_memory=256 * 1024**2, **kwargs)
        resources = ray.cluster_resources()
    # Ray logs each failed trial with its traceback; our trial lines and `status` say it in one line
    for name in ("ray.tune", "ray.train", "ray.air"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    if spec.gpu > 0 and gpus == 0:
        raise CblError(
            f"{spec.source}: resources.gpu is {spec.gpu} per trial, but the Ray cluster has no GPU "
            "(set resources.gpu: 0, or run where a GPU is visible)"
        )
    if spec.gpu > gpus:
        raise CblError(f"{spec.source}: resources.gpu is {spec.gpu} per trial, but the cluster has {gpus:g} GPU(s)")
    if spec.cpu > cpus:
        raise CblError(f"{spec.source}: resources.cpu is {spec.cpu:g} per trial, but the cluster has {cpus:g} CPU(s)")
    return resources


class TrialLines(Callback):
    """Driver callback: one line per epoch result and per ended trial, and trial states on disk.

    Ray marks a trial that ASHA stopped early TERMINATED like a finished one; the
    epoch count tells them apart (``stopped`` below ``max_t``).
    """

    def __init__(self, experiment_dir: str, total: int, max_t: int, keep_best: int = 3, mode: str = "min") -> None:
        self.experiment_dir = Path(experiment_dir)
        self.total = total
        self.max_t = max_t
        self.keep_best = keep_best
        self.mode = mode

    def on_trial_result(self, iteration, trials, trial, result, **info):
        params = ", ".join(f"{k.split('.')[-1]}={format_param(v)}" for k, v in (trial.config or {}).items())
        interval = format_interval(result)
        _echo(
            f"[{trial.trial_id}] epoch {result.get('epoch', '?')}/{self.max_t}  dev EER "
            f"{100 * result.get('dev_eer', math.nan):.2f}%{f' ({interval})' if interval else ''}  ({params})"
        )

    def on_trial_complete(self, iteration, trials, trial, **info):
        path = trial_dir(self.experiment_dir, trial.trial_id)
        # a trial re-run after a resume returns without reporting: its own history says how far it got
        epochs = max(int((trial.last_result or {}).get("epoch", 0)), len(read_history(path)))
        state = "finished" if epochs >= self.max_t else "stopped"
        if path.exists():
            write_trial_state(path, state=state)  # first: pruning decides by what the store says
        _echo(f"[{trial.trial_id}] {state} after {epochs} epoch(s)")
        self._prune()
        self._summary(trials, trial)

    def _prune(self) -> None:
        _prune_quietly(self.experiment_dir, self.keep_best, self.mode)

    def _summary(self, trials, ended) -> None:
        """The live state of the sweep in one line: counts and the best trial so far."""
        done = sum(t is ended or t.status in ("TERMINATED", "ERROR") for t in trials)
        running = sum(t.status == "RUNNING" and t is not ended for t in trials)
        best = best_trial(read_trials(self.experiment_dir))
        lead = ""
        if best is not None:
            params = ", ".join(f"{k.split('.')[-1]}={format_param(v)}" for k, v in best.params.items())
            lead = f"; best so far {best.trial_id} {100 * best.best_dev_eer:.2f}% ({params})"
        _echo(f"-- {done}/{self.total} trials ended, {running} running{lead}")

    def on_trial_error(self, iteration, trials, trial, **info):
        path = trial_dir(self.experiment_dir, trial.trial_id)
        reason = "see the trial's error.txt in Ray's trial folder"
        if path.exists():
            write_trial_state(path, state="error", ended=True)  # no retry left (Ray calls on_trial_recover else)
            reason = json.loads((path / "trial.json").read_text()).get("error") or reason
        _echo(f"[{trial.trial_id}] error: {reason}")
        self._prune()
        self._summary(trials, trial)


def _echo(line: str) -> None:
    print(line, flush=True)


def _prune_quietly(experiment_dir: Path, keep_best: int, mode: str) -> None:
    """The retention policy now; a failure is a warning line, never the sweep's end."""
    try:
        prune_experiment(experiment_dir, keep_best, mode)
    except OSError as exc:
        _echo(f"warning: pruning checkpoints failed ({exc}); `cbl-search prune` retries it")


def build_tuner(settings: SweepSettings, spec: SearchSpace) -> tuple[Any, tune.TuneConfig, tune.RunConfig]:
    """The trainable, TuneConfig and RunConfig of a sweep (the searcher, ASHA, resources, storage, callbacks)."""
    experiment_dir = Path(settings.experiment_dir)
    max_t = spec.max_t or settings.trial_config({}).train.epochs
    search_alg = build_searcher(spec, str(experiment_dir))
    scheduler = None
    if spec.scheduler == "asha":
        scheduler = PersistentASHA(
            str(experiment_dir), max_t=max_t, grace_period=spec.grace_period, reduction_factor=spec.reduction_factor
        )
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, settings=asdict(settings)), {"cpu": spec.cpu, "gpu": spec.gpu}
    )
    total = total_trials(spec)
    tune_config = tune.TuneConfig(
        metric=spec.metric,
        mode=spec.mode,
        search_alg=search_alg,
        scheduler=scheduler,
        num_samples=total if spec.algorithm == "grid" else spec.num_samples,
        max_concurrent_trials=spec.max_concurrent or None,
        trial_dirname_creator=_trial_dirname,
        reuse_actors=True,
    )
    run_config = tune.RunConfig(
        name=experiment_dir.name,
        storage_path=str(experiment_dir.parent),
        verbose=0,
        callbacks=[TrialLines(str(experiment_dir), total, max_t, spec.keep_best, spec.mode)],
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
    )
    return trainable, tune_config, run_config


def _trial_dirname(trial: Any) -> str:
    return f"trial_{trial.trial_id}"


def run_sweep(
    settings: SweepSettings, spec: SearchSpace, *, address: str | None, resume: bool, retry_errored: bool = False
) -> None:
    """Run (or resume) the sweep to completion; returns when every trial has ended."""
    resources = start_ray(address, spec)
    experiment_dir = Path(settings.experiment_dir)
    # the disk and GPU memory the trials need, before the first starts (a packing that cannot fit: refused)
    concurrent = concurrent_trials(spec, resources, total_trials(spec))
    say_budget(settings.trial_config({}), spec, experiment_dir, concurrent, _echo, local_gpu_memory())
    trainable, tune_config, run_config = build_tuner(settings, spec)
    if resume and tune.Tuner.can_restore(str(experiment_dir)):
        tuner = tune.Tuner.restore(
            str(experiment_dir),
            trainable=trainable,
            resume_unfinished=True,
            resume_errored=retry_errored,
            restart_errored=False,
        )
    else:
        tuner = tune.Tuner(trainable, param_space={}, tune_config=tune_config, run_config=run_config)
    sweep = {
        "settings": asdict(settings),
        "state": "running",
        "started": time.time(),
        "total_trials": total_trials(spec),
    }
    write_sweep(experiment_dir, sweep)
    results = tuner.fit()
    sys.stdout.flush()
    ended = (results[i] for i in range(len(results)))
    mark_lost_trials(experiment_dir, {Path(r.path).name.removeprefix("trial_") for r in ended if r.path})
    _prune_quietly(experiment_dir, spec.keep_best, spec.mode)  # lost trials, and a pass a kill cut short


def mark_lost_trials(experiment_dir: Path, known: set[str]) -> None:
    """Trials that started after Ray's last snapshot before a kill are unknown to the restored sweep.

    Ray samples their configuration again under a new id (the restored searcher
    repeats the same suggestion), so the folder left behind is marked ``lost`` and
    not counted: the sweep still has exactly the number of trials asked for.
    """
    for trial in read_trials(experiment_dir):
        if trial.trial_id not in known and trial.state == "running":
            write_trial_state(
                trial.path,
                state="lost",
                error="started after Ray's last snapshot before an "
                "interruption; Ray ran this configuration again as a new trial",
            )
