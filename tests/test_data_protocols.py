"""Protocol readers: every format from real line layouts, and every bad input the issue names."""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cbl.data.protocols import (
    Protocol,
    Record,
    read_asvspoof2019,
    read_asvspoof2021,
    read_folder_protocol,
    read_in_the_wild,
)
from cbl.errors import ProtocolError

LINES_2019 = [
    "LA_0079 LA_T_1138215 - - bonafide",
    "LA_0079 LA_T_1004644 - A01 spoof",
    "LA_0080 LA_T_1005000 - A04 spoof",
]
LINES_2021_LA = [
    "LA_0009 LA_E_9332881 alaw ita_tx A07 spoof notrim eval",
    "LA_0009 LA_E_1000001 none - bonafide bonafide notrim eval",
    "LA_0010 LA_E_1000002 ulaw sin_tx A10 spoof notrim progress",
]
LINES_2021_DF = [
    "LA_0023 DF_E_2000011 nocodec asvspoof A14 spoof notrim progress traditional_vocoder - - - -",
    "LA_0023 DF_E_2000012 mp3m4a vcc2020 bonafide bonafide notrim eval - - - - -",
    "LA_0024 DF_E_2000013 low_mp3 asvspoof A09 spoof notrim eval neural_vocoder_autoregressive - - - -",
]


def write_audio(path: Path, seconds: float = 0.05, sample_rate: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    sf.write(path, (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sample_rate)
    return path


def write_corpus(tmp_path: Path, lines: list[str], id_column: int, ext: str = ".flac") -> tuple[Path, Path]:
    """Protocol file + one audio file per line (named by the line's id column)."""
    audio_dir = tmp_path / "flac"
    audio_dir.mkdir(exist_ok=True)
    for line in lines:
        write_audio(audio_dir / (line.split()[id_column] + ext))
    protocol = tmp_path / "protocol.txt"
    protocol.write_text("\n".join(lines) + "\n")
    return protocol, audio_dir


# --------------------------------------------------------------------------- good input
def test_asvspoof2019_reads_records(tmp_path: Path) -> None:
    protocol, audio_dir = write_corpus(tmp_path, LINES_2019, 1)
    records = read_asvspoof2019(protocol, audio_dir)
    assert isinstance(records, Protocol) and isinstance(records, list)
    assert [r.utt_id for r in records] == ["LA_T_1138215", "LA_T_1004644", "LA_T_1005000"]
    assert [r.label for r in records] == [1, 0, 0]
    assert [r.attack for r in records] == ["-", "A01", "A04"]
    assert records[0].speaker == "LA_0079"
    assert Path(records[1].path).is_absolute() and records[1].path.endswith("LA_T_1004644.flac")
    assert records.skipped == 0 and records.source == str(protocol)
    assert len({records[0], records[1]}) == 2  # hashable
    copied = pickle.loads(pickle.dumps(records))  # DataLoader workers and Ray pickle protocols
    assert copied == records and copied.source == records.source and copied.skipped == 0


def test_asvspoof2021_la_keeps_eval_subset_by_default(tmp_path: Path) -> None:
    protocol, audio_dir = write_corpus(tmp_path, LINES_2021_LA, 1)
    records = read_asvspoof2021(protocol, audio_dir, track="la")
    assert [r.utt_id for r in records] == ["LA_E_9332881", "LA_E_1000001"]
    assert records.filtered == 1
    first = records[0]
    assert (first.label, first.attack, first.speaker) == (0, "A07", "LA_0009")
    assert first.meta == {"codec": "alaw", "transmission": "ita_tx", "trim": "notrim", "subset": "eval"}
    assert records[1].label == 1
    assert len(read_asvspoof2021(protocol, audio_dir, track="la", subset=None)) == 3


def test_asvspoof2021_df_keeps_vocoder_and_source(tmp_path: Path) -> None:
    protocol, audio_dir = write_corpus(tmp_path, LINES_2021_DF, 1)
    records = read_asvspoof2021(protocol, audio_dir, track="df")
    assert [r.utt_id for r in records] == ["DF_E_2000012", "DF_E_2000013"]
    assert records[1].meta["vocoder"] == "neural_vocoder_autoregressive"
    assert records[1].meta["source"] == "asvspoof" and records[1].meta["codec"] == "low_mp3"
    everything = read_asvspoof2021(protocol, audio_dir, track="df", subset=None)
    assert everything[0].meta["subset"] == "progress"


def test_in_the_wild_csv(tmp_path: Path) -> None:
    for name in ("0.wav", "1.wav"):
        write_audio(tmp_path / name)
    meta = tmp_path / "meta.csv"
    meta.write_text("file,speaker,label\n0.wav,Alec Guinness,spoof\n1.wav,Alec Guinness,bona-fide\n")
    records = read_in_the_wild(meta, tmp_path)
    assert [(r.utt_id, r.label, r.speaker) for r in records] == [("0", 0, "Alec Guinness"), ("1", 1, "Alec Guinness")]
    assert records[1].attack == "-"


def test_in_the_wild_requires_header(tmp_path: Path) -> None:
    write_audio(tmp_path / "0.wav")
    meta = tmp_path / "meta.csv"
    meta.write_text("0.wav,Alec Guinness,spoof\n")
    with pytest.raises(ProtocolError, match=r"meta.csv:1: expected a header 'file,speaker,label'"):
        read_in_the_wild(meta, tmp_path)


@pytest.mark.parametrize(
    "word,label",
    [("bonafide", 1), ("Bona-Fide", 1), ("genuine", 1), ("real", 1), ("1", 1), ("spoof", 0), ("FAKE", 0), ("0", 0)],
)
def test_folder_protocol_label_words(tmp_path: Path, word: str, label: int) -> None:
    write_audio(tmp_path / "a.wav")
    protocol = tmp_path / "list.txt"
    protocol.write_text(f"a.wav {word}\n")
    assert read_folder_protocol(protocol, tmp_path)[0].label == label


def test_folder_protocol_fields_commas_ids_and_header(tmp_path: Path) -> None:
    write_audio(tmp_path / "spk1" / "my file.wav")
    write_audio(tmp_path / "b.flac")
    write_audio(tmp_path / "c.wav")
    protocol = tmp_path / "list.csv"
    protocol.write_text("path,label,attack,speaker\nspk1/my file.wav, real\nb fake tts9 alice\nc,spoof\n")
    records = read_folder_protocol(protocol, tmp_path)
    assert [(r.utt_id, r.label, r.attack, r.speaker) for r in records] == [
        ("spk1/my file", 1, "-", "-"),
        ("b", 0, "tts9", "alice"),
        ("c", 0, "spoof", "-"),
    ]
    assert records[1].path.endswith("b.flac") and records[2].path.endswith("c.wav")


def test_crlf_bom_comments_and_trailing_blank_lines_are_accepted(tmp_path: Path) -> None:
    _, audio_dir = write_corpus(tmp_path, LINES_2019, 1)
    protocol = tmp_path / "windows.txt"
    text = "# exported on Windows\r\n" + "\r\n".join(LINES_2019) + "\r\n\r\n\r\n"
    protocol.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    records = read_asvspoof2019(protocol, audio_dir)
    assert [r.speaker for r in records] == ["LA_0079", "LA_0079", "LA_0080"]
    assert records[0].utt_id == "LA_T_1138215"


# --------------------------------------------------------------------------- bad input
def test_malformed_line_names_file_line_and_format(tmp_path: Path) -> None:
    protocol, audio_dir = write_corpus(tmp_path, LINES_2019, 1)
    protocol.write_text("\n".join([*LINES_2019[:2], "LA_0079 LA_T_1005000 A04 spoof"]) + "\n")
    expected = r"protocol.txt:3: expected 5 columns 'SPEAKER UTT_ID - ATTACK KEY'.* got 4"
    with pytest.raises(ProtocolError, match=expected):
        read_asvspoof2019(protocol, audio_dir)


def test_unknown_label_word(tmp_path: Path) -> None:
    protocol, audio_dir = write_corpus(tmp_path, LINES_2019, 1)
    protocol.write_text(LINES_2019[0] + "\nLA_0079 LA_T_1004644 - A01 spooof\n")
    with pytest.raises(ProtocolError, match=r"protocol.txt:2: unknown KEY 'spooof', expected 'bonafide' or 'spoof'"):
        read_asvspoof2019(protocol, audio_dir)


def test_unknown_label_word_in_folder_protocol(tmp_path: Path) -> None:
    write_audio(tmp_path / "a.wav")
    protocol = tmp_path / "list.txt"
    protocol.write_text("a.wav maybe\n")
    with pytest.raises(ProtocolError, match=r"list.txt:1: unknown label 'maybe', expected one of .*genuine.*fake"):
        read_folder_protocol(protocol, tmp_path)


def test_unknown_label_in_the_wild(tmp_path: Path) -> None:
    write_audio(tmp_path / "0.wav")
    meta = tmp_path / "meta.csv"
    meta.write_text("file,speaker,label\n0.wav,X,bonafide\n")
    with pytest.raises(ProtocolError, match=r"meta.csv:2: unknown label 'bonafide', expected 'bona-fide' or 'spoof'"):
        read_in_the_wild(meta, tmp_path)


def test_duplicate_utterance_id(tmp_path: Path) -> None:
    protocol, audio_dir = write_corpus(tmp_path, LINES_2019, 1)
    protocol.write_text("\n".join([*LINES_2019, LINES_2019[1]]) + "\n")
    expected = r"protocol.txt:4: duplicate utterance id 'LA_T_1004644' \(first seen on line 2\)"
    with pytest.raises(ProtocolError, match=expected):
        read_asvspoof2019(protocol, audio_dir)


@pytest.mark.parametrize("bad_id", ["../secret", "sub/../../secret", "/etc/passwd"])
def test_ids_escaping_the_audio_folder_2019(tmp_path: Path, bad_id: str) -> None:
    protocol, audio_dir = write_corpus(tmp_path, LINES_2019, 1)
    write_audio(tmp_path / "secret.flac")
    protocol.write_text(f"LA_0079 {bad_id} - - bonafide\n")
    with pytest.raises(ProtocolError, match=r"protocol.txt:1: utterance id .* escapes the audio folder"):
        read_asvspoof2019(protocol, audio_dir)


def test_paths_escaping_the_audio_folder_folder_protocol(tmp_path: Path) -> None:
    audio_dir = tmp_path / "audio"
    write_audio(audio_dir / "ok.wav")
    outside = write_audio(tmp_path / "outside.wav")
    protocol = tmp_path / "list.txt"
    for entry in ("../outside.wav", str(outside)):
        protocol.write_text(f"ok.wav real\n{entry} fake\n")
        with pytest.raises(ProtocolError, match=r"list.txt:2: entry .*outside.wav' escapes the audio folder"):
            read_folder_protocol(protocol, audio_dir)


def test_symlink_out_of_the_audio_folder_is_refused(tmp_path: Path) -> None:
    protocol, audio_dir = write_corpus(tmp_path, LINES_2019[:1], 1)
    outside = write_audio(tmp_path / "elsewhere" / "real.flac")
    os.symlink(outside, audio_dir / "LA_T_7777777.flac")
    protocol.write_text(LINES_2019[0] + "\nLA_0079 LA_T_7777777 - A01 spoof\n")
    with pytest.raises(ProtocolError, match=r"protocol.txt:2: entry 'LA_T_7777777.flac' escapes the audio folder"):
        read_asvspoof2019(protocol, audio_dir)


def test_symlinked_audio_folder_itself_is_fine(tmp_path: Path) -> None:
    protocol, audio_dir = write_corpus(tmp_path, LINES_2019, 1)
    link = tmp_path / "linked"
    os.symlink(audio_dir, link)
    assert len(read_asvspoof2019(protocol, link)) == 3


def missing_setup(tmp_path: Path, n_missing: int) -> tuple[Path, Path, list[str]]:
    ids = [f"LA_T_{i:07d}" for i in range(n_missing + 2)]
    lines = [f"LA_0079 {u} - {'-' if i == 0 else 'A01'} {'bonafide' if i == 0 else 'spoof'}" for i, u in enumerate(ids)]
    protocol, audio_dir = write_corpus(tmp_path, lines, 1)
    for u in ids[2:]:
        (audio_dir / f"{u}.flac").unlink()
    return protocol, audio_dir, ids[2:]


def test_missing_audio_reports_count_and_first_few(tmp_path: Path) -> None:
    protocol, audio_dir, missing = missing_setup(tmp_path, 7)
    first_five = ", ".join(missing[:5])
    expected = rf"7 of 9 entries have missing audio .*first: {first_five} \(set data.skip_missing"
    with pytest.raises(ProtocolError, match=expected):
        read_asvspoof2019(protocol, audio_dir)


def test_skip_missing_counts_and_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    protocol, audio_dir, missing = missing_setup(tmp_path, 3)
    with caplog.at_level(logging.WARNING, logger="cbl.data"):
        records = read_asvspoof2019(protocol, audio_dir, skip_missing=True)
    assert len(records) == 2
    assert records.skipped == 3 and records.skipped_ids == tuple(missing)
    assert "skipped 3 of 5 entries have missing audio" in caplog.text


def test_2021_key_given_to_2019_reader(tmp_path: Path) -> None:
    protocol, audio_dir = write_corpus(tmp_path, LINES_2021_LA, 1)
    expected = r"expected 5 columns .*ASVspoof 2019 LA CM protocol.*looks like an ASVspoof 2021 LA key \(8 columns\)"
    with pytest.raises(ProtocolError, match=expected):
        read_asvspoof2019(protocol, audio_dir)


def test_2019_protocol_given_to_2021_reader(tmp_path: Path) -> None:
    protocol, audio_dir = write_corpus(tmp_path, LINES_2019, 1)
    expected = r"expected 8 columns .*ASVspoof 2021 LA key.*looks like an ASVspoof 2019 LA CM protocol \(5 columns\)"
    with pytest.raises(ProtocolError, match=expected):
        read_asvspoof2021(protocol, audio_dir, track="la")


def test_df_key_given_as_la_track(tmp_path: Path) -> None:
    protocol, audio_dir = write_corpus(tmp_path, LINES_2021_DF, 1)
    expected = r"protocol.txt:1: expected 8 columns.*looks like an ASVspoof 2021 DF key \(13 columns\)"
    with pytest.raises(ProtocolError, match=expected):
        read_asvspoof2021(protocol, audio_dir, track="la")


def test_missing_protocol_file_and_audio_folder(tmp_path: Path) -> None:
    with pytest.raises(ProtocolError, match=r"nope.txt: protocol file not found"):
        read_asvspoof2019(tmp_path / "nope.txt", tmp_path)
    protocol, _ = write_corpus(tmp_path, LINES_2019, 1)
    with pytest.raises(ProtocolError, match=r"audio folder not found: .*no_audio"):
        read_asvspoof2019(protocol, tmp_path / "no_audio")


def test_protocol_without_entries(tmp_path: Path) -> None:
    protocol = tmp_path / "empty.txt"
    protocol.write_text("# nothing here\n\n")
    with pytest.raises(ProtocolError, match=r"empty.txt: no usable entries"):
        read_asvspoof2019(protocol, tmp_path)


def test_record_meta_is_not_part_of_identity() -> None:
    a = Record("u", "/x.flac", 1, "-", "s", {"codec": "alaw"})
    b = Record("u", "/x.flac", 1, "-", "s", {"codec": "none"})
    assert a == b and hash(a) == hash(b)
