"""Checkpoint retention (cbl.sweep.retention) on synthetic experiment folders: what goes, what stays."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cbl.sweep.retention import plan_prune, prune_experiment
from cbl.sweep.store import write_sweep, write_trial_state


def make_trial(experiment: Path, trial_id: str, state: str, eers: list[float], *, ended: bool = False) -> Path:
    """A trial folder as a trial leaves it: trial.json, metrics.jsonl, and last/previous/best.pt of known sizes."""
    path = experiment / "trials" / trial_id
    write_trial_state(path, trial_id=trial_id, params={"optim.lr": 0.1}, state=state, ended=ended)
    lines = [json.dumps({"epoch": i + 1, "dev_eer": e}) for i, e in enumerate(eers)]
    (path / "metrics.jsonl").write_text("".join(f"{line}\n" for line in lines))
    (path / "config.yaml").write_text("train: {epochs: 3}\n")
    ckpt = path / "checkpoints"
    ckpt.mkdir(exist_ok=True)
    if eers:
        (ckpt / "best.pt").write_bytes(b"b" * 100)
        (ckpt / "last.pt").write_bytes(b"l" * 300)
    if len(eers) > 1:
        (ckpt / "previous.pt").write_bytes(b"p" * 300)
    return path


@pytest.fixture
def experiment(tmp_path: Path) -> Path:
    root = tmp_path / "exp"
    write_sweep(root, {"state": "running", "total_trials": 6})
    make_trial(root, "a_best", "finished", [0.30, 0.10, 0.12])
    make_trial(root, "b_second", "stopped", [0.20])
    make_trial(root, "c_running", "running", [0.25, 0.15])  # ranks 3rd, still training
    make_trial(root, "d_worst", "finished", [0.40, 0.35])
    make_trial(root, "e_error", "error", [0.05])  # its own error: Ray may still retry it
    make_trial(root, "f_lost", "lost", [0.01])
    return root


def files(trial: Path) -> set[str]:
    return {p.name for p in (trial / "checkpoints").iterdir()}


def test_ended_trials_lose_their_optimizer_state_and_only_the_best_k_keep_best(experiment):
    result = prune_experiment(experiment, keep_best=2)
    trials = experiment / "trials"
    # the best two ranked trials (the retried-able error and the running one rank too): e_error 5%, a_best 10%
    assert files(trials / "a_best") == {"best.pt"}
    assert files(trials / "b_second") == set()  # 3rd ended by rank (c_running 15% ranks above it)
    assert files(trials / "c_running") == {"best.pt", "last.pt", "previous.pt"}  # running: untouched
    assert files(trials / "d_worst") == set()
    assert files(trials / "e_error") == {"best.pt", "last.pt"}  # may be retried from last.pt: untouched
    assert files(trials / "f_lost") == set()  # lost trials never rank and are never trained again
    assert result.kept_best == ["e_error", "a_best"]
    # a_best: last+previous; b_second: best+last; d_worst: best+last+previous; f_lost: best+last
    assert result.freed_bytes == 600 + 400 + 700 + 400
    assert len(result.removed) == 9
    for name in ("a_best", "b_second", "d_worst"):  # metrics, config and history are kept
        assert (trials / name / "metrics.jsonl").is_file() and (trials / name / "config.yaml").is_file()
        assert (trials / name / "trial.json").is_file()


def test_an_error_marked_final_by_the_driver_is_pruned_like_a_finished_trial(experiment):
    write_trial_state(experiment / "trials" / "e_error", ended=True)
    prune_experiment(experiment, keep_best=1)
    assert files(experiment / "trials" / "e_error") == {"best.pt"}  # no retry left; ranked first
    assert files(experiment / "trials" / "a_best") == set()


def test_with_no_sweep_running_every_error_is_final(experiment):
    prune_experiment(experiment, keep_best=1, sweep_running=False)
    assert files(experiment / "trials" / "e_error") == {"best.pt"}


def test_the_final_evaluations_trial_keeps_its_best_checkpoint_whatever_its_rank(experiment):
    (experiment / "final_eval").mkdir()
    (experiment / "final_eval" / "summary-eval.json").write_text(json.dumps({"trial_id": "d_worst"}))
    prune_experiment(experiment, keep_best=1)
    assert files(experiment / "trials" / "d_worst") == {"best.pt"}


def test_a_temporary_file_left_by_a_kill_goes_with_the_optimizer_state(experiment):
    leftover = experiment / "trials" / "a_best" / "checkpoints" / ".last.pt.abc123.tmp"
    leftover.write_bytes(b"x" * 50)
    result = prune_experiment(experiment, keep_best=3)
    assert not leftover.exists() and leftover in result.removed


def test_a_second_pass_frees_nothing_and_a_plan_deletes_nothing(experiment):
    planned, _ = plan_prune(experiment, keep_best=2)
    assert planned and all(p.is_file() for p in planned)  # planning only
    prune_experiment(experiment, keep_best=2)
    again = prune_experiment(experiment, keep_best=2)
    assert again.removed == [] and again.freed_bytes == 0


def test_pruning_cut_short_is_finished_by_the_next_pass(experiment):
    planned, _ = plan_prune(experiment, keep_best=2)
    for path in planned[:3]:  # a kill after three of the deletions
        path.unlink()
    prune_experiment(experiment, keep_best=2)
    assert plan_prune(experiment, keep_best=2)[0] == []
    assert files(experiment / "trials" / "a_best") == {"best.pt"}


def test_keep_best_below_one_is_refused(experiment):
    with pytest.raises(ValueError, match="keep_best is 0, but must be >= 1"):
        plan_prune(experiment, keep_best=0)


# ---------------------------------------------------------------- cbl-search prune


def prune_cli(*args: str):
    from click.testing import CliRunner

    from cbl.cli import cli

    return CliRunner().invoke(cli, ["prune", *args])


def test_prune_command_applies_the_policy_and_says_what_it_freed(experiment):
    dry = prune_cli(str(experiment), "--keep-best", "2", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "would remove trials/d_worst/checkpoints/best.pt" in dry.output and "would free 2.1 kB" in dry.output
    assert (experiment / "trials" / "d_worst" / "checkpoints" / "best.pt").is_file()  # a dry run removes nothing
    result = prune_cli(str(experiment), "--keep-best", "2")
    assert result.exit_code == 0, result.output
    # the sweep is not finished: e_error's own error may be retried on resume, so it is left alone
    assert "pruned 9 checkpoint file(s), freed 2.1 kB; best.pt kept for 2 trial(s) (e_error, a_best)" in result.output
    assert files(experiment / "trials" / "e_error") == {"best.pt", "last.pt"}
    again = prune_cli(str(experiment))
    assert again.exit_code == 0 and "freed 0 B" in again.output


def test_prune_command_on_a_finished_sweep_treats_every_error_as_final(experiment):
    write_sweep(experiment, {"state": "finished", "total_trials": 6})
    assert prune_cli(str(experiment), "--keep-best", "1").exit_code == 0
    assert files(experiment / "trials" / "e_error") == {"best.pt"}


def test_prune_command_refuses_bad_input_with_exit_2(experiment, tmp_path):
    bad = prune_cli(str(experiment), "--keep-best", "0")
    assert bad.exit_code == 2 and "0 is not in the range x>=1" in bad.output
    (tmp_path / "plain").mkdir()
    plain = prune_cli(str(tmp_path / "plain"))
    assert plain.exit_code == 2 and "not a cbl experiment folder" in plain.output


def test_prune_command_refuses_an_experiment_a_driver_is_running_on(experiment):
    from cbl.sweep.lock import experiment_lock

    with experiment_lock(experiment):
        result = prune_cli(str(experiment))
    assert result.exit_code == 2 and "a sweep is already running on this experiment" in result.output
