"""Kill the sweep driver with SIGKILL mid-sweep, resume, and check nothing was lost or run twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cbl.sweep_store import read_trials

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"
TINY = [
    "--set", "data.demo_utterances=60", "--set", "data.demo_seconds=0.5", "--set", "train.batch_size=8",
    "--set", "train.eval_batch_size=16", "--set", "data.max_len=8000", "--set", "data.eval_window=8000",
]


def cli(*args: str, env: dict[str, str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cbl.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True, **kwargs)


def wait_for(predicate, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"driver ended early:\n{proc.stdout.read()}")
        time.sleep(0.25)
    raise AssertionError("timed out waiting for the sweep to reach the kill point")


def snapshot(experiment: Path) -> dict[str, list[str]]:
    return {t.trial_id: (t.path / "metrics.jsonl").read_text().splitlines() for t in read_trials(experiment)
            if (t.path / "metrics.jsonl").is_file()}


@pytest.mark.slow
def test_sigkill_mid_sweep_then_resume_finishes_with_the_exact_trial_count(tmp_path):
    env = {**os.environ, "CBL_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "RAY_ADDRESS": ""}
    env.pop("RAY_ADDRESS")
    experiment = tmp_path / "runs" / "kill"
    num_samples = 5
    driver = cli("run", str(SPACES / "ablation.yaml"), "--demo", "--storage", str(tmp_path / "runs"), "--name", "kill",
                 "--num-samples", str(num_samples), "--no-final-eval", "--set", "train.epochs=6", *TINY,
                 "--set", "data.demo_utterances=100", env=env)

    def some_ended_and_some_mid_training() -> bool:
        trials = read_trials(experiment) if experiment.is_dir() else []
        ended = [t for t in trials if t.state in ("finished", "stopped")]
        # running for longer than one snapshot period (2 s), so that Ray's snapshot knows it
        running = [t for t in trials if t.state == "running" and t.epochs >= 1
                   and time.time() - (t.path / "config.yaml").stat().st_mtime > 2.5]
        return len(ended) >= 1 and len(running) >= 1

    try:
        wait_for(some_ended_and_some_mid_training, 400, driver)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray it started, at once
        driver.wait()
    before = snapshot(experiment)
    states_before = {t.trial_id: t.state for t in read_trials(experiment)}
    assert any(s == "running" for s in states_before.values())

    resumed = cli("resume", str(experiment), "--no-final-eval", env=env)
    output, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, output

    # a trial started after Ray's last snapshot is re-run under a new id; its folder is marked lost
    trials = [t for t in read_trials(experiment) if t.state != "lost"]
    assert len(trials) == num_samples, output  # none lost, none duplicated
    assert all(t.state in ("finished", "stopped") for t in trials), [(t.trial_id, t.state) for t in trials]
    after = snapshot(experiment)
    for trial_id, lines in before.items():
        if trial_id not in {t.trial_id for t in trials}:
            continue
        if states_before[trial_id] in ("finished", "stopped"):
            assert after[trial_id] == lines, f"finished trial {trial_id} was run again"
        else:
            # a running trial continued from its last checkpoint: its earlier epochs are kept as they were
            assert after[trial_id][: len(lines)] == lines or after[trial_id][: len(lines) - 1] == lines[:-1]
            epochs = [json.loads(line)["epoch"] for line in after[trial_id]]
            assert epochs == list(range(1, len(epochs) + 1)), f"trial {trial_id} restarted: {epochs}"
    assert json.loads((experiment / "sweep.json").read_text())["state"] == "finished"


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_the_sweep_resumes(tmp_path):
    env = {**os.environ, "CBL_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    env.pop("RAY_ADDRESS", None)
    experiment = tmp_path / "runs" / "intr"
    driver = cli("run", str(SPACES / "loss_type.yaml"), "--demo", "--storage", str(tmp_path / "runs"), "--name", "intr",
                 "--no-final-eval", "--set", "train.epochs=3", "--set", "loss.num_clusters=3", *TINY, env=env)
    try:
        wait_for(lambda: any(t.epochs >= 1 for t in read_trials(experiment)) if experiment.is_dir() else False,
                 300, driver)
    except BaseException:
        os.killpg(driver.pid, signal.SIGKILL)
        raise
    os.killpg(driver.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends: the whole foreground group
    output, _ = driver.communicate(timeout=120)
    assert driver.returncode == 130, output
    assert "sweep interrupted" in output and f"cbl-search resume {experiment}" in output
    assert "Traceback" not in output
    assert json.loads((experiment / "sweep.json").read_text())["state"] == "interrupted"

    resumed = cli("resume", str(experiment), "--no-final-eval", env=env)
    output, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, output
    trials = read_trials(experiment)
    assert len(trials) == 3 and all(t.state == "finished" and t.epochs == 3 for t in trials), output
