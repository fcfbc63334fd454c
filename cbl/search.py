"""A sweep: search-space file -> Ray Tune Tuner (Optuna TPE / random / grid, ASHA, resources, storage, resume).

The trainable is a thin wrapper over :func:`cbl.train.fit`: each trial trains in
its own folder of the experiment (``trials/<trial_id>/``) and reports once per
epoch. Trials keep their checkpoints there rather than in Ray's checkpoint
registry: Ray's experiment snapshot can be older than a trial's newest
checkpoint (it is written every few seconds), and after a SIGKILL a trial then
restarts from an older one, or from scratch. A trial that finds ``last.pt`` in its
own folder continues from it, so a resume loses at most the epoch in progress.
"""

from __future__ import annotations

import json
import math
import pickle
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cbl.errors import CblError, UsageError
from cbl.space import SearchSpace, expand_grid, parse_search_space, suggest, total_trials
from cbl.sweep_store import trial_dir, write_sweep, write_trial_state

__all__ = ["GridSearcher", "PrunedAwareOptunaSearch", "SweepSettings", "TrialLines", "prepare_sweep", "quiet_ray_environment", "run_sweep",
           "run_trial", "start_ray"]

_QUIET_ENV = {
    "RAY_AIR_NEW_OUTPUT": "0",
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "0",
    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
    # Ray snapshots the experiment every 10 s by default; a driver killed in between
    # forgets trials started since. A snapshot is a few KB: take one every 2 s.
    "TUNE_GLOBAL_CHECKPOINT_S": "2",
}


def quiet_ray_environment() -> None:
    """Keep Ray's console output out of the user's way (our own trial lines instead)."""
    for key, value in _QUIET_ENV.items():
        os.environ.setdefault(key, value)


quiet_ray_environment()  # before Ray is imported: some of these are read at import time
from ray.tune import Callback  # noqa: E402
from ray.tune.search import Searcher  # noqa: E402
from ray.tune.search.optuna import OptunaSearch  # noqa: E402


@dataclass
class SweepSettings:
    """Everything a trial (and ``resume``) needs to rebuild its config: plain data, JSON-safe."""

    space_data: dict[str, Any]  # the search-space file as parsed YAML
    space_source: str
    demo: bool
    set_options: list[str]
    experiment_dir: str
    num_samples: int
    base_dir: str = ""  # where the command ran: relative paths in the config are relative to it


    def space(self) -> SearchSpace:
        spec = parse_search_space(self.space_data, source=self.space_source, demo=self.demo)
        spec.num_samples = self.num_samples
        return spec

    def trial_config(self, sampled: dict[str, Any]):
        """Defaults -> fixed -> demo profile -> the file's demo.fixed -> sampled -> --set (cbl.profiles order)."""
        from cbl.config import apply_overrides
        from cbl.profiles import resolve_config

        spec = self.space()
        config = apply_overrides(resolve_config(None), spec.fixed, source=self.space_source)
        if self.demo:
            from cbl.profiles import DEMO_OVERRIDES

            config = apply_overrides(config, DEMO_OVERRIDES, source="--demo")
            # the file's own demo block has the last word over the built-in demo profile
            demo_fixed = (self.space_data.get("demo") or {}).get("fixed") or {}
            config = apply_overrides(config, demo_fixed, source=f"{self.space_source} (demo.fixed)")
        config = apply_overrides(config, sampled, source="search space")
        if self.set_options:
            from cbl.config import parse_set_options

            config = apply_overrides(config, parse_set_options(self.set_options), source="--set", from_string=True)
        if self.base_dir:
            from cbl.config import absolute_paths

            config = absolute_paths(config, self.base_dir)
        return config


def prepare_sweep(space_path: Path, *, demo: bool, set_options: list[str], storage: Path,
                  name: str | None, num_samples: int | None) -> tuple[SweepSettings, SearchSpace]:
    """Validate everything before Ray starts; return the settings and the parsed space."""
    from cbl.yamlio import load_yaml

    data, lines = load_yaml(space_path, expect_mapping=True)
    spec = parse_search_space(data, source=str(space_path), lines=lines, demo=demo)
    if name is not None:
        data = {**data, "name": name}
        spec = parse_search_space(data, source=str(space_path), lines=lines, demo=demo)
    if num_samples is not None:
        if num_samples < 1:
            raise UsageError(f"--num-samples is {num_samples}, but must be >= 1")
        spec.num_samples = num_samples
    settings = SweepSettings(space_data=data, space_source=str(space_path), demo=demo,
                             set_options=list(set_options), experiment_dir=str(storage / spec.name),
                             num_samples=spec.num_samples, base_dir=os.getcwd())
    # every trial's config must resolve: check the fixed part and one point of each value now
    from cbl.feature_cache import check_cache_config

    base = settings.trial_config({})
    check_cache_config(base)
    if spec.algorithm == "grid":
        for point in expand_grid(spec):
            settings.trial_config(point)
    else:
        for p in spec.params:
            for value in p.values or (p.low, p.high):
                settings.trial_config({p.key: value})
    # the data must be there before any trial starts (and the demo corpus generated once, here)
    from cbl.data import load_split

    for split in ("train", "dev"):
        load_split(base.data, split)
    if spec.scheduler == "asha" and base.train.epochs < spec.grace_period:
        raise UsageError(f"{space_path}: train.epochs ({base.train.epochs}) is below scheduler.grace_period "
                         f"({spec.grace_period}); ASHA could never stop a trial")
    return settings, spec


# --------------------------------------------------------------------------- the trial
class _TuneReporter:
    def report(self, metrics: dict[str, Any], checkpoint_dir: Path) -> None:
        from ray import tune

        tune.report({k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})


def run_trial(config: dict[str, Any], settings: dict[str, Any]) -> None:
    """Ray Tune function trainable: one trial = one :func:`cbl.train.fit` in ``trials/<trial_id>``."""
    from ray import tune

    from cbl.asha import was_stopped
    from cbl.train import fit

    sweep = SweepSettings(**settings)
    context = tune.get_context()
    trial_id = context.get_trial_id()
    experiment_dir = Path(sweep.experiment_dir)
    path = trial_dir(experiment_dir, trial_id)
    if was_stopped(experiment_dir, trial_id):
        return  # ASHA stopped it before the interruption: keep that decision, train nothing more
    sampled = dict(config)
    import ray

    write_trial_state(path, trial_id=trial_id, params=sampled, state="running", error="",
                      node_id=ray.get_runtime_context().get_node_id(), host=os.uname().nodename)
    resources = context.get_trial_resources()
    cpus = resources.required_resources.get("CPU", 1) if resources is not None else 1
    config = sweep.trial_config(sampled)
    if config.train.feature_cache and not config.train.feature_cache_dir:
        config.train.feature_cache_dir = str(experiment_dir / "feature_cache")  # one cache for every trial
    try:
        result = fit(config, _TuneReporter(), path, cpus=cpus)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        write_trial_state(path, state="error", error=reason)
        raise
    write_trial_state(path, state="finished", best_dev_eer=result.best_dev_eer, best_epoch=result.best_epoch)


# --------------------------------------------------------------------------- driver side
def start_ray(address: str | None, spec: SearchSpace) -> dict[str, float]:
    """Start a private local Ray (or join ``address``); fail early when a trial cannot fit the cluster."""
    quiet_ray_environment()
    import ray

    if ray.is_initialized():
        resources = ray.cluster_resources()
    else:
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": True,
                                  "logging_level": "ERROR"}
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(address="local", object_store_memory=256 * 1024**2, **kwargs)
        resources = ray.cluster_resources()
    # Ray logs each failed trial with its traceback; our trial lines and `status` say it in one line
    import logging

    for name in ("ray.tune", "ray.train", "ray.air"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    if spec.gpu > 0 and gpus == 0:
        raise CblError(f"{spec.source}: resources.gpu is {spec.gpu} per trial, but the Ray cluster has no GPU "
                       "(set resources.gpu: 0, or run where a GPU is visible)")
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

    def __init__(self, experiment_dir: str, total: int, max_t: int) -> None:
        self.experiment_dir = Path(experiment_dir)
        self.total = total
        self.max_t = max_t

    def on_trial_result(self, iteration, trials, trial, result, **info):
        params = ", ".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in (trial.config or {}).items())
        _echo(f"[{trial.trial_id}] epoch {result.get('epoch', '?')}/{self.max_t}  dev EER "
              f"{100 * result.get('dev_eer', math.nan):.2f}%  ({params})")

    def on_trial_complete(self, iteration, trials, trial, **info):
        path = trial_dir(self.experiment_dir, trial.trial_id)
        epochs = int((trial.last_result or {}).get("epoch", 0))
        state = "finished" if epochs >= self.max_t else "stopped"
        if path.exists():
            write_trial_state(path, state=state)
        _echo(f"[{trial.trial_id}] {state} after {epochs} epoch(s)")
        self._summary(trials, trial)

    def _summary(self, trials, ended) -> None:
        """The live state of the sweep in one line: counts and the best trial so far."""
        from cbl.sweep_store import best_trial, read_trials

        done = sum(t is ended or t.status in ("TERMINATED", "ERROR") for t in trials)
        running = sum(t.status == "RUNNING" and t is not ended for t in trials)
        best = best_trial(read_trials(self.experiment_dir))
        lead = ""
        if best is not None:
            params = ", ".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in best.params.items())
            lead = f"; best so far {best.trial_id} {100 * best.best_dev_eer:.2f}% ({params})"
        _echo(f"-- {done}/{self.total} trials ended, {running} running{lead}")

    def on_trial_error(self, iteration, trials, trial, **info):
        path = trial_dir(self.experiment_dir, trial.trial_id)
        reason = "see the trial's error.txt in Ray's trial folder"
        if path.exists():
            write_trial_state(path, state="error")
            reason = json.loads((path / "trial.json").read_text()).get("error") or reason
        _echo(f"[{trial.trial_id}] error: {reason}")
        self._summary(trials, trial)


def _echo(line: str) -> None:
    print(line, flush=True)


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _build_tuner(settings: SweepSettings, spec: SearchSpace):
    import optuna
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    from cbl.asha import PersistentASHA

    experiment_dir = Path(settings.experiment_dir)
    max_t = spec.max_t or settings.trial_config({}).train.epochs
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if spec.algorithm == "grid":
        points = [point for point in expand_grid(spec) for _ in range(spec.num_samples)]
        search_alg = GridSearcher(points, metric=spec.metric, mode=spec.mode)
    else:
        sampler = (optuna.samplers.TPESampler(seed=spec.seed) if spec.algorithm == "optuna"
                   else optuna.samplers.RandomSampler(seed=spec.seed))
        if spec.tell_pruned:
            search_alg = PrunedAwareOptunaSearch(space=_DefineByRun(spec), metric=spec.metric, mode=spec.mode,
                                                 sampler=sampler, experiment_dir=str(experiment_dir))
        else:
            search_alg = OptunaSearch(space=_DefineByRun(spec), metric=spec.metric, mode=spec.mode, sampler=sampler)
    scheduler = None
    if spec.scheduler == "asha":
        scheduler = PersistentASHA(str(experiment_dir), max_t=max_t, grace_period=spec.grace_period,
                                   reduction_factor=spec.reduction_factor)
    trainable = tune.with_resources(tune.with_parameters(run_trial, settings=asdict(settings)),
                                    {"cpu": spec.cpu, "gpu": spec.gpu})
    total = total_trials(spec)
    tune_config = tune.TuneConfig(
        metric=spec.metric, mode=spec.mode, search_alg=search_alg, scheduler=scheduler,
        num_samples=total if spec.algorithm == "grid" else spec.num_samples,
        max_concurrent_trials=spec.max_concurrent or None,
        trial_dirname_creator=_trial_dirname,
        reuse_actors=True,
    )
    run_config = tune.RunConfig(
        name=experiment_dir.name, storage_path=str(experiment_dir.parent), verbose=0,
        callbacks=[TrialLines(str(experiment_dir), total, max_t)],
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
    )
    return trainable, tune_config, run_config


def _trial_dirname(trial: Any) -> str:
    return f"trial_{trial.trial_id}"


class GridSearcher(Searcher):
    """Hands out an explicit list of grid points in order (conditions applied, duplicates removed).

    Ray's own grid needs every point to share the same keys; ours differ (``ce_only``
    has no K), and flat configs keep each trial's parameters readable in
    TensorBoard. Its state (which point went to which trial) is saved with the
    experiment, so a resume neither repeats nor skips a point.
    """

    def __init__(self, points: list[dict[str, Any]], metric: str, mode: str) -> None:
        super().__init__(metric=metric, mode=mode)
        self.points = points
        self.next_index = 0
        self.assigned: dict[str, int] = {}

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if trial_id in self.assigned:
            return dict(self.points[self.assigned[trial_id]])
        if self.next_index >= len(self.points):
            return Searcher.FINISHED
        self.assigned[trial_id] = self.next_index
        self.next_index += 1
        return dict(self.points[self.assigned[trial_id]])

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as handle:
            pickle.dump({"points": self.points, "next_index": self.next_index, "assigned": self.assigned}, handle)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as handle:
            self.__dict__.update(pickle.load(handle))


class PrunedAwareOptunaSearch(OptunaSearch):
    """OptunaSearch that tells Optuna the truth about trials ASHA stopped early: PRUNED, with their per-epoch values.

    Ray's OptunaSearch tells every ended trial COMPLETE with its last result, so
    TPE ranks a trial stopped at epoch 1 by its early (high) EER as if it were
    final (../shared/RAY_NOTES.md). Here a trial that :func:`cbl.asha.was_stopped`
    names is told PRUNED after its last value is reported; TPE then ranks it below
    every completed trial and among pruned ones by how far it got. Intermediate
    values are reported at the trial's own ``epoch`` (Ray's training_iteration
    restarts when a trial resumes from cbl's checkpoint). Plain data only, so it
    pickles with the experiment like OptunaSearch does.
    """

    # a suggestion equal to a configuration that already trained to the end is answered from that result and
    # drawn again, at most this many times per trial (then it runs: a finite space may be exhausted)
    MAX_REDRAWS = 20

    def __init__(self, *args: Any, experiment_dir: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._experiment_dir = str(experiment_dir)
        self._reported_steps: dict[str, list[int]] = {}
        self._finished: dict[tuple, float] = {}  # configuration -> final metric of a trial that ran to the end

    def suggest(self, trial_id: str) -> dict | None:
        """Optuna's suggestion, but never a configuration that already ran to the end.

        A configuration's trial is seeded (data order, init, augmentation), so
        training it again would reproduce its result (exactly on CPU, up to
        nondeterministic GPU kernels on a GPU): Optuna is told that result at once
        and asked again. Categorical spaces (pooling x K x loss type) are where TPE
        repeats itself most. Each answered repeat is one more trial in the study
        (it also counts toward TPE's random start-up trials).
        """
        params = super().suggest(trial_id)
        for _ in range(self.MAX_REDRAWS):
            known = self._finished.get(_config_key(self._ot_trials[trial_id].params))
            if known is None:
                break
            self._ot_study.tell(self._ot_trials.pop(trial_id), known)
            params = super().suggest(trial_id)
        return params

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id not in self._completed_trials:
            self._report(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        from cbl.asha import was_stopped

        if error or trial_id in self._completed_trials or trial_id not in self._ot_trials:
            super().on_trial_complete(trial_id, result=result, error=error)
            return
        if not was_stopped(self._experiment_dir, trial_id):  # ran to the end: remember its result
            value = (result or {}).get(self.metric)
            if isinstance(value, (int, float)) and math.isfinite(value):
                self._finished[_config_key(self._ot_trials[trial_id].params)] = float(value)
            super().on_trial_complete(trial_id, result=result, error=error)
            return
        import optuna

        if result:
            self._report(trial_id, result)  # Ray sends a stopping result here, not to on_trial_result
        try:
            self._ot_study.tell(self._ot_trials[trial_id], state=optuna.trial.TrialState.PRUNED)
        except Exception as exc:  # noqa: BLE001 - as OptunaSearch: a refused tell must not end the sweep
            import logging

            logging.getLogger(__name__).warning("optuna: %s", exc)
        self._completed_trials.add(trial_id)

    def _report(self, trial_id: str, result: dict) -> None:
        value = result.get(self.metric)
        step = result.get("epoch", result.get("training_iteration"))
        reported = self._reported_steps.setdefault(trial_id, [])
        if value is None or step is None or int(step) in reported or trial_id not in self._ot_trials:
            return
        self._ot_trials[trial_id].report(float(value), int(step))
        reported.append(int(step))


def _config_key(params: dict[str, Any]) -> tuple:
    """A hashable identity of a sampled configuration (conditional keys absent when not sampled)."""
    return tuple(sorted((key, repr(value)) for key, value in params.items()))


class _DefineByRun:
    """Picklable define-by-run space for OptunaSearch (survives tuner.pkl / searcher-state)."""

    def __init__(self, spec: SearchSpace) -> None:
        self.spec = spec

    def __call__(self, trial: Any) -> None:
        suggest(trial, self.spec)
        return None


def run_sweep(settings: SweepSettings, spec: SearchSpace, *, address: str | None, resume: bool,
              retry_errored: bool = False) -> None:
    """Run (or resume) the sweep to completion; returns when every trial has ended."""
    start_ray(address, spec)
    from ray import tune

    experiment_dir = Path(settings.experiment_dir)
    trainable, tune_config, run_config = _build_tuner(settings, spec)
    if resume and tune.Tuner.can_restore(str(experiment_dir)):
        tuner = tune.Tuner.restore(str(experiment_dir), trainable=trainable, resume_unfinished=True,
                                   resume_errored=retry_errored, restart_errored=False)
    else:
        tuner = tune.Tuner(trainable, param_space={}, tune_config=tune_config, run_config=run_config)
    sweep = {"settings": asdict(settings), "state": "running", "started": time.time(),
             "total_trials": total_trials(spec)}
    write_sweep(experiment_dir, sweep)
    results = tuner.fit()
    sys.stdout.flush()
    _mark_lost_trials(experiment_dir, {Path(r.path).name.removeprefix("trial_") for r in results if r.path})


def _mark_lost_trials(experiment_dir: Path, known: set[str]) -> None:
    """Trials that started after Ray's last snapshot before a kill are unknown to the restored sweep.

    Ray samples their configuration again under a new id (the restored searcher
    repeats the same suggestion), so the folder left behind is marked ``lost`` and
    not counted: the sweep still has exactly the number of trials asked for.
    """
    from cbl.sweep_store import read_trials

    for trial in read_trials(experiment_dir):
        if trial.trial_id not in known and trial.state == "running":
            write_trial_state(trial.path, state="lost", error="started after Ray's last snapshot before an "
                              "interruption; Ray ran this configuration again as a new trial")

