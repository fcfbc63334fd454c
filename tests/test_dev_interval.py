"""The dev EER's 95% CI each epoch (metrics.jsonl, the epoch line, TensorBoard) and the best epoch's dev scores file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cbl.config import resolve_config
from cbl.data import load_split
from cbl.engine import ConsoleReporter, fit, read_history
from cbl.engine.dev_scores import DEV_SCORES, read_dev_scores, write_dev_scores
from cbl.engine.reporting import format_epoch_line
from cbl.errors import CblError
from cbl.metrics import compute_eer
from cbl.uncertainty import bootstrap_eer_ci

from tiny import TINY


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    config = resolve_config(None, [*TINY, "train.epochs=3"], demo=True)
    run_dir = tmp_path_factory.mktemp("dev_interval") / "run"
    fit(config, None, run_dir)
    return config, run_dir


def test_every_epoch_writes_the_dev_eer_with_its_interval_by_speaker(tiny_run):
    config, run_dir = tiny_run
    speakers = {r.speaker for r in load_split(config.data, "dev")}
    for line in read_history(run_dir):
        assert line["dev_eer_low"] <= line["dev_eer"] <= line["dev_eer_high"]
        assert line["dev_eer_high"] > line["dev_eer_low"]
        assert line["dev_eer_ci_speakers"] == len(speakers) > 1


def test_the_best_epochs_dev_scores_are_kept_and_reproduce_its_eer_and_interval(tiny_run):
    config, run_dir = tiny_run
    history = read_history(run_dir)
    best = min(history, key=lambda line: line["dev_eer"])
    kept = read_dev_scores(run_dir / "checkpoints" / DEV_SCORES)
    assert kept.epoch == best["epoch"]
    assert sorted(kept.utt_ids) == sorted(r.utt_id for r in load_split(config.data, "dev"))
    assert compute_eer(kept.scores[kept.labels == 1], kept.scores[kept.labels == 0])[0] == best["dev_eer"]
    # the interval is seeded by (run seed, epoch index) and resampled by speaker
    again = bootstrap_eer_ci(
        kept.scores, kept.labels, groups=kept.speakers, n_resamples=1000, seed=(config.train.seed, kept.epoch - 1)
    )
    assert (again.low, again.high) == (best["dev_eer_low"], best["dev_eer_high"])


def test_no_interval_is_written_with_zero_resamples(tmp_path):
    config = resolve_config(None, [*TINY, "train.epochs=1", "train.dev_ci_resamples=0"], demo=True)
    fit(config, None, tmp_path / "run")
    (line,) = read_history(tmp_path / "run")
    assert "dev_eer_low" not in line and "dev_eer_high" not in line
    assert read_dev_scores(tmp_path / "run" / "checkpoints" / DEV_SCORES).epoch == 1


def test_protocols_without_speakers_resample_by_utterance(tmp_path, monkeypatch):
    import cbl.engine.trainer as trainer

    config = resolve_config(None, [*TINY, "train.epochs=1"], demo=True)
    unnamed = [dataclasses.replace(r, speaker="-") for r in load_split(config.data, "dev")]
    monkeypatch.setattr(
        trainer, "load_split", lambda data, split: unnamed if split == "dev" else load_split(data, split)
    )
    fit(config, None, tmp_path / "run")
    (line,) = read_history(tmp_path / "run")
    assert line["dev_eer_ci_speakers"] == 0 and line["dev_eer_low"] <= line["dev_eer"] <= line["dev_eer_high"]


def test_the_epoch_line_and_tensorboard_show_the_interval(tmp_path):
    config = resolve_config(None, TINY, demo=True)
    metrics = {
        "epoch": 1,
        "dev_eer": 0.125,
        "dev_eer_low": 0.1,
        "dev_eer_high": 0.15,
        "best_dev_eer": 0.125,
        "best_epoch": 1,
        "train_loss": 0.5,
        "train_attraction": 0.1,
        "train_repulsion": 0.2,
        "train_ce": 0.0,
        "epoch_seconds": 1.0,
    }
    assert "dev EER 12.50% (95% CI 10.00-15.00%)" in format_epoch_line(metrics, 2)
    reporter = ConsoleReporter(config, tmp_path, echo=lambda _: None)
    reporter.report(metrics, tmp_path)
    reporter.close()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert {"dev_eer", "dev_eer_low", "dev_eer_high"} <= set(events.Tags()["scalars"])
    assert events.Scalars("dev_eer_high")[0].value == pytest.approx(0.15)
    assert "custom_scalars__config__" in events.Tags()["tensors"]  # the band: dev_eer between its two ends


def test_dev_scores_round_trip_with_speakers_holding_spaces(tmp_path):
    path = write_dev_scores(tmp_path / DEV_SCORES, 4, ["a", "b"], [1, 0], np.array([0.25, -1e-17]), ["Alan Watts", ""])
    kept = read_dev_scores(path)
    assert kept.epoch == 4 and kept.utt_ids == ["a", "b"] and kept.speakers == ["Alan Watts", "-"]
    assert kept.labels.tolist() == [1, 0] and kept.scores.tolist() == [0.25, -1e-17]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r":1: expected the header '# cbl dev scores, epoch N'"),
        ("# cbl dev scores, epoch 2\na 2 0.5 spk\n", r":2: expected 'UTT_ID LABEL\(0/1\) SCORE SPEAKER'"),
        ("# cbl dev scores, epoch 2\na 1 x spk\n", r":2: score 'x' is not a number"),
        ("# cbl dev scores, epoch 2\na 1 0.5 spk\nb 0 nan spk\n", r":3: score 'nan' is not finite"),
    ],
)
def test_a_damaged_dev_score_file_is_a_one_line_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / DEV_SCORES
    path.write_text(text)
    with pytest.raises(CblError, match=message):
        read_dev_scores(path)


def test_a_missing_dev_score_file_says_so(tmp_path):
    with pytest.raises(CblError, match="no dev score file"):
        read_dev_scores(tmp_path / DEV_SCORES)


def test_evaluate_gives_the_eer_with_its_interval_by_speaker(tiny_run, tmp_path):
    from click.testing import CliRunner

    from cbl.cli import cli
    from cbl.engine import evaluate_records, load_model

    config, run_dir = tiny_run
    records = load_split(config.data, "eval")
    result = evaluate_records(load_model(run_dir / "checkpoints" / "best.pt"), records, tmp_path / "eval.txt")
    expected = bootstrap_eer_ci(result.scores, result.labels, groups=[r.speaker for r in records], seed=0)
    assert (result.interval["eer_low"], result.interval["eer_high"]) == (expected.low, expected.high)
    assert result.interval["eer_ci_speakers"] == len({r.speaker for r in records})
    printed = CliRunner().invoke(
        cli, ["evaluate", str(run_dir / "checkpoints" / "best.pt"), "--out", str(tmp_path / "e2.txt")]
    )
    assert printed.exit_code == 0, printed.output
    low, high = 100 * expected.low, 100 * expected.high
    assert f"EER {100 * expected.eer:.2f}% (threshold " in printed.stdout
    assert f"; 95% CI {low:.2f}-{high:.2f}%)" in printed.stdout
