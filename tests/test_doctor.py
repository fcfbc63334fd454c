"""cbl-search doctor: a good root passes (exit 0), each kind of damage is named (exit 1), usage errors exit 2;
the cheap part that run and train do first."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from cbl.cli import cli
from cbl.config import DataConfig
from cbl.data.doctor import PUBLISHED_COUNTS, check_training_data, diagnose
from cbl.errors import DataRootError

SUFFIX = {"train": "train.trn", "dev": "dev.trl", "eval": "eval.trl"}
SPEAKER = {"train": "LA_0079", "dev": "LA_0069", "eval": "LA_0009"}


def _audio(path: Path, seconds: float = 0.05, rate: int = 16000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.full(int(seconds * rate), 0.1, np.float32), rate)


def _protocol(root: Path, split: str) -> Path:
    return root / "ASVspoof2019_LA_cm_protocols" / f"ASVspoof2019.LA.cm.{SUFFIX[split]}.txt"


def make_2019(root: Path, per_split: int = 6) -> Path:
    """A small 2019 LA root: speaker-disjoint splits, 2 bonafide per split, bonafide longer than spoof."""
    for split in SUFFIX:
        lines = []
        for i in range(per_split):
            utt = f"LA_{split[0].upper()}_{i:07d}"
            bonafide = i < 2
            lines.append(f"{SPEAKER[split]} {utt} - {'-' if bonafide else 'A01'} {'bonafide' if bonafide else 'spoof'}")
            _audio(root / f"ASVspoof2019_LA_{split}" / "flac" / f"{utt}.flac", 0.1 if bonafide else 0.05)
        _protocol(root, split).parent.mkdir(parents=True, exist_ok=True)
        _protocol(root, split).write_text("\n".join(lines) + "\n")
    return root


def doctor(*args: str):
    return CliRunner().invoke(cli, ["doctor", *args])


def test_a_good_root_is_usable_with_the_published_counts_as_warnings(tmp_path):
    root = make_2019(tmp_path)
    result = doctor(str(root), "--corpus", "asvspoof2019_la")
    assert result.exit_code == 0, result.output
    rows = {
        line.split()[0]: line.split()
        for line in result.output.splitlines()
        if line.split()[:1] in (["train"], ["dev"], ["eval"])
    }
    # split trials bonafide spoof not-scored published missing extra checked unreadable rate durations
    published = str(PUBLISHED_COUNTS[("asvspoof2019_la", "train")][0])
    assert rows["train"][:11] == ["train", "6", "2", "4", "0", published, "0", "0", "6", "0", "16000"]
    assert rows["eval"][11:] == ["0.10/0.10/0.10", "0.05/0.05/0.05"]
    assert "warning: train: 6 trials (2 bonafide), published 25380 trials (2580 bonafide)" in result.output
    assert result.output.rstrip().endswith(f"asvspoof2019_la at {root}: usable")


def _damage_missing(root: Path) -> str:
    (root / "ASVspoof2019_LA_dev" / "flac" / "LA_D_0000003.flac").unlink()
    return "problem: dev: 1 of 6 entries have no audio file, first: LA_D_0000003"


def _damage_unreadable(root: Path) -> str:
    (root / "ASVspoof2019_LA_eval" / "flac" / "LA_E_0000004.flac").write_bytes(b"not audio at all")
    return "problem: eval: 1 of 6 opened audio files are unreadable: LA_E_0000004 (cannot read as audio"


def _damage_malformed(root: Path) -> str:
    with _protocol(root, "train").open("a") as handle:
        handle.write("LA_0079 LA_T_0000009 - A01\n")
    return "problem: train: " + str(_protocol(root, "train")) + ":7: expected 5 columns"


def _damage_duplicate(root: Path) -> str:
    with _protocol(root, "dev").open("a") as handle:
        handle.write("LA_0069 LA_D_0000001 - - bonafide\n")
    return "duplicate utterance id 'LA_D_0000001' (first seen on line 2)"


def _damage_shared_speaker(root: Path) -> str:
    protocol = _protocol(root, "dev")
    protocol.write_text(protocol.read_text().replace("LA_0069 LA_D_0000005", "LA_0079 LA_D_0000005"))
    return "problem: speakers shared between train and dev: LA_0079 -> keep each speaker in one split"


@pytest.mark.parametrize(
    "damage", [_damage_missing, _damage_unreadable, _damage_malformed, _damage_duplicate, _damage_shared_speaker]
)
def test_a_damaged_root_names_the_problem_and_exits_1(tmp_path, damage):
    root = make_2019(tmp_path)
    expected = damage(root)
    result = doctor(str(root), "--corpus", "asvspoof2019_la", "--full")
    assert result.exit_code == 1, result.output
    assert expected in result.output
    assert f"asvspoof2019_la at {root}: NOT usable" in result.output and "Traceback" not in result.output


def test_extra_audio_files_are_a_warning_not_a_problem(tmp_path):
    root = make_2019(tmp_path)
    _audio(root / "ASVspoof2019_LA_train" / "flac" / "stray.flac")
    result = doctor(str(root), "--corpus", "asvspoof2019_la")
    assert result.exit_code == 0, result.output
    assert "warning: train: 1 audio files that no protocol entry names, first: stray.flac" in result.output


def test_the_sample_opens_only_that_many_files_per_split(tmp_path):
    report = diagnose(DataConfig(corpus="asvspoof2019_la", root=str(make_2019(tmp_path))), sample=2)
    assert [s.checked for s in report.splits] == [2, 2, 2]


def test_a_2021_df_root_counts_every_key_row_against_the_published_figure(tmp_path):
    key = tmp_path / "keys" / "DF" / "CM" / "trial_metadata.txt"
    key.parent.mkdir(parents=True)
    rows = []
    for i, subset in enumerate(["eval", "eval", "progress", "eval"]):
        utt = f"DF_E_{i:07d}"
        word = "bonafide" if i == 0 else "spoof"
        rows.append(
            f"LA_0023 {utt} nocodec asvspoof {'-' if i == 0 else 'A14'} {word} notrim {subset} "
            "traditional_vocoder - - - -"
        )
        _audio(tmp_path / "ASVspoof2021_DF_eval" / "flac" / f"{utt}.flac")
    key.write_text("\n".join(rows) + "\n")
    result = doctor(str(tmp_path), "--corpus", "asvspoof2021_df")
    assert result.exit_code == 0, result.output
    assert "warning: eval: 4 trials (1 bonafide), published 611829 trials" in result.output
    # the progress row's file is named by its key row: not an extra file, though only eval rows are scored
    assert "audio files that no protocol entry names" not in result.output
    assert re.search(r"^eval\s+4\s+1\s+2\s+1\s+611829\s", result.output, re.M)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--corpus", "asvspoof2019_la"], "Missing argument 'DATA_ROOT'"),
        (["ROOT"], "Missing option '--corpus'"),
        (["ROOT", "--corpus", "folder"], "'folder' is not one of"),
        (["ROOT", "--corpus", "in_the_wild", "--full", "--sample", "3"], "give --full or --sample, not both"),
        (["ROOT/nowhere", "--corpus", "in_the_wild"], "does not exist"),
    ],
)
def test_doctor_usage_errors_exit_2(tmp_path, args, message):
    result = doctor(*[arg.replace("ROOT", str(tmp_path)) for arg in args])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_a_root_without_the_layout_names_the_missing_protocol(tmp_path):
    result = doctor(str(tmp_path), "--corpus", "in_the_wild")
    assert result.exit_code == 1
    assert "problem: eval: In-the-Wild meta.csv not found: " + str(tmp_path / "meta.csv") in result.output


def test_the_cheap_part_reads_train_and_dev_only_and_raises_every_problem(tmp_path):
    root = make_2019(tmp_path)
    data = DataConfig(corpus="asvspoof2019_la", root=str(root))
    (root / "ASVspoof2019_LA_eval" / "flac" / "LA_E_0000004.flac").unlink()  # eval is not looked at
    check_training_data(data)
    (root / "ASVspoof2019_LA_train" / "flac" / "LA_T_0000004.flac").unlink()
    _damage_shared_speaker(root)
    with pytest.raises(DataRootError) as caught:
        check_training_data(data)
    message = str(caught.value)
    assert "train: 1 of 6 entries have no audio file, first: LA_T_0000004" in message
    assert "speakers shared between train and dev: LA_0079" in message
    with pytest.raises(DataRootError) as caught:  # skip_missing accepts the missing file, not the shared speaker
        check_training_data(DataConfig(corpus="asvspoof2019_la", root=str(root), skip_missing=True))
    assert "no audio file" not in str(caught.value) and "speakers shared between train and dev" in str(caught.value)


@pytest.mark.parametrize("command", ["train", "run"])
def test_train_and_run_stop_on_a_damaged_root_before_training_or_ray(tmp_path, command):
    root = make_2019(tmp_path / "LA")
    (root / "ASVspoof2019_LA_dev" / "flac" / "LA_D_0000003.flac").unlink()
    sets = ["--set", "data.corpus=asvspoof2019_la", "--set", f"data.root={root}", "--set", "model.ssl=tiny"]
    if command == "train":
        args = ["train", *sets, "--out", str(tmp_path / "out")]
    else:
        space = tmp_path / "space.yaml"
        space.write_text("name: grid\nspace:\n  loss.type: {grid: [ce_only]}\nsearch: {algorithm: grid}\n")
        args = ["run", str(space), *sets, "--storage", str(tmp_path / "runs")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert "dev: 1 of 6 entries have no audio file, first: LA_D_0000003" in result.output
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()
