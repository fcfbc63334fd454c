"""PrunedAwareOptunaSearch: a trial ASHA stopped is told to Optuna as PRUNED, with its per-epoch values."""

from __future__ import annotations

import json

import optuna
import pytest

from cbl.sweep.asha import STATE_FILE
from cbl.sweep.driver import build_tuner
from cbl.sweep.searchers import DefineByRun, GridSearcher, PrunedAwareOptunaSearch, draw_unfinished
from cbl.sweep.settings import SweepSettings
from cbl.sweep.space import parse_search_space

from tiny import QUICK_CENTERS, TINY_SWEEP

SPACE = {
    "name": "pruned",
    "space": {"loss.type": {"choice": ["cluster_only", "ce_only"]}, "optim.lr": {"loguniform": [1e-4, 1e-2]}},
    "search": {"algorithm": "optuna", "num_samples": 4, "seed": 0},
    "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 3},
    "resources": {"cpu": 1, "gpu": 0},
}
State = optuna.trial.TrialState


def searcher(tmp_path) -> PrunedAwareOptunaSearch:
    spec = parse_search_space(SPACE)
    search = PrunedAwareOptunaSearch(
        space=DefineByRun(spec),
        metric="dev_eer",
        mode="min",
        sampler=optuna.samplers.TPESampler(seed=0),
        experiment_dir=str(tmp_path),
    )
    return search


def stop_by_asha(tmp_path, *trial_ids: str) -> None:
    """What PersistentASHA writes when it stops trials early."""
    (tmp_path / STATE_FILE).write_text(json.dumps({"stopped": list(trial_ids), "brackets": []}))


def study_trials(search):
    return {t.number: t for t in search._ot_study.get_trials(deepcopy=False)}


def test_asha_stopped_trial_is_pruned_with_its_values_and_a_finished_one_complete(tmp_path):
    search = searcher(tmp_path)
    assert "loss.type" in search.suggest("stopped") and search.suggest("finished")
    # Ray: results that continue go to on_trial_result; the stopping one only to on_trial_complete
    search.on_trial_result("stopped", {"dev_eer": 0.40, "epoch": 1, "training_iteration": 1})
    stop_by_asha(tmp_path, "stopped")
    search.on_trial_complete("stopped", {"dev_eer": 0.35, "epoch": 2, "training_iteration": 2})
    for epoch, eer in enumerate([0.30, 0.25, 0.20], start=1):
        search.on_trial_result("finished", {"dev_eer": eer, "epoch": epoch, "training_iteration": epoch})
    search.on_trial_complete("finished", {"dev_eer": 0.20, "epoch": 3, "training_iteration": 3})
    trials = study_trials(search)
    assert trials[0].state == State.PRUNED
    assert trials[0].intermediate_values == {1: 0.40, 2: 0.35}
    assert trials[0].value == pytest.approx(0.35)  # Optuna keeps the last intermediate value
    assert trials[1].state == State.COMPLETE and trials[1].value == pytest.approx(0.20)


def test_steps_are_the_trials_own_epochs_and_repeats_are_ignored(tmp_path):
    search = searcher(tmp_path)
    search.suggest("t")
    search.on_trial_result("t", {"dev_eer": 0.4, "epoch": 3, "training_iteration": 1})  # resumed at epoch 3
    search.on_trial_result("t", {"dev_eer": 0.3, "epoch": 3, "training_iteration": 2})
    assert study_trials(search)[0].intermediate_values == {3: 0.4}


def test_errored_trial_fails_and_state_survives_save_and_restore(tmp_path):
    search = searcher(tmp_path)
    search.suggest("a")
    search.on_trial_result("a", {"dev_eer": 0.4, "epoch": 1})
    search.on_trial_complete("a", None, error=True)
    search.suggest("b")
    search.on_trial_result("b", {"dev_eer": 0.5, "epoch": 1})
    search.save(str(tmp_path / "searcher.pkl"))
    restored = searcher(tmp_path)
    restored.restore(str(tmp_path / "searcher.pkl"))
    stop_by_asha(tmp_path, "b")
    restored.on_trial_complete("b", {"dev_eer": 0.45, "epoch": 2})
    trials = study_trials(restored)
    assert trials[0].state == State.FAIL
    assert trials[1].state == State.PRUNED and trials[1].intermediate_values == {1: 0.5, 2: 0.45}


def test_the_tuner_uses_it_for_optuna_sweeps_when_chosen(tmp_path):
    from ray.tune.search.optuna import OptunaSearch

    settings = SweepSettings(
        space_data=SPACE,
        space_source="<test>",
        demo=True,
        set_options=[],
        experiment_dir=str(tmp_path / "pruned"),
        num_samples=4,
    )
    _, tune_config, _ = build_tuner(settings, settings.space())  # the default: search.tell_pruned true
    assert isinstance(tune_config.search_alg, PrunedAwareOptunaSearch)
    assert tune_config.search_alg._experiment_dir == str(tmp_path / "pruned")
    untold = {**SPACE, "search": {**SPACE.get("search", {}), "tell_pruned": False}}
    settings = SweepSettings(
        space_data=untold,
        space_source="<test>",
        demo=True,
        set_options=[],
        experiment_dir=str(tmp_path / "complete"),
        num_samples=4,
    )
    _, tune_config, _ = build_tuner(settings, settings.space())
    assert type(tune_config.search_alg) is OptunaSearch
    grid = {**SPACE, "space": {"loss.type": {"grid": ["ce_only"]}}, "search": {"algorithm": "grid"}}
    settings = SweepSettings(
        space_data=grid,
        space_source="<test>",
        demo=True,
        set_options=[],
        experiment_dir=str(tmp_path / "grid"),
        num_samples=1,
    )
    _, tune_config, _ = build_tuner(settings, settings.space())
    assert isinstance(tune_config.search_alg, GridSearcher)


@pytest.mark.ray
@pytest.mark.slow
def test_a_real_asha_sweep_records_its_stopped_trials_as_pruned(ray_session, tmp_path):
    import pickle

    from click.testing import CliRunner

    from cbl.cli import cli

    space = tmp_path / "space.yaml"
    space.write_text(
        json.dumps({**SPACE, "search": {"algorithm": "optuna", "num_samples": 6, "seed": 0, "max_concurrent": 1}})
    )
    tiny = [*TINY_SWEEP, QUICK_CENTERS, "train.epochs=3"]
    result = CliRunner().invoke(
        cli,
        [
            "run",
            str(space),
            "--demo",
            "--storage",
            str(tmp_path / "runs"),
            "--no-final-eval",
            *[a for item in tiny for a in ("--set", item)],
        ],
    )
    assert result.exit_code == 0, result.output
    experiment = tmp_path / "runs" / "pruned"
    stopped = json.loads((experiment / STATE_FILE).read_text())["stopped"]
    assert stopped, "ASHA stopped no trial: the test needs one"
    state = pickle.loads(next(experiment.glob("searcher-state-*.pkl")).read_bytes())
    searcher_state = state.get("searcher", state) if isinstance(state, dict) else state
    study = searcher_state["_ot_study"] if isinstance(searcher_state, dict) else searcher_state._ot_study
    ot_trials = searcher_state["_ot_trials"] if isinstance(searcher_state, dict) else searcher_state._ot_trials
    states = {trial_id: study.get_trials()[t.number].state for trial_id, t in ot_trials.items()}
    assert all(states[trial_id] == State.PRUNED for trial_id in stopped)
    assert all(s == State.COMPLETE for trial_id, s in states.items() if trial_id not in stopped)


CATEGORICAL = {**SPACE, "space": {"loss.type": {"choice": ["cluster_only", "ce_only"]}}}


def test_a_configuration_that_ran_to_the_end_is_not_trained_again(tmp_path):
    """Two configurations only: once both have finished, every later suggestion repeats one of them; each repeat
    is answered from the finished trial's result (Optuna sees it) instead of being handed to Ray."""
    search = PrunedAwareOptunaSearch(
        space=DefineByRun(parse_search_space(CATEGORICAL)),
        metric="dev_eer",
        mode="min",
        sampler=optuna.samplers.RandomSampler(seed=0),
        experiment_dir=str(tmp_path),
    )
    seen = {}
    trial = 0
    while len(seen) < 2:  # run trials until both configurations have finished
        config = search.suggest(f"t{trial}")
        value = 0.2 if config["loss.type"] == "ce_only" else 0.3
        search.on_trial_complete(f"t{trial}", {"dev_eer": value, "epoch": 3})
        seen[config["loss.type"]] = value
        trial += 1
    before = len(search._ot_study.trials)
    search.suggest("late")  # every draw is a repeat: answered MAX_REDRAWS times, then handed out anyway
    answered = search._ot_study.trials[before:-1]
    assert len(answered) == PrunedAwareOptunaSearch.MAX_REDRAWS
    assert all(t.state == State.COMPLETE and t.value == seen[t.params["loss.type"]] for t in answered)
    search.save(str(tmp_path / "searcher.pkl"))  # what a resumed sweep knows
    restored = PrunedAwareOptunaSearch(
        space=DefineByRun(parse_search_space(CATEGORICAL)), metric="dev_eer", mode="min", experiment_dir=str(tmp_path)
    )
    restored.restore(str(tmp_path / "searcher.pkl"))
    assert sorted(restored._finished.values()) == [0.2, 0.3]


def test_a_repeat_of_a_stopped_or_errored_configuration_runs_again(tmp_path):
    """Only a trial that ran to the end has a final result to reuse; a stopped or failed one gets another chance."""
    search = PrunedAwareOptunaSearch(
        space=DefineByRun(parse_search_space(CATEGORICAL)),
        metric="dev_eer",
        mode="min",
        sampler=optuna.samplers.RandomSampler(seed=0),
        experiment_dir=str(tmp_path),
    )
    first = search.suggest("a")
    stop_by_asha(tmp_path, "a")
    search.on_trial_complete("a", {"dev_eer": 0.4, "epoch": 1})
    assert search._finished == {}
    configs = [search.suggest(f"r{i}") for i in range(6)]
    assert first in configs  # handed out again, not answered from the stopped trial
    assert len(search._ot_study.trials) == 7


def test_the_redraw_rule_answers_finished_configurations_then_gives_up():
    """draw_unfinished (the rule the searcher and the bench replay share): a draw of a finished configuration is
    told its known result and drawn again; after max_redraws repeats the last draw is handed out anyway."""
    draws, told = iter(["a", "a", "b", "c"]), []
    assert draw_unfinished(lambda: next(draws), str, {"a": 0.1}, lambda d, v: told.append((d, v))) == "b"
    assert told == [("a", 0.1), ("a", 0.1)]
    draws, told = iter(["a", "a", "b"]), []
    assert draw_unfinished(lambda: next(draws), str, {"a": 0.1}, lambda d, v: told.append((d, v)), 1) == "a"
    assert told == [("a", 0.1)]
