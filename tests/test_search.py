"""Sweeps end to end on the demo corpus, through the CLI, on the shared local Ray."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from cbl.cli import cli
from cbl.config import load_config
from cbl.sweep.store import read_trials

from tiny import QUICK_CENTERS, TINY_SWEEP, as_set_args

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"
TINY = as_set_args((*TINY_SWEEP, QUICK_CENTERS, "train.eval_batch_size=16"))


def write_space(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


GRID = """
name: grid
space:
  loss.type: {grid: [cluster_only, ce_only]}
  loss.num_clusters: {grid: [2, 3], when: {loss.type: [cluster_only]}}
search: {algorithm: grid}
scheduler: {name: none}
resources: {cpu: 1, gpu: 0}
checkpoints: {keep_best: 2}
"""


@pytest.fixture(scope="module")
def grid_sweep(ray_session, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grid")
    space = write_space(tmp, GRID)
    result = run("run", str(space), "--demo", "--storage", str(tmp / "runs"), *TINY)
    return result, tmp / "runs" / "grid"


@pytest.mark.ray
def test_grid_sweep_end_to_end(grid_sweep):
    result, experiment = grid_sweep
    assert result.exit_code == 0, result.output
    trials = read_trials(experiment)
    # loss.type x K with K only for cluster_only: 2 + 1 trials, ce_only once
    assert sorted((t.params.get("loss.type"), t.params.get("loss.num_clusters")) for t in trials) == [
        ("ce_only", None),
        ("cluster_only", 2),
        ("cluster_only", 3),
    ]
    assert all(t.state == "finished" and t.epochs == 2 for t in trials)
    best = min(trials, key=lambda t: t.best_dev_eer)
    assert f"best trial {best.trial_id}: dev EER {100 * best.best_dev_eer:.2f}%" in result.output
    # best_config.yaml is a loadable config equal to the best trial's
    exported = load_config(experiment / "best_config.yaml")
    assert exported == load_config(best.path / "config.yaml")
    assert exported.loss.type == best.params["loss.type"]
    # the final evaluation on eval wrote scores and a summary whose EER is printed
    summary = json.loads((experiment / "final_eval" / "summary-eval.json").read_text())
    assert summary["trial_id"] == best.trial_id
    eer = summary["selection"]["eer"]
    assert summary["eers"] == [] and summary["mean_eer"] is None  # no fresh seeds by default
    # the selection run's eval EER with its 95% bootstrap interval, printed and in the summary
    low, high = summary["selection"]["eer_low"], summary["selection"]["eer_high"]
    assert 0 <= low <= eer <= high <= 1
    assert (
        f"selection run (trial {best.trial_id}, seed 0): eval EER {100 * eer:.2f}%, "
        f"95% CI {100 * low:.2f}-{100 * high:.2f}% (optimistically biased" in result.output
    )
    scores = (experiment / "final_eval" / "scores-eval-seed0.txt").read_text().splitlines()
    assert len(scores) == 40 and all(len(line.split()) == 2 for line in scores)
    assert "tensorboard --logdir" in result.output
    assert "checkpoint disk: at most " in result.output  # the estimate, before the first trial


@pytest.mark.ray
def test_ended_trials_keep_no_optimizer_state_and_only_the_best_two_keep_best(grid_sweep):
    _, experiment = grid_sweep
    trials = read_trials(experiment)
    left = {t.trial_id: sorted(p.name for p in (t.path / "checkpoints").iterdir()) for t in trials}
    ranked = sorted(trials, key=lambda t: t.best_dev_eer)
    # best_dev_scores.txt (small) stays with every trial: status compares pruned trials with the best too
    kept = [["best.pt", "best_dev_scores.txt"], ["best.pt", "best_dev_scores.txt"], ["best_dev_scores.txt"]]
    assert [left[t.trial_id] for t in ranked] == kept, left
    assert all(t.epochs == 2 and (t.path / "metrics.jsonl").is_file() for t in trials)  # history kept
    summary = json.loads((experiment / "final_eval" / "summary-eval.json").read_text())
    assert summary["trial_id"] == ranked[0].trial_id  # evaluated, and its checkpoint kept


@pytest.mark.ray
def test_status_and_best_commands(grid_sweep):
    _, experiment = grid_sweep
    status = run("status", str(experiment))
    assert status.exit_code == 0
    assert "3 of 3 trials started: 3 finished" in status.output
    lines = [line for line in status.output.splitlines() if line.split()[:1] and len(line.split()[0]) == 8]
    eers = [float(line.split()[3].rstrip("%")) for line in lines if line.split()[1] == "finished"]
    assert eers == sorted(eers)  # best first
    out = experiment.parent / "exported.yaml"
    best = run("best", str(experiment), "--export", str(out))
    assert best.exit_code == 0 and out.is_file()
    assert yaml.safe_load(out.read_text())["loss"]["type"] in ("cluster_only", "ce_only")


@pytest.mark.ray
def test_tensorboard_shows_every_trial_with_hparams(grid_sweep):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    _, experiment = grid_sweep
    runs = sorted(p for p in experiment.iterdir() if p.name.startswith("trial_"))
    assert len(runs) == 3
    seen_params = []
    for run_dir in runs:
        acc = EventAccumulator(str(run_dir), size_guidance={"tensors": 0, "scalars": 0})
        acc.Reload()
        tags = acc.Tags()["scalars"]
        assert "ray/tune/dev_eer" in tags and "ray/tune/train_loss" in tags
        steps = [e.step for e in acc.Scalars("ray/tune/dev_eer")]
        assert len(steps) == 2
        assert all(0 <= e.value <= 1 for e in acc.Scalars("ray/tune/dev_eer"))
        # HParams dashboard: the session start info holds the sampled parameters
        content = acc.PluginTagToContent("hparams")
        assert "_hparams_/session_start_info" in content
        data = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
        params = dict(data.session_start_info.hparams)
        assert "loss.type" in params
        seen_params.append(params["loss.type"].string_value)
    assert sorted(seen_params) == ["ce_only", "cluster_only", "cluster_only"]


@pytest.mark.ray
def test_run_refuses_to_overwrite_a_finished_experiment(grid_sweep, tmp_path):
    _, experiment = grid_sweep
    space = write_space(tmp_path, GRID)
    again = run("run", str(space), "--demo", "--storage", str(experiment.parent), *TINY)
    assert again.exit_code == 2
    assert "already finished" in again.output


def test_run_on_unfinished_experiment_points_to_resume(tmp_path):
    storage = tmp_path / "runs"
    (storage / "grid").mkdir(parents=True)
    (storage / "grid" / "sweep.json").write_text(json.dumps({"state": "running"}))
    result = run("run", str(write_space(tmp_path, GRID)), "--demo", "--storage", str(storage), *TINY)
    assert result.exit_code == 2
    assert "exists and is unfinished" in result.output and "cbl-search resume" in result.output


@pytest.mark.ray
def test_optuna_asha_sweep_with_conditions(ray_session, tmp_path):
    result = run(
        "run",
        str(SPACES / "ablation.yaml"),
        "--demo",
        "--storage",
        str(tmp_path),
        "--name",
        "abl",
        "--num-samples",
        "4",
        "--no-final-eval",
        *TINY,
        "--set",
        "data.demo_utterances=80",
        "--set",
        "centers.init_max_utterances=64",
    )
    assert result.exit_code == 0, result.output
    trials = read_trials(tmp_path / "abl")
    assert len(trials) == 4
    for t in trials:
        cluster = t.params["loss.type"] in ("cluster_only", "combined")
        assert ("loss.num_clusters" in t.params) == cluster
        assert 5e-4 <= t.params["optim.lr"] <= 3e-3  # the demo block's range
        assert t.state in ("finished", "stopped")
        assert not math.isnan(t.best_dev_eer)
    assert json.loads((tmp_path / "abl" / "sweep.json").read_text())["state"] == "finished"


@pytest.mark.ray
def test_gpu_request_on_a_cpu_cluster_is_an_error_before_any_trial(ray_session, tmp_path):
    space = write_space(tmp_path, GRID.replace("resources: {cpu: 1, gpu: 0}", "resources: {cpu: 1, gpu: 0.5}"))
    # --demo would force the CPU: run without it, on the demo corpus
    result = run(
        "run",
        str(space),
        "--storage",
        str(tmp_path / "runs"),
        "--set",
        "data.corpus=demo",
        "--set",
        "model.ssl=tiny",
        *TINY,
    )
    assert result.exit_code == 1
    assert "resources.gpu is 0.5 per trial, but the Ray cluster has no GPU" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "runs" / "grid" / "trials").exists()


def test_bad_space_file_fails_before_ray(tmp_path):
    space = write_space(tmp_path, "space:\n  loss.num_cluster: {choice: [5]}\n")
    result = run("run", str(space), "--demo", "--storage", str(tmp_path))
    assert result.exit_code == 2
    assert "unknown key 'loss.num_cluster' (did you mean 'loss.num_clusters'?)" in result.output


def test_second_driver_on_the_same_experiment_is_refused(tmp_path):
    from cbl.sweep.lock import experiment_lock

    storage = tmp_path / "runs"
    (storage / "grid").mkdir(parents=True)
    with experiment_lock(storage / "grid"):
        result = run("run", str(write_space(tmp_path, GRID)), "--demo", "--storage", str(storage), *TINY)
    assert result.exit_code == 2
    assert "a sweep is already running on this experiment" in result.output


@pytest.mark.ray
def test_final_eval_with_seeds_and_an_explicit_protocol(grid_sweep):
    from cbl.data import demo_root
    from cbl.engine import load_model

    _, experiment = grid_sweep
    result = run("final-eval", str(experiment), "--seeds", "2")
    assert result.exit_code == 0, result.output
    summary = json.loads((experiment / "final_eval" / "summary-eval.json").read_text())
    # two fresh seeds, the selection run (seed 0) not among them: it is reported on its own line
    assert [seed for seed, _ in summary["eers"]] == [1, 2] and summary["selection"]["seed"] == 0
    eers = [eer for _, eer in summary["eers"]]
    mean, std = sum(eers) / 2, statistics.stdev(eers)
    assert summary["mean_eer"] == pytest.approx(mean) and summary["std_eer"] == pytest.approx(std)
    assert f"final eval EER {100 * mean:.2f}% +- {100 * std:.2f}% over 2 fresh seeds (seed 1: " in result.output
    assert (
        f"selection run (trial {summary['trial_id']}, seed 0): eval EER {100 * summary['selection']['eer']:.2f}%"
        in result.output
    )
    assert len(summary["score_files"]) == 3 and summary["score_files"][0].endswith("scores-eval-seed0.txt")
    for seed in (1, 2):
        retrained = experiment / "final_eval" / f"seed-{seed}" / "checkpoints" / "best.pt"
        assert load_model(retrained).config.train.seed == seed

    root = demo_root(load_model(experiment / "trials" / summary["trial_id"] / "checkpoints" / "best.pt").config.data)
    protocol = root / "ASVspoof2019_LA_cm_protocols" / "ASVspoof2019.LA.cm.dev.trl.txt"
    other = run(
        "final-eval",
        str(experiment),
        "--protocol",
        str(protocol),
        "--audio-dir",
        str(root / "ASVspoof2019_LA_dev" / "flac"),
        "--corpus",
        "asvspoof2019_la",
    )
    assert other.exit_code == 0, other.output
    dev = json.loads((experiment / "final_eval" / "summary-ASVspoof2019.LA.cm.dev.trl.json").read_text())
    # the best trial's dev EER, recomputed from a protocol file, is what the sweep recorded
    assert dev["selection"]["eer"] == pytest.approx(summary["dev_eer"], abs=1e-9)


@pytest.mark.ray
def test_final_eval_reports_min_tdcf_with_the_organisers_asv_scores(grid_sweep, tmp_path):
    _, experiment = grid_sweep
    asv = tmp_path / "ASVspoof2019.LA.asv.eval.gi.trl.scores.txt"
    asv.write_text(
        "".join(
            f"bonafide target {3 + i / 10}\nbonafide nontarget {i / 10 - 2}\nA07 spoof {i / 5}\n" for i in range(10)
        )
    )
    result = run("final-eval", str(experiment), "--asv-scores", str(asv))
    assert result.exit_code == 0, result.output
    summary = json.loads((experiment / "final_eval" / "summary-eval.json").read_text())
    forms = summary["min_tdcf"]["0"]
    assert set(forms) == {"2019", "2021"} and all(0 <= v <= 1 for v in forms.values())
    assert f"min t-DCF (2019) {forms['2019']:.4f}, min t-DCF (2021) {forms['2021']:.4f}" in result.output
    assert "min t-DCF " in (experiment / "final_eval" / "summary-eval.md").read_text()


def test_trials_unknown_to_the_restored_sweep_are_marked_lost_and_not_counted(tmp_path):
    from cbl.sweep.driver import mark_lost_trials
    from cbl.sweep.store import best_trial, write_trial_state

    for trial_id, eer in (("known", 0.3), ("orphan", 0.1)):
        path = tmp_path / "trials" / trial_id
        write_trial_state(path, trial_id=trial_id, params={}, state="running")
        (path / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "dev_eer": eer}) + "\n")
        (path / "checkpoints").mkdir()
        (path / "checkpoints" / "best.pt").write_bytes(b"x")
    mark_lost_trials(tmp_path, {"known"})
    states = {t.trial_id: t.state for t in read_trials(tmp_path)}
    assert states == {"known": "running", "orphan": "lost"}
    assert best_trial(read_trials(tmp_path)).trial_id == "known"  # a lost trial is never the best


@pytest.mark.ray
def test_errored_trial_is_reported_and_retried_with_retry_errored(ray_session, tmp_path):
    from cbl.data import demo_root
    from cbl.sweep.settings import prepare_sweep

    space = write_space(
        tmp_path, GRID.replace("resources: {cpu: 1, gpu: 0}", "resources: {cpu: 1, gpu: 0}\nfailure: {max_failures: 0}")
    )
    args = [*TINY, "--set", "data.demo_seed=7"]  # a corpus of its own: this test damages it
    sets = [a for a in args if a != "--set"]
    settings, _ = prepare_sweep(
        space, demo=True, set_options=sets, storage=tmp_path / "runs", name=None, num_samples=None
    )
    root = demo_root(settings.trial_config({}).data)
    victim = sorted((root / "ASVspoof2019_LA_train" / "flac").glob("*.flac"))[0]
    good = victim.read_bytes()
    victim.write_bytes(good[:200])  # a truncated FLAC met mid-epoch

    first = run("run", str(space), "--demo", "--storage", str(tmp_path / "runs"), *args)
    experiment = tmp_path / "runs" / "grid"
    trials = read_trials(experiment)
    assert first.exit_code == 1, first.output  # every trial errored: no best configuration to evaluate
    assert "no trial has finished an epoch yet" in first.output and "Traceback" not in first.output
    assert all(t.state == "error" for t in trials) and len(trials) == 3
    assert all(victim.name in t.error for t in trials)  # the reason names the file
    assert "3 trial(s) errored" in first.output and "--retry-errored" in first.output
    status = run("status", str(experiment))
    assert "error: AudioError" in status.output and victim.name in status.output

    victim.write_bytes(good)
    retried = run("resume", str(experiment), "--retry-errored", "--no-final-eval")
    assert retried.exit_code == 0, retried.output
    trials = read_trials(experiment)
    assert len(trials) == 3 and all(t.state == "finished" and t.epochs == 2 for t in trials)
