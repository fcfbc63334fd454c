"""The searchers a sweep can use: an explicit grid, and Optuna told the truth about ASHA-stopped trials.

The redraw rule (:func:`draw_unfinished`) is a function of its own so that the
search-efficiency benchmark's replay (``cbl-search bench``, row 5) applies the
searcher's rule itself rather than a copy.
"""

from __future__ import annotations

import contextlib
import logging
import math
import pickle
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from typing import Any, TypeVar, cast

import optuna
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from cbl.sweep.asha import was_stopped
from cbl.sweep.sampling import expand_grid, suggest
from cbl.sweep.space import SearchSpace

__all__ = [
    "MAX_REDRAWS",
    "OPTUNA_JOURNAL",
    "DefineByRun",
    "GridSearcher",
    "PrunedAwareOptunaSearch",
    "build_searcher",
    "config_key",
    "draw_unfinished",
    "journal_storage",
]

# a suggestion equal to a configuration that already trained to the end is answered from that result and
# drawn again, at most this many times per trial (then it runs: a finite space may be exhausted)
MAX_REDRAWS = 20
OPTUNA_JOURNAL = "optuna_journal.log"  # the study's journal in the experiment folder (optuna-dashboard opens it)

Drawn = TypeVar("Drawn")
Key = TypeVar("Key", bound=Hashable)


def draw_unfinished(
    draw: Callable[[], Drawn],
    key_of: Callable[[Drawn], Key],
    finished: Mapping[Key, float],
    tell: Callable[[Drawn, float], object],
    max_redraws: int = MAX_REDRAWS,
) -> Drawn:
    """The redraw rule: never train again a configuration that already ran to the end.

    A configuration's trial is seeded (data order, init, augmentation), so training
    it again would reproduce its result (exactly on CPU, up to nondeterministic GPU
    kernels on a GPU). ``draw()`` makes a suggestion; while ``finished`` (config key
    -> final metric) knows its ``key_of``, ``tell(drawn, value)`` answers it from
    that result and a new one is drawn, at most ``max_redraws`` times (then the last
    draw runs: a finite space may be exhausted).
    """
    drawn = draw()
    for _ in range(max_redraws):
        known = finished.get(key_of(drawn))
        if known is None:
            break
        tell(drawn, known)
        drawn = draw()
    return drawn


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

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:  # type: ignore[override]  # Ray's stub omits FINISHED
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
    final. Here a trial that :func:`cbl.sweep.asha.was_stopped`
    names is told PRUNED after its last value is reported; TPE then ranks it below
    every completed trial and among pruned ones by how far it got. Intermediate
    values are reported at the trial's own ``epoch`` (Ray's training_iteration
    restarts when a trial resumes from cbl's checkpoint). Plain data only, so it
    pickles with the experiment like OptunaSearch does.
    """

    MAX_REDRAWS = MAX_REDRAWS

    def __init__(self, *args: Any, experiment_dir: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._experiment_dir = str(experiment_dir)
        self._reported_steps: dict[str, list[int]] = {}
        self._finished: dict[tuple, float] = {}  # configuration -> final metric of a trial that ran to the end

    def suggest(self, trial_id: str) -> dict | None:
        """Optuna's suggestion, but never a configuration that already ran to the end (:func:`draw_unfinished`).

        A repeat is told its known result at once and Optuna is asked again.
        Categorical spaces (pooling x K x loss type) are where TPE repeats itself
        most. Each answered repeat is one more trial in the study (it also counts
        toward TPE's random start-up trials).
        """
        return draw_unfinished(
            lambda: OptunaSearch.suggest(self, trial_id),
            lambda _: config_key(self._ot_trials[trial_id].params),
            self._finished,
            lambda _, value: self._study.tell(self._ot_trials.pop(trial_id), value),
            self.MAX_REDRAWS,
        )

    @property
    def _study(self) -> optuna.Study:
        """OptunaSearch's study (its attribute is typed None until the search space is known)."""
        return cast(optuna.Study, self._ot_study)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id not in self._completed_trials:
            self._report(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if error or trial_id in self._completed_trials or trial_id not in self._ot_trials:
            super().on_trial_complete(trial_id, result=result, error=error)
            return
        if not was_stopped(self._experiment_dir, trial_id):  # ran to the end: remember its result
            value = (result or {}).get(self.metric)
            if isinstance(value, (int, float)) and math.isfinite(value):
                self._finished[config_key(self._ot_trials[trial_id].params)] = float(value)
            super().on_trial_complete(trial_id, result=result, error=error)
            return
        if result:
            self._report(trial_id, result)  # Ray sends a stopping result here, not to on_trial_result
        try:
            self._study.tell(self._ot_trials[trial_id], state=optuna.trial.TrialState.PRUNED)
        except Exception as exc:
            logging.getLogger(__name__).warning("optuna: %s", exc)
        self._completed_trials.add(trial_id)

    def _report(self, trial_id: str, result: dict) -> None:
        value = result.get(self.metric)
        step = result.get("epoch", result.get("training_iteration"))
        reported = self._reported_steps.setdefault(trial_id, [])
        if value is None or step is None or int(step) in reported or trial_id not in self._ot_trials:
            return
        # a resumed sweep: the journal may already hold this trial's end (it ran past the searcher's snapshot)
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            self._ot_trials[trial_id].report(float(value), int(step))
        reported.append(int(step))


def config_key(params: dict[str, Any]) -> tuple:
    """A hashable identity of a sampled configuration (conditional keys absent when not sampled)."""
    return tuple(sorted((key, repr(value)) for key, value in params.items()))


class DefineByRun:
    """Picklable define-by-run space for OptunaSearch (survives tuner.pkl / searcher-state)."""

    def __init__(self, spec: SearchSpace) -> None:
        self.spec = spec

    def __call__(self, trial: Any) -> None:
        suggest(trial, self.spec)
        return None


def build_searcher(spec: SearchSpace, experiment_dir: str) -> Searcher:
    """The search algorithm of ``spec``: its grid points in order, or Optuna (TPE or random) define-by-run."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if spec.algorithm == "grid":
        points = [point for point in expand_grid(spec) for _ in range(spec.num_samples)]
        return GridSearcher(points, metric=spec.metric, mode=spec.mode)
    sampler = (
        optuna.samplers.TPESampler(seed=spec.seed)
        if spec.algorithm == "optuna"
        else optuna.samplers.RandomSampler(seed=spec.seed)
    )
    # the study also lives in a journal file in the experiment folder: optuna.load_study and optuna-dashboard
    # open it while the sweep runs and after it; the searcher's own state still resumes the sweep
    storage, name = journal_storage(experiment_dir), Path(experiment_dir).name
    if spec.tell_pruned:
        return PrunedAwareOptunaSearch(
            space=DefineByRun(spec),
            metric=spec.metric,
            mode=spec.mode,
            sampler=sampler,
            experiment_dir=str(experiment_dir),
            storage=storage,
            study_name=name,
        )
    return OptunaSearch(
        space=DefineByRun(spec), metric=spec.metric, mode=spec.mode, sampler=sampler, storage=storage, study_name=name
    )


def journal_storage(experiment_dir: str) -> optuna.storages.JournalStorage:
    """Optuna's JournalStorage on ``EXPERIMENT_DIR/optuna_journal.log`` (append-only, safe to read while written)."""
    from optuna.storages.journal import JournalFileBackend

    Path(experiment_dir).mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(str(Path(experiment_dir) / OPTUNA_JOURNAL)))
