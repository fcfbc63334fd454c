"""Kill the sweep driver with SIGKILL mid-sweep, resume, and check nothing was lost or run twice."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cbl.sweep.store import read_trials

from tiny import TINY_SWEEP, as_set_args

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"
TINY = as_set_args((*TINY_SWEEP, "data.demo_utterances=60", "train.eval_batch_size=16"))


def cli(*args: str, env: dict[str, str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "cbl", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        **kwargs,
    )


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
    return {
        t.trial_id: (t.path / "metrics.jsonl").read_text().splitlines()
        for t in read_trials(experiment)
        if (t.path / "metrics.jsonl").is_file()
    }


def space_file(tmp_path: Path, *, num_samples: int, max_concurrent: int, final_seeds: int = 0) -> Path:
    """A small Optuna space: each trial 1 CPU, so two run at once on 2 cores unless max_concurrent says 1."""
    path = tmp_path / "kill.yaml"
    path.write_text(
        "name: kill\n"
        "space:\n  loss.type: {choice: [cluster_only, combined, ce_only]}\n"
        f"search: {{algorithm: optuna, num_samples: {num_samples}, seed: 0, max_concurrent: {max_concurrent}}}\n"
        "scheduler: {name: none}\nresources: {cpu: 1, gpu: 0}\n"
        f"final_eval: {{seeds: {final_seeds}, split: eval}}\n"
    )
    return path


def environment(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "CBL_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    env.pop("RAY_ADDRESS", None)  # a private local Ray, started by the driver in its own process group
    return env


def trial_files(experiment: Path) -> dict[str, dict[str, bytes]]:
    """Per trial, the bytes of what a finished trial must never rewrite: its history and checkpoints."""
    out = {}
    for t in read_trials(experiment):
        files = [t.path / "metrics.jsonl", *sorted((t.path / "checkpoints").glob("*.pt"))]
        out[t.trial_id] = {f.name: f.read_bytes() for f in files if f.is_file()}
    return out


def ended(trials) -> list:
    return [t for t in trials if t.state in ("finished", "stopped")]


def trials_of(experiment: Path) -> list:
    return read_trials(experiment) if experiment.is_dir() else []


# Each kill moment: how the sweep is started, and when the driver is killed.
def _before_first_report(experiment: Path) -> bool:
    trials = trials_of(experiment)
    return any(t.state == "running" for t in trials) and all(t.epochs == 0 for t in trials)


def _mid_epoch(experiment: Path) -> bool:
    # some trials ended and some are mid-training (for longer than one snapshot period, 2 s,
    # so that Ray's snapshot knows them: a younger one is re-run under a new id, see `lost`)
    trials = trials_of(experiment)
    running = [
        t
        for t in trials
        if t.state == "running" and t.epochs >= 1 and time.time() - (t.path / "config.yaml").stat().st_mtime > 2.5
    ]
    return len(ended(trials)) >= 1 and len(running) >= 1


def _between_trials(experiment: Path) -> bool:
    # one trial at a time: one has ended, the next has not reported an epoch yet
    trials = trials_of(experiment)
    return 1 <= len(ended(trials)) < 3 and all(t.epochs == 0 for t in trials if t.state == "running")


def _during_final_evaluation(experiment: Path) -> bool:
    # the final evaluation retrains the best configuration with a fresh seed: killed after its first epoch
    return any(f.read_text().strip() for f in experiment.glob("final_eval/seed-*/metrics.jsonl"))


MOMENTS = {
    # moment: (trials, at most at once, epochs, final-evaluation seeds (0: none), kill when this holds)
    # mid_epoch runs ablation.yaml (Optuna + ASHA) instead of the small space: ASHA's rungs must survive too
    "before_first_report": (3, 2, 2, 0, _before_first_report),
    "mid_epoch": (5, 0, 6, 0, _mid_epoch),
    "between_trials": (3, 1, 2, 0, _between_trials),
    "during_final_evaluation": (2, 2, 3, 1, _during_final_evaluation),
}


def start_driver(moment: str, tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.Popen, Path, int]:
    storage = tmp_path / "runs"
    num_samples, concurrent, epochs, final_seeds, _ = MOMENTS[moment]
    if moment == "mid_epoch":
        args = [
            str(SPACES / "ablation.yaml"),
            "--name",
            "kill",
            "--num-samples",
            str(num_samples),
            *TINY,
            "--set",
            f"train.epochs={epochs}",
            "--set",
            "data.demo_utterances=100",
        ]
    else:
        space = space_file(tmp_path, num_samples=num_samples, max_concurrent=concurrent)
        args = [str(space), *TINY, "--set", f"train.epochs={epochs}", "--set", "loss.num_clusters=3"]
    args += ["--final-seeds", str(final_seeds)] if final_seeds else ["--no-final-eval"]
    driver = cli("run", *args, "--demo", "--storage", str(storage), env=env)
    return driver, storage / "kill", num_samples


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("moment", list(MOMENTS))
def test_sigkill_of_the_driver_then_resume_finishes_with_the_exact_trial_count(tmp_path, moment):
    env = environment(tmp_path)
    driver, experiment, num_samples = start_driver(moment, tmp_path, env)
    try:
        wait_for(lambda: MOMENTS[moment][-1](experiment), 400, driver)
    finally:
        kill_session(driver)  # the driver, the Ray it started and the trials' workers, at once
    before = snapshot(experiment)
    files_before = trial_files(experiment)
    states_before = {t.trial_id: t.state for t in read_trials(experiment)}
    final = moment == "during_final_evaluation"
    if moment in ("before_first_report", "mid_epoch"):
        assert any(s == "running" for s in states_before.values()), states_before

    resumed = cli("resume", str(experiment), *([] if final else ["--no-final-eval"]), env=env)
    output, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, output
    assert "Traceback" not in output

    # a trial started after Ray's last snapshot is re-run under a new id; its folder is marked lost
    trials = [t for t in read_trials(experiment) if t.state != "lost"]
    assert len(trials) == num_samples, output  # none lost, none duplicated
    assert all(t.state in ("finished", "stopped") for t in trials), [(t.trial_id, t.state) for t in trials]
    after = snapshot(experiment)
    files_after = trial_files(experiment)
    for trial_id, lines in before.items():
        if trial_id not in {t.trial_id for t in trials}:
            continue
        if states_before[trial_id] in ("finished", "stopped"):
            assert_only_pruned(files_after[trial_id], files_before[trial_id], trial_id)
        else:
            assert_continued(after[trial_id], lines, trial_id)
    sweep = json.loads((experiment / "sweep.json").read_text())
    assert sweep["state"] == "finished"
    if final:
        assert_final_evaluation_completed(experiment, before_kill=files_before, output=output)


def assert_only_pruned(after: dict[str, bytes], before: dict[str, bytes], trial_id: str) -> None:
    """An ended trial was not trained again: its history is the same, and its checkpoints are the same bytes
    or removed by the retention policy (cbl.sweep.retention), never rewritten; none holds optimizer state."""
    assert after["metrics.jsonl"] == before["metrics.jsonl"], f"ended trial {trial_id} was trained again"
    assert set(after) <= set(before) and all(after[name] == before[name] for name in after), trial_id
    assert not {"last.pt", "previous.pt"} & set(after), f"ended trial {trial_id} kept its optimizer state"


def assert_continued(after: list[str], before: list[str], trial_id: str) -> None:
    """A running trial continued from its last checkpoint: earlier epochs kept, each epoch exactly once.

    The last line before the kill may be an epoch whose checkpoint was not written yet: it is redone.
    """
    assert after[: len(before)] == before or after[: len(before) - 1] == before[:-1], trial_id
    epochs = [json.loads(line)["epoch"] for line in after]
    assert epochs == list(range(1, len(epochs) + 1)), f"trial {trial_id} restarted: {epochs}"


def assert_final_evaluation_completed(experiment: Path, before_kill: dict, output: str) -> None:
    assert "finishing the interrupted final evaluation" in output
    summary = json.loads((experiment / "final_eval" / "summary-eval.json").read_text())
    assert len(summary["eers"]) == 1 and summary["selection"], summary  # the best checkpoint and one fresh seed
    assert json.loads((experiment / "sweep.json").read_text())["final_eval"] == {"state": "done", "seeds": 1}
    (retrain,) = experiment.glob("final_eval/seed-*")
    epochs = [json.loads(line)["epoch"] for line in (retrain / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3], epochs  # continued from its checkpoint, not started again
    assert f"final eval EER {100 * summary['mean_eer']:.2f}%" in output
    rerun = cli("resume", str(experiment), env=environment(experiment.parent.parent))
    again, _ = rerun.communicate(timeout=120)
    assert rerun.returncode == 0 and "nothing to resume" in again, again


@pytest.mark.ray
@pytest.mark.slow
def test_a_killed_trial_worker_is_retried_from_its_last_checkpoint(tmp_path):
    """SIGKILL the Ray worker process of a running trial: Ray retries it (failure.max_failures: 1), the trial
    continues from its own last.pt (at most the epoch in progress is redone), and the sweep finishes."""
    env = environment(tmp_path)
    space = space_file(tmp_path, num_samples=2, max_concurrent=1)
    experiment = tmp_path / "runs" / "kill"
    driver = cli(
        "run",
        str(space),
        "--demo",
        "--storage",
        str(tmp_path / "runs"),
        "--no-final-eval",
        *TINY,
        "--set",
        "train.epochs=3",
        "--set",
        "loss.num_clusters=3",
        env=env,
    )
    try:
        wait_for(lambda: any(t.state == "running" and t.epochs >= 1 for t in trials_of(experiment)), 400, driver)
        (victim,) = [t for t in read_trials(experiment) if t.state == "running"]
        lines_before = (victim.path / "metrics.jsonl").read_text().splitlines()
        os.kill(trial_worker_pid(driver.pid), signal.SIGKILL)
        output, _ = driver.communicate(timeout=600)
    finally:
        if driver.poll() is None:
            kill_session(driver)
    assert driver.returncode == 0, output
    trials = read_trials(experiment)
    assert len(trials) == 2 and all(t.state == "finished" and t.epochs == 3 for t in trials), output
    after = (victim.path / "metrics.jsonl").read_text().splitlines()
    assert_continued(after, lines_before, victim.trial_id)
    assert "0 trial(s) errored" not in output and "errored" not in output


@pytest.mark.ray
@pytest.mark.slow
def test_a_kill_right_after_a_trial_ends_while_its_checkpoints_are_pruned_resumes_without_retraining(tmp_path):
    """SIGKILL the driver as soon as a trial's folder says finished (the moment the driver prunes it), cut the
    pruning short by hand (last.pt gone, previous.pt left: what a kill between the two deletions leaves), and
    resume: the ended trial is not trained again (even from previous.pt), the sweep ends with the exact count
    and the next pass finishes the pruning."""
    env = environment(tmp_path)
    space = space_file(tmp_path, num_samples=3, max_concurrent=1)
    experiment = tmp_path / "runs" / "kill"
    driver = cli(
        "run", str(space), "--demo", "--storage", str(tmp_path / "runs"), "--no-final-eval", *TINY,
        "--set", "train.epochs=3", "--set", "loss.num_clusters=3",
        "--set", "train.keep_previous_checkpoint=true", env=env,  # the fallback this test is about
    )  # fmt: skip
    kept: dict[str, bytes] = {}  # each running trial's previous.pt as last seen (an older checkpoint than its last)

    def a_trial_finished() -> bool:
        trials = trials_of(experiment)
        for t in trials:
            previous = t.path / "checkpoints" / "previous.pt"
            if t.state == "running" and previous.is_file():
                with contextlib.suppress(OSError):
                    kept[t.trial_id] = previous.read_bytes()
        return any(t.state == "finished" for t in trials)

    try:
        wait_for(a_trial_finished, 400, driver)
    finally:
        kill_session(driver)
    (done,) = [t for t in read_trials(experiment) if t.state == "finished"]
    checkpoints = done.path / "checkpoints"
    if not (checkpoints / "previous.pt").is_file():  # the driver pruned it before the kill: put it back
        (checkpoints / "previous.pt").write_bytes(kept[done.trial_id])
    (checkpoints / "last.pt").unlink(missing_ok=True)  # the kill came between the two deletions
    history = (done.path / "metrics.jsonl").read_bytes()
    best = (checkpoints / "best.pt").read_bytes()

    resumed = cli("resume", str(experiment), "--no-final-eval", env=env)
    output, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, output
    trials = [t for t in read_trials(experiment) if t.state != "lost"]
    assert len(trials) == 3 and all(t.state == "finished" and t.epochs == 3 for t in trials), output
    assert (done.path / "metrics.jsonl").read_bytes() == history, "the ended trial was trained again"
    # K=3 of 3: every best.pt kept; best_dev_scores.txt stays with every trial
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.pt", "best_dev_scores.txt"]
    assert (checkpoints / "best.pt").read_bytes() == best


def session_processes(driver_pid: int) -> dict[int, str]:
    """pid -> command line of every process in the driver's session (Ray gives workers their own groups)."""
    titles = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) == driver_pid:
                titles[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except (OSError, ProcessLookupError):
            continue
    return titles


def kill_session(driver: subprocess.Popen) -> None:
    """SIGKILL the driver, the Ray it started and Ray's workers (in groups of their own, same session)."""
    for pid in session_processes(driver.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    driver.wait()


def trial_worker_pid(driver_pid: int) -> int:
    """The one Ray worker process running a trial (``ray::ImplicitFunc.train``) in this test's driver session."""
    titles = session_processes(driver_pid)
    workers = [pid for pid, title in titles.items() if title.startswith("ray::ImplicitFunc")]
    assert len(workers) == 1, titles
    return workers[0]


@pytest.mark.ray
@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_the_sweep_resumes(tmp_path):
    env = {**os.environ, "CBL_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    env.pop("RAY_ADDRESS", None)
    experiment = tmp_path / "runs" / "intr"
    driver = cli(
        "run",
        str(SPACES / "loss_type.yaml"),
        "--demo",
        "--storage",
        str(tmp_path / "runs"),
        "--name",
        "intr",
        "--no-final-eval",
        *TINY,
        "--set",
        "train.epochs=3",
        "--set",
        "loss.num_clusters=3",
        env=env,
    )
    try:
        wait_for(
            lambda: any(t.epochs >= 1 for t in read_trials(experiment)) if experiment.is_dir() else False, 300, driver
        )
    except BaseException:
        kill_session(driver)
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


@pytest.mark.parametrize(("failure", "expected"), [("", 1), ("failure: {max_failures: 3}\n", 3)], ids=["default", "3"])
def test_failure_max_failures_drives_rays_retries(tmp_path, failure, expected):
    """How often Ray restarts a trial whose worker died (each restart continues from the trial's last.pt)."""
    import yaml

    from cbl.sweep.driver import build_tuner
    from cbl.sweep.settings import SweepSettings

    text = space_file(tmp_path, num_samples=2, max_concurrent=1).read_text() + failure
    settings = SweepSettings(
        space_data=yaml.safe_load(text),
        space_source="kill.yaml",
        demo=True,
        set_options=[],
        experiment_dir=str(tmp_path / "runs" / "kill"),
        num_samples=2,
    )
    _, _, run_config = build_tuner(settings, settings.space())
    assert run_config.failure_config.max_failures == expected
