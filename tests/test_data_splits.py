"""load_split: corpus layouts under data.root, overrides, and the errors users meet first."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cbl.config import CORPORA, DataConfig
from cbl.data.protocols import Record
from cbl.data.splits import load_split, read_protocol, subsample_train
from cbl.errors import DataRootError, ProtocolError, UsageError

SUFFIX = {"train": "train.trn", "dev": "dev.trl", "eval": "eval.trl"}


def write_audio(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.full(160, 0.1, np.float32), 16000)


def make_2019(root: Path, bonafide: int = 2, spoof: int = 4) -> None:
    for split, letter in (("train", "T"), ("dev", "D"), ("eval", "E")):
        lines = []
        for i in range(bonafide + spoof):
            utt = f"LA_{letter}_{i:07d}"
            lines.append(f"LA_0079 {utt} - - bonafide" if i < bonafide else f"LA_0079 {utt} - A0{i % 6 + 1} spoof")
            write_audio(root / f"ASVspoof2019_LA_{split}" / "flac" / f"{utt}.flac")
        protocol = root / "ASVspoof2019_LA_cm_protocols" / f"ASVspoof2019.LA.cm.{SUFFIX[split]}.txt"
        protocol.parent.mkdir(parents=True, exist_ok=True)
        protocol.write_text("\n".join(lines) + "\n")


def test_unset_root_tells_the_user_what_to_do() -> None:
    with pytest.raises(DataRootError, match=r"data.root is not set .*--set data.root=/path/to/LA.*--demo"):
        load_split(DataConfig(corpus="asvspoof2019_la"), "train")


def test_missing_root_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataRootError, match=rf"data.root folder not found: {tmp_path / 'nowhere'}"):
        load_split(DataConfig(root=str(tmp_path / "nowhere")), "dev")


def test_asvspoof2019_layout(tmp_path: Path) -> None:
    make_2019(tmp_path)
    for split in ("train", "dev", "eval"):
        records = load_split(DataConfig(root=str(tmp_path)), split)
        assert len(records) == 6 and sum(r.label for r in records) == 2


def test_missing_standard_file_is_named(tmp_path: Path) -> None:
    make_2019(tmp_path)
    (tmp_path / "ASVspoof2019_LA_cm_protocols" / "ASVspoof2019.LA.cm.dev.trl.txt").unlink()
    expected = r"ASVspoof 2019 LA dev protocol not found: .*ASVspoof2019.LA.cm.dev.trl.txt"
    with pytest.raises(DataRootError, match=expected):
        load_split(DataConfig(root=str(tmp_path)), "dev")


def test_bad_split_name(tmp_path: Path) -> None:
    with pytest.raises(Exception, match=r"split is 'test', but must be one of train, dev, eval"):
        load_split(DataConfig(root=str(tmp_path)), "test")


def test_explicit_protocol_override(tmp_path: Path) -> None:
    make_2019(tmp_path)
    custom = tmp_path / "subset.txt"
    custom.write_text("LA_0079 LA_D_0000000 - - bonafide\nLA_0079 LA_D_0000003 - A04 spoof\n")
    records = load_split(DataConfig(root=str(tmp_path), dev_protocol=str(custom)), "dev")
    assert [r.utt_id for r in records] == ["LA_D_0000000", "LA_D_0000003"]
    with pytest.raises(DataRootError, match=r"data.train_protocol: protocol file not found: .*absent.txt"):
        load_split(DataConfig(root=str(tmp_path), train_protocol=str(tmp_path / "absent.txt")), "train")


@pytest.mark.parametrize("track", ["la", "df"])
def test_asvspoof2021_eval_from_keys_train_from_2019(tmp_path: Path, track: str) -> None:
    make_2019(tmp_path)
    upper = track.upper()
    rows = {
        "la": [
            "LA_0009 LA_E_9332881 alaw ita_tx A07 spoof notrim eval",
            "LA_0009 LA_E_1000001 none - bonafide bonafide notrim eval",
        ],
        "df": [
            "LA_0023 DF_E_2000011 nocodec asvspoof A14 spoof notrim eval traditional_vocoder - - - -",
            "LA_0023 DF_E_2000012 nocodec vcc2020 bonafide bonafide notrim eval - - - - -",
        ],
    }[track]
    key = tmp_path / "keys" / upper / "CM" / "trial_metadata.txt"
    key.parent.mkdir(parents=True)
    key.write_text("\n".join(rows) + "\n")
    for row in rows:
        write_audio(tmp_path / f"ASVspoof2021_{upper}_eval" / "flac" / f"{row.split()[1]}.flac")
    config = DataConfig(corpus=f"asvspoof2021_{track}", root=str(tmp_path))
    assert [r.label for r in load_split(config, "eval")] == [0, 1]
    assert load_split(config, "train")[0].utt_id == "LA_T_0000000"


def test_in_the_wild_eval(tmp_path: Path) -> None:
    (tmp_path / "meta.csv").write_text("file,speaker,label\n0.wav,A,spoof\n1.wav,A,bona-fide\n")
    write_audio(tmp_path / "0.wav")
    write_audio(tmp_path / "1.wav")
    records = load_split(DataConfig(corpus="in_the_wild", root=str(tmp_path)), "eval")
    assert [r.utt_id for r in records] == ["0", "1"]


def test_folder_corpus_needs_protocols(tmp_path: Path) -> None:
    write_audio(tmp_path / "clips" / "a.wav")
    write_audio(tmp_path / "clips" / "b.wav")
    protocol = tmp_path / "clips" / "train.txt"
    protocol.write_text("a.wav real\nb.wav fake\n")
    with pytest.raises(DataRootError, match=r"corpus 'folder' needs data.dev_protocol"):
        load_split(DataConfig(corpus="folder", train_protocol=str(protocol)), "dev")
    relative_to_protocol = load_split(DataConfig(corpus="folder", train_protocol=str(protocol)), "train")
    assert [r.label for r in relative_to_protocol] == [1, 0]
    (tmp_path / "list.txt").write_text("clips/a.wav real\n")
    relative_to_root = load_split(
        DataConfig(corpus="folder", root=str(tmp_path), train_protocol=str(tmp_path / "list.txt")), "train"
    )
    assert relative_to_root[0].utt_id == "clips/a"


def test_skip_missing_is_honoured(tmp_path: Path) -> None:
    make_2019(tmp_path)
    (tmp_path / "ASVspoof2019_LA_train" / "flac" / "LA_T_0000005.flac").unlink()
    with pytest.raises(ProtocolError, match=r"1 of 6 entries have missing audio"):
        load_split(DataConfig(root=str(tmp_path)), "train")
    records = load_split(DataConfig(root=str(tmp_path), skip_missing=True), "train")
    assert len(records) == 5 and records.skipped == 1


def test_max_train_utterances_keeps_both_classes(tmp_path: Path) -> None:
    make_2019(tmp_path, bonafide=1, spoof=19)
    config = DataConfig(root=str(tmp_path), max_train_utterances=4)
    first = load_split(config, "train")
    assert len(first) == 4 and {r.label for r in first} == {0, 1}
    assert [r.utt_id for r in first] == [r.utt_id for r in load_split(config, "train")]  # deterministic
    assert len(load_split(config, "dev")) == 20  # the cap is for training only


def test_subsample_keeps_shares_and_order() -> None:
    records = [Record(f"u{i:03d}", f"/a/{i}.flac", int(i % 10 == 0), "-", "s") for i in range(200)]
    subset = subsample_train(records, 50)
    assert len(subset) == 50 and sum(r.label for r in subset) == 5
    assert [r.utt_id for r in subset] == sorted(r.utt_id for r in subset)
    assert len(subsample_train(records, 0)) == 200


def test_demo_corpus_through_load_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CBL_CACHE", str(tmp_path))
    config = DataConfig(corpus="demo", demo_utterances=20, demo_seconds=0.25)
    assert len(load_split(config, "train")) == 20
    assert {"A05", "A06"} <= {r.attack for r in load_split(config, "eval")}


@pytest.mark.parametrize("corpus", CORPORA)
def test_every_corpus_has_a_protocol_reader(tmp_path, corpus):
    """read_protocol knows every corpus the config accepts: a missing file is that reader's error, naming it."""
    with pytest.raises(ProtocolError, match=re.escape("missing.txt: protocol file not found")):
        read_protocol(corpus, tmp_path / "missing.txt", tmp_path)


def test_an_unknown_corpus_names_the_known_ones(tmp_path):
    with pytest.raises(UsageError, match="corpus is 'asvspoof2015', but must be one of asvspoof2019_la, "):
        read_protocol("asvspoof2015", tmp_path / "p.txt", tmp_path)
