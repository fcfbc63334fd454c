"""A protocol of the wrong ASVspoof version for data.corpus, through the CLI: exit 2, one line naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from cbl.cli import cli

from tiny import as_set_args

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"
KEY_2021_LA = (
    "LA_0009 LA_E_9332881 alaw ita_tx A07 spoof notrim eval\n"
    "LA_0009 LA_E_1000001 none - bonafide bonafide notrim eval\n"
)
KEY_2021_DF = "LA_0023 DF_E_2000011 nocodec asvspoof A14 spoof notrim progress traditional_vocoder - - - -\n"
PROTOCOL_2019 = "LA_0079 LA_T_1138215 - - bonafide\nLA_0079 LA_T_1004644 - A01 spoof\n"


def layout_2019(root: Path, *, train: str, dev: str = PROTOCOL_2019) -> dict[str, Path]:
    """An ASVspoof 2019 LA folder layout (protocols + empty audio folders) holding the given protocol texts."""
    protocols = root / "ASVspoof2019_LA_cm_protocols"
    protocols.mkdir(parents=True)
    files = {
        "train": protocols / "ASVspoof2019.LA.cm.train.trn.txt",
        "dev": protocols / "ASVspoof2019.LA.cm.dev.trl.txt",
    }
    files["train"].write_text(train)
    files["dev"].write_text(dev)
    for split in ("train", "dev", "eval"):
        (root / f"ASVspoof2019_LA_{split}" / "flac").mkdir(parents=True)
    return files


def one_error_line(output: str) -> str:
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in output, output
    return errors[0]


@pytest.mark.parametrize(
    ("key", "version"),
    [(KEY_2021_LA, "ASVspoof 2021 LA key"), (KEY_2021_DF, "ASVspoof 2021 DF key")],
    ids=["2021-la", "2021-df"],
)
def test_train_with_a_2021_key_for_the_2019_corpus(tmp_path, key, version):
    files = layout_2019(tmp_path / "LA", train=key)
    result = CliRunner().invoke(
        cli,
        [
            "train",
            "--set",
            "data.corpus=asvspoof2019_la",
            "--set",
            f"data.root={tmp_path / 'LA'}",
            "--set",
            "model.ssl=tiny",
            "--set",
            "train.num_threads=1",
            "--out",
            str(tmp_path / "run"),
        ],
    )
    assert result.exit_code == 2, result.output
    line = one_error_line(result.output)
    assert f"{files['train']}:1: expected 5 columns" in line and f"looks like an {version}" in line
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_sweep_with_a_2021_key_stops_before_ray(tmp_path):
    files = layout_2019(tmp_path / "LA", train=KEY_2021_LA)
    result = CliRunner().invoke(
        cli,
        [
            "run",
            str(SPACES / "loss_type.yaml"),
            "--storage",
            str(tmp_path / "runs"),
            "--set",
            f"data.root={tmp_path / 'LA'}",
            "--set",
            "model.ssl=tiny",
        ],
    )
    assert result.exit_code == 2, result.output
    line = one_error_line(result.output)
    assert f"{files['train']}:1: expected 5 columns" in line and "looks like an ASVspoof 2021 LA key" in line
    assert not (tmp_path / "runs").exists()


def test_evaluate_2021_corpus_with_a_2019_protocol_as_its_key(tmp_path):
    out = tmp_path / "run"
    trained = CliRunner().invoke(cli, ["train", "--demo", *as_set_args(), "--set", "train.epochs=1", "--out", str(out)])
    assert trained.exit_code == 0, trained.output
    root = tmp_path / "LA2021"
    key = root / "keys" / "LA" / "CM" / "trial_metadata.txt"
    key.parent.mkdir(parents=True)
    key.write_text(PROTOCOL_2019)
    (root / "ASVspoof2021_LA_eval" / "flac").mkdir(parents=True)
    result = CliRunner().invoke(
        cli,
        [
            "evaluate",
            str(out / "checkpoints" / "best.pt"),
            "--split",
            "eval",
            "--set",
            "data.corpus=asvspoof2021_la",
            "--set",
            f"data.root={root}",
        ],
    )
    assert result.exit_code == 2, result.output
    line = one_error_line(result.output)
    assert f"{key}:1: expected 8 columns" in line and "looks like an ASVspoof 2019 LA CM protocol" in line
