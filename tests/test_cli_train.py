"""``cbl-search train``: summary lines, TensorBoard, config copy, resume, refusals, exit codes; the runner scripts."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import cbl.engine.reporting
from cbl.cli import cli
from cbl.config import load_config, resolve_config
from cbl.engine import read_history

from tiny import TINY, as_set_args

REPO = Path(__file__).resolve().parents[1]

TINY_ARGS = as_set_args()


def train(out: Path, *extra: str):
    return CliRunner().invoke(cli, ["train", "--demo", *TINY_ARGS, *extra, "--out", str(out)])


def dev_eer_events(run_dir: Path) -> list[tuple[int, float]]:
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return [(event.step, event.value) for event in events.Scalars("dev_eer")]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli_train") / "run"
    result = train(out)
    assert result.exit_code == 0, result.output
    return out, result


def test_train_prints_one_summary_line_per_epoch(finished_run):
    _out, result = finished_run
    lines = result.stdout.splitlines()
    for epoch in (1, 2):
        assert len([line for line in lines if line.startswith(f"epoch {epoch}/2  dev EER ")]) == 1
    assert re.search(
        r"^best dev EER \d+\.\d\d% \(95% CI \d+\.\d\d-\d+\.\d\d%\) at epoch [12]; checkpoint .*best\.pt$",
        result.stdout,
        re.M,
    )
    assert "RANDOM weights" in result.stdout  # the demo says it is not a result


def test_train_writes_tensorboard_events_with_hparams(finished_run):
    out, _ = finished_run
    history = read_history(out)
    assert dev_eer_events(out) == [(m["epoch"], pytest.approx(m["dev_eer"])) for m in history]
    events = EventAccumulator(str(out))
    events.Reload()
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")
    assert "train_loss" in events.Tags()["scalars"] and "lr" in events.Tags()["scalars"]


def test_train_copies_the_resolved_config_into_the_run_folder(finished_run):
    out, _ = finished_run
    assert load_config(out / "config.yaml") == resolve_config(None, TINY, demo=True)


def test_rerun_into_the_same_folder_resumes(monkeypatch, tmp_path, finished_run):
    reference, _ = finished_run
    real_report = cbl.engine.reporting.ConsoleReporter.report

    def ctrl_c_after_epoch_one(self, metrics, checkpoint_dir):
        real_report(self, metrics, checkpoint_dir)
        if metrics["epoch"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(cbl.engine.reporting.ConsoleReporter, "report", ctrl_c_after_epoch_one)
    out = tmp_path / "run"
    first = train(out)
    assert first.exit_code == 130
    assert re.search(r"interrupted after epoch 1: rerun the same command .* to resume", first.stderr)
    monkeypatch.setattr(cbl.engine.reporting.ConsoleReporter, "report", real_report)

    second = train(out)
    assert second.exit_code == 0, second.output
    assert f"resuming the run in {out}" in second.stdout
    assert "epoch 1/2" not in second.stdout and "epoch 2/2" in second.stdout
    assert [m["dev_eer"] for m in read_history(out)] == [m["dev_eer"] for m in read_history(reference)]
    assert [step for step, _ in dev_eer_events(out)] == [1, 2]
    # one row in the HParams dashboard: the interrupted run wrote none, the finished resume one
    rows = sum(p.read_bytes().count(b"_hparams_/session_start_info") for p in out.rglob("events.out.tfevents.*"))
    assert rows == 1


def test_other_config_into_the_same_folder_is_refused(tmp_path, finished_run):
    out = tmp_path / "run"
    shutil.copytree(finished_run[0], out)
    before = sorted(p.name for p in out.iterdir())
    result = train(out, "--set", "loss.alpha=2.0")
    assert result.exit_code == 2
    assert "holds a run with another configuration (loss.alpha: 0.5 -> 2.0); choose a new --out" in result.output
    assert sorted(p.name for p in out.iterdir()) == before


def test_missing_data_root_tells_how_to_set_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["train", "--set", "train.num_threads=1"])
    assert result.exit_code == 2
    assert "data.root is not set" in result.output and "--set data.root=" in result.output
    assert "--demo" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "cbl_runs").exists()  # a failed start leaves no half-made run folder


def test_unknown_key_is_named(tmp_path):
    result = CliRunner().invoke(cli, ["train", "--demo", "--set", "loss.alpah=2", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "unknown key 'loss.alpah' (did you mean 'loss.alpha'?)" in result.output
    assert "Traceback" not in result.output


def test_bad_config_file_names_file_line_and_key(tmp_path):
    config = tmp_path / "exp.yaml"
    config.write_text("loss:\n  type: cluster_only\n  num_cluster: 5\n")
    result = CliRunner().invoke(cli, ["train", str(config), "--demo", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert f"{config}:3: unknown key 'loss.num_cluster'" in result.output


def test_missing_config_file_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(cli, ["train", str(tmp_path / "nope.yaml"), "--demo"])
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_divergence_exits_1_with_one_line(tmp_path):
    result = train(tmp_path / "r", "--set", "optim.lr=1e30", "--set", "optim.head_lr=1e30")
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1
    assert re.match(
        r"Error: training diverged: .* at epoch 1, step \d+ \(batch \d+ of \d+\); lower optim\.lr", errors[0]
    )
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------- runner scripts
def _runner_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.pop("CBL_SEARCH", None)
    return env


@pytest.mark.slow  # three fresh interpreters: about 30 s on 2 busy cores
def test_runner_scripts_train_and_evaluate(tmp_path):
    env = _runner_env(tmp_path)
    out = tmp_path / "run"
    train_run = subprocess.run(
        [
            "bash",
            str(REPO / "runners" / "train_ce_baseline.sh"),
            "--demo",
            *TINY_ARGS,
            "--set",
            "train.epochs=1",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert train_run.returncode == 0, train_run.stderr
    assert "epoch 1/1" in train_run.stdout
    assert load_config(out / "config.yaml").loss.type == "ce_only"

    checkpoint = out / "checkpoints" / "best.pt"
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text("data:\n  eval_mode: window\ntrain:\n  eval_batch_size: 7\n")
    for config, scores in (("-", tmp_path / "plain.txt"), (str(overrides), tmp_path / "window.txt")):
        evaluate = subprocess.run(
            ["bash", str(REPO / "runners" / "eval.sh"), str(checkpoint), config, str(scores), "--split", "dev"],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert evaluate.returncode == 0, evaluate.stderr
        assert re.search(r"^EER \d+\.\d\d% ", evaluate.stdout, re.M)
        assert len(scores.read_text().splitlines()) == 40

    bad = subprocess.run(
        ["bash", str(REPO / "runners" / "eval.sh"), str(checkpoint)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert bad.returncode == 2 and "usage:" in bad.stderr
