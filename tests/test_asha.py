"""Persistent ASHA: decisions survive a rebuilt scheduler (what Ray does on restore)."""

from __future__ import annotations

import pickle
from dataclasses import dataclass

from ray.tune.schedulers import TrialScheduler

from cbl.sweep.asha import PersistentASHA, was_stopped


@dataclass
class FakeTrial:
    trial_id: str


def make(path) -> PersistentASHA:
    scheduler = PersistentASHA(str(path), max_t=9, grace_period=1, reduction_factor=3)
    scheduler.set_search_properties("dev_eer", "min")
    return scheduler


def feed(scheduler: PersistentASHA, trial: FakeTrial, epoch: int, eer: float) -> str:
    return scheduler.on_trial_result(None, trial, {"epoch": epoch, "dev_eer": eer})


def test_rungs_and_stops_survive_a_rebuilt_scheduler(tmp_path):
    good, bad, worse = FakeTrial("good"), FakeTrial("bad"), FakeTrial("worse")
    first = make(tmp_path)
    for t in (good, bad, worse):
        first.on_trial_add(None, t)
    assert feed(first, good, 1, 0.10) == TrialScheduler.CONTINUE
    assert feed(first, bad, 1, 0.40) == TrialScheduler.STOP  # worse than the rung's top third
    assert was_stopped(tmp_path, "bad") and not was_stopped(tmp_path, "good")

    # what Ray does on restore: the scheduler comes back from tuner.pkl, empty
    rebuilt = pickle.loads(pickle.dumps(make(tmp_path)))
    for t in (good, bad, worse):
        rebuilt.on_trial_add(None, t)
    # the trial stopped before the interruption is stopped again at its first report
    assert feed(rebuilt, bad, 2, 0.01) == TrialScheduler.STOP
    # the rung still holds the earlier results: a weak newcomer is stopped at rung 1
    assert feed(rebuilt, worse, 1, 0.50) == TrialScheduler.STOP
    # an uninterrupted scheduler fed the same results decides the same
    fresh_dir = tmp_path / "fresh"
    fresh_dir.mkdir()
    fresh = make(fresh_dir)
    for t in (good, bad, worse):
        fresh.on_trial_add(None, t)
    feed(fresh, good, 1, 0.10)
    feed(fresh, bad, 1, 0.40)
    assert feed(fresh, worse, 1, 0.50) == TrialScheduler.STOP


def test_without_state_file_a_rebuilt_scheduler_forgets(tmp_path):
    """The control: plain ASHA state is lost, which is why the file exists."""
    first = make(tmp_path)
    t1, t2 = FakeTrial("a"), FakeTrial("b")
    first.on_trial_add(None, t1)
    feed(first, t1, 1, 0.10)
    (tmp_path / "scheduler_state.json").unlink()
    rebuilt = make(tmp_path)
    rebuilt.on_trial_add(None, t2)
    # with an empty rung there is no cutoff: the weak trial continues
    assert feed(rebuilt, t2, 1, 0.90) == TrialScheduler.CONTINUE


def test_reaching_max_t_is_not_an_early_stop(tmp_path):
    scheduler = make(tmp_path)
    trial = FakeTrial("t")
    scheduler.on_trial_add(None, trial)
    assert feed(scheduler, trial, 9, 0.2) == TrialScheduler.STOP
    assert not was_stopped(tmp_path, "t")
