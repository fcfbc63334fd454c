"""Corpus roots the tests write from a list of demo records: 2021 LA (with the organisers' ASV files in their
standard place), 2021 DF and In-the-Wild, each in its standard layout (cbl.data.splits)."""

from __future__ import annotations

import shutil
from pathlib import Path

import soundfile as sf

CODECS = [("none", "none"), ("alaw", "ita_tx"), ("gsm", "loc_tx")]
VOCODERS = ["traditional_vocoder", "neural_vocoder_autoregressive", "waveform_concatenation"]


def _label(record) -> str:
    return "bonafide" if record.label else "spoof"


def _copy_audio(records, folder: Path, suffix: str = ".flac") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for r in records:
        if suffix == ".flac":
            shutil.copy(r.path, folder / f"{r.utt_id}.flac")
        else:
            audio, rate = sf.read(r.path)
            sf.write(folder / f"{r.utt_id}{suffix}", audio, rate)


def _write_2021_key(root: Path, track: str, records, columns) -> None:
    """``keys/<TRACK>/CM/trial_metadata.txt`` (``columns(i, record)``: the columns after the trial id) and the
    audio in ``ASVspoof2021_<TRACK>_eval/flac``."""
    key = root / "keys" / track / "CM" / "trial_metadata.txt"
    key.parent.mkdir(parents=True)
    key.write_text("".join(f"{r.speaker} {r.utt_id} {columns(i, r)}\n" for i, r in enumerate(records)))
    _copy_audio(records, root / f"ASVspoof2021_{track}_eval" / "flac")


def write_2021_la(root: Path, records) -> Path:
    def columns(i, r) -> str:
        return f"{CODECS[i % 3][0]} {CODECS[i % 3][1]} {'-' if r.label else r.attack} {_label(r)} notrim eval"

    _write_2021_key(root, "LA", records, columns)
    # the organisers' ASV trials, in the keys' standard place: score.txt paired line by line with its key
    asv = root / "keys" / "LA" / "ASV"
    (asv / "ASVTorch_Kaldi").mkdir(parents=True)
    attacks = sorted({r.attack for r in records if not r.label})
    rows = [("target", "-", 3 + i / 10) for i in range(10)] + [("nontarget", "-", i / 10 - 2) for i in range(10)]
    rows += [("spoof", a, 1.5 - j) for a in attacks for j in range(3)]
    (asv / "trial_metadata.txt").write_text(
        "".join(f"LA_0001 ASV_{i:05d} none none {a} {k} notrim eval\n" for i, (k, a, _) in enumerate(rows))
    )
    (asv / "ASVTorch_Kaldi" / "score.txt").write_text(
        "".join(f"LA_0001 ASV_{i:05d} {s}\n" for i, (_, _, s) in enumerate(rows))
    )
    return root


def write_2021_df(root: Path, records) -> Path:
    def columns(i, r) -> str:
        vocoder = "bonafide" if r.label else VOCODERS[i % 3]
        return f"nocodec vcc2018 {'-' if r.label else r.attack} {_label(r)} notrim eval {vocoder} - - - -"

    _write_2021_key(root, "DF", records, columns)
    return root


def write_in_the_wild(root: Path, records) -> Path:
    root.mkdir(parents=True)
    (root / "meta.csv").write_text(
        "file,speaker,label\n"
        + "".join(f"{r.utt_id}.wav,{r.speaker},{'bona-fide' if r.label else 'spoof'}\n" for r in records)
    )
    _copy_audio(records, root, ".wav")
    return root


def write_folder_protocol(path: Path, records) -> Path:
    """A folder protocol (``PATH LABEL ATTACK SPEAKER``) naming the In-the-Wild root's .wav files beside it."""
    path.write_text("".join(f"{r.utt_id}.wav {_label(r)} {r.attack} {r.speaker}\n" for r in records))
    return path
