"""The command line: --help, --version, config printing, demo-data, exit codes for bad input."""

from __future__ import annotations

import yaml
from click.testing import CliRunner

from cbl import __version__
from cbl.cli import cli
from cbl.data import read_asvspoof2019


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_version_and_help():
    assert run("--version").output.strip() == f"cbl-search, version {__version__}"
    help_text = run("--help").output
    for command in (
        "run",
        "resume",
        "status",
        "best",
        "final-eval",
        "tensorboard",
        "train",
        "evaluate",
        "score",
        "demo-data",
        "config",
    ):
        assert command in help_text


def test_config_prints_the_resolved_config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("loss:\n  num_clusters: 5\n")
    result = run("config", str(path), "--set", "loss.alpha=2")
    assert result.exit_code == 0
    data = yaml.safe_load(result.output)
    assert data["loss"]["num_clusters"] == 5 and data["loss"]["alpha"] == 2.0
    assert data["centers"]["method"] == "kmeans"


def test_bad_config_exits_2_with_one_line_and_no_traceback(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("loss:\n  num_cluster: 5\n")
    result = run("config", str(path))
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"Error: {path}:2: unknown key 'loss.num_cluster' (did you mean 'loss.num_clusters'?)"
    ]


def test_bad_set_exits_2():
    result = run("config", "--set", "model.pooling=avg")
    assert result.exit_code == 2
    assert "unknown value 'avg', expected one of: mean, max, attention" in result.output


def test_debug_shows_the_traceback(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("loss:\n  alpha: -1\n")
    result = run("--debug", "config", str(path))
    assert result.exit_code != 0
    assert result.exc_info is not None and "must be >= 0" in str(result.exc_info[1])


def test_demo_data_writes_the_asvspoof_layout(tmp_path):
    out = tmp_path / "demo"
    result = run("demo-data", str(out), "--utterances", "30", "--seconds", "0.5")
    assert result.exit_code == 0, result.output
    records = read_asvspoof2019(
        out / "ASVspoof2019_LA_cm_protocols" / "ASVspoof2019.LA.cm.train.trn.txt",
        out / "ASVspoof2019_LA_train" / "flac",
    )
    assert len(records) == 30 and {r.label for r in records} == {0, 1}
    again = run("demo-data", str(out))
    assert again.exit_code == 2 and "not empty" in again.output
