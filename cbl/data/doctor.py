"""The dataset doctor: is a corpus root what cbl (and the published papers) expect? :func:`diagnose`.

It reads every protocol of a root through :func:`cbl.data.splits.load_split` (the
same readers training and scoring use, so a root the doctor passes is a root they
read) and adds what a reader cannot see on its own: counts against the published
figures, audio files the protocol does not name, unreadable files, sample rates
and durations per split and class, speakers and utterance ids shared between splits.

Problems make a root unusable (missing or unreadable audio, a malformed or missing
protocol, duplicate ids, speakers in two splits); warnings do not (a count that
differs from the published one: subsets are legitimate). :func:`check_training_data`
is the cheap part (no audio opened, no eval split read) that ``run`` and ``train``
run before Ray starts or training begins.

Published trial counts (:data:`PUBLISHED_COUNTS`), as ``(trials, bonafide)``:

- ASVspoof 2019 LA: train 25,380 (2,580 bonafide), dev 24,844 (2,548), eval 71,237
  (7,355). Source: Wang et al., "ASVspoof 2019: a large-scale public database of
  synthesized, converted and replayed speech", Computer Speech & Language 64 (2020), Table 4.
- ASVspoof 2021 LA eval 181,566 and DF eval 611,829 trials (every row of the key,
  progress and hidden subsets included). Source: Liu et al., "ASVspoof 2021: Towards
  spoofed and deepfake speech detection in the wild", IEEE/ACM TASLP 31 (2023), Table II.
- In-the-Wild 31,779 (19,963 bonafide, 11,816 spoof). Source: Müller et al., "Does
  audio deepfake detection generalize?", Interspeech 2022.
"""

from __future__ import annotations

import logging
import os
import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import soundfile as sf

from cbl.config import PROTOCOL_FORMATS, DataConfig
from cbl.data.audio import load_audio
from cbl.data.protocols import AUDIO_SUFFIXES, Protocol
from cbl.data.splits import load_split
from cbl.errors import CblError, DataRootError, join_first

__all__ = [
    "DEFAULT_SAMPLE",
    "DOCTOR_CORPORA",
    "PUBLISHED_COUNTS",
    "DoctorReport",
    "Finding",
    "SplitFacts",
    "check_training_data",
    "diagnose",
    "published_count",
]

# (corpus, split) -> (trials, bonafide or None when unpublished); sources in the module docstring
PUBLISHED_COUNTS: dict[tuple[str, str], tuple[int, int | None]] = {
    ("asvspoof2019_la", "train"): (25_380, 2_580),
    ("asvspoof2019_la", "dev"): (24_844, 2_548),
    ("asvspoof2019_la", "eval"): (71_237, 7_355),
    ("asvspoof2021_la", "eval"): (181_566, None),
    ("asvspoof2021_df", "eval"): (611_829, None),
    ("in_the_wild", "eval"): (31_779, 19_963),
}
DOCTOR_CORPORA = tuple(corpus for corpus in PROTOCOL_FORMATS if corpus != "folder")  # the standard layouts
logger = logging.getLogger("cbl.data")
DEFAULT_SAMPLE = 200  # audio files opened per split without --full: enough to catch a systematic fault


@dataclass(frozen=True)
class Finding:
    """One problem (the root is not usable) or warning, with what to do about it."""

    level: str  # "problem" or "warning"
    kind: str  # layout, protocol, missing, unreadable, overlap, extra, rate, count
    what: str
    fix: str = ""

    def line(self) -> str:
        return f"{self.level}: {self.what}" + (f" -> {self.fix}" if self.fix else "")


@dataclass
class SplitFacts:
    """What the doctor found in one split."""

    split: str
    protocol: str
    records: int = 0  # readable entries with audio
    bonafide: int = 0
    filtered: int = 0  # rows the reader leaves out on purpose (2021 keys: progress/hidden subsets)
    missing: tuple[str, ...] = ()
    extra: list[str] = field(default_factory=list)  # audio files in the folder that no entry names
    checked: int = 0  # audio files opened
    unreadable: list[str] = field(default_factory=list)  # "utt_id (reason)"
    rates: Counter = field(default_factory=Counter)
    durations: dict[str, list[float]] = field(default_factory=dict)  # class -> seconds of the checked files

    @property
    def rows(self) -> int:
        """Every row of the protocol: what the published counts count."""
        return self.records + len(self.missing) + self.filtered


@dataclass
class DoctorReport:
    corpus: str
    root: str
    splits: list[SplitFacts] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return not any(f.level == "problem" for f in self.findings)

    def problem(self, kind: str, what: str, fix: str) -> None:
        self.findings.append(Finding("problem", kind, what, fix))

    def warning(self, kind: str, what: str, fix: str = "") -> None:
        self.findings.append(Finding("warning", kind, what, fix))

    def table(self) -> str:
        """One row per split (counts, published figure, missing/extra/unreadable, rates, durations), then
        the findings and the verdict."""
        header = ["split", "trials", "bonafide", "spoof", "not scored", "published", "missing", "extra", "checked"]
        header += ["unreadable"]
        header += ["rate (Hz)", "bonafide s (min/med/max)", "spoof s (min/med/max)"]
        rows = [header]
        for s in self.splits:
            published = published_count(self.corpus, s.split)
            rows.append(
                [
                    s.split,
                    str(s.rows),
                    str(s.bonafide),
                    str(s.records - s.bonafide),
                    str(s.filtered),  # 2021 key rows outside the scored subset
                    f"{published[0]}" if published else "-",
                    str(len(s.missing)),
                    str(len(s.extra)),
                    str(s.checked),
                    str(len(s.unreadable)),
                    ",".join(str(rate) for rate in sorted(s.rates)) or "-",
                    _spread(s.durations.get("bonafide", [])),
                    _spread(s.durations.get("spoof", [])),
                ]
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
        lines += [finding.line() for finding in self.findings]
        verdict = "usable" if self.usable else "NOT usable"
        lines.append(f"{self.corpus} at {self.root}: {verdict}")
        return "\n".join(lines)


def published_count(corpus: str, split: str) -> tuple[int, int | None] | None:
    """The published (trials, bonafide) of a split; the train and dev splits of every corpus are 2019 LA's."""
    return PUBLISHED_COUNTS.get(("asvspoof2019_la" if split != "eval" else corpus, split))


def _spread(seconds: list[float]) -> str:
    if not seconds:
        return "-"
    return f"{min(seconds):.2f}/{statistics.median(seconds):.2f}/{max(seconds):.2f}"


def _read(data: DataConfig, split: str, report: DoctorReport) -> Protocol | None:
    """The split's records (missing audio collected, not raised), or None with the problem recorded."""
    try:
        return load_split(replace(data, skip_missing=True, max_train_utterances=0), split)
    except DataRootError as exc:
        report.problem(
            "layout", f"{split}: {exc}", "put the corpus in its standard layout (see `cbl-search doctor --help`)"
        )
    except CblError as exc:  # ProtocolError: a malformed line, a duplicate id, an entry leaving its folder
        report.problem(
            "protocol", f"{split}: {exc}", "fix or replace that protocol file (a fresh copy of the corpus's own)"
        )
    return None


def _facts(split: str, records: Protocol) -> SplitFacts:
    return SplitFacts(
        split,
        records.source,
        records=len(records),
        bonafide=sum(r.label for r in records),
        filtered=records.filtered,
        missing=records.skipped_ids,
    )


def _extra_files(records: Protocol) -> list[str]:
    """Audio files in the split's audio folder that no entry names (one folder only: the standard layouts).

    A 2021 key's rows outside the scored subset (progress, hidden) name their files too: the second column.
    """
    folders = {os.path.dirname(r.path) for r in records}
    if len(folders) != 1:
        return []
    named = {os.path.basename(r.path) for r in records}
    if records.filtered:
        suffix = os.path.splitext(records[0].path)[1]
        lines = Path(records.source).read_text(encoding="utf-8", errors="replace").splitlines()
        named |= {fields[1] + suffix for fields in (line.split() for line in lines) if len(fields) > 1}
    with os.scandir(folders.pop()) as entries:
        return sorted(
            e.name
            for e in entries
            if e.name.lower().endswith(AUDIO_SUFFIXES) and e.name not in named and e.is_file(follow_symlinks=True)
        )


def _open_audio(facts: SplitFacts, records: Protocol, limit: int | None, seed: int) -> None:
    """Open ``limit`` records chosen at random (all when None): rate and length from the header, then a full
    decode with :func:`cbl.data.audio.load_audio` at the file's own rate (no resampling)."""
    chosen: Sequence[int] = range(len(records))
    if limit is not None and limit < len(records):
        chosen = np.sort(np.random.default_rng(seed).choice(len(records), limit, replace=False)).tolist()
    for index in chosen:
        record = records[index]
        facts.checked += 1
        try:
            info = sf.info(record.path)
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
            info = None  # load_audio below says why, in its words
        try:
            load_audio(record.path, int(info.samplerate) if info is not None else 16000)
        except CblError as exc:
            reason = str(exc).removeprefix(f"{record.path}: ")
            facts.unreadable.append(f"{record.utt_id} ({reason})")
            continue
        assert info is not None  # load_audio read it
        facts.rates[int(info.samplerate)] += 1
        facts.durations.setdefault("bonafide" if record.label else "spoof", []).append(
            info.frames / max(info.samplerate, 1)
        )


def _judge_split(report: DoctorReport, facts: SplitFacts, sample_rate: int) -> None:
    split = facts.split
    if facts.missing:
        report.problem(
            "missing",
            f"{split}: {len(facts.missing)} of {facts.rows} entries have no audio file, first: "
            f"{join_first(list(facts.missing))}",
            "copy the missing files from the corpus (or set data.skip_missing=true to train on the rest)",
        )
    if facts.unreadable:
        report.problem(
            "unreadable",
            f"{split}: {len(facts.unreadable)} of {facts.checked} opened audio files are unreadable: "
            f"{join_first(facts.unreadable, sep='; ')}",
            "replace them with fresh copies" + ("" if facts.checked == facts.records else " (--full opens every file)"),
        )
    if facts.extra:
        report.warning(
            "extra",
            f"{split}: {len(facts.extra)} audio files that no protocol entry names, first: {join_first(facts.extra)}",
            "harmless (they are never read); check that the protocol is the corpus's full one",
        )
    other_rates = sorted(rate for rate in facts.rates if rate != sample_rate)
    if other_rates:
        report.warning(
            "rate", f"{split}: audio at {', '.join(map(str, other_rates))} Hz", f"resampled to {sample_rate} Hz"
        )
    published = published_count(report.corpus, split)
    if published is not None:
        trials, bonafide = published
        if facts.rows != trials or (bonafide is not None and facts.bonafide != bonafide):
            known = f"{trials} trials" + (f" ({bonafide} bonafide)" if bonafide is not None else "")
            report.warning(
                "count",
                f"{split}: {facts.rows} trials ({facts.bonafide} bonafide), published {known}",
                "fine for a subset; results are then not comparable with published ones",
            )


def _judge_overlaps(report: DoctorReport, protocols: dict[str, Protocol]) -> None:
    """Speakers and utterance ids in two splits (speaker '-' is unknown, not shared)."""
    names = list(protocols)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            speakers = {r.speaker for r in protocols[first]} & {r.speaker for r in protocols[second]} - {"-", ""}
            if speakers:
                report.problem(
                    "overlap",
                    f"speakers shared between {first} and {second}: {join_first(sorted(speakers))}",
                    "keep each speaker in one split (the published splits are speaker-disjoint), or the "
                    "dev EER measures speakers the model has heard",
                )
            ids = {r.utt_id for r in protocols[first]} & {r.utt_id for r in protocols[second]}
            if ids:
                report.problem(
                    "overlap",
                    f"utterance ids in both {first} and {second}: {join_first(sorted(ids))}",
                    "each utterance belongs to one split; use the corpus's own protocol files",
                )


def _splits_of(data: DataConfig) -> tuple[str, ...]:
    """2019 LA has all three splits; the 2021 and In-the-Wild roots hold eval, and train/dev when the 2019 LA
    protocols sit beside them (see cbl.data.splits)."""
    if data.corpus == "asvspoof2019_la":
        return ("train", "dev", "eval")
    if (Path(data.root).expanduser() / "ASVspoof2019_LA_cm_protocols").is_dir():
        return ("train", "dev", "eval")
    return ("eval",)


def diagnose(
    data: DataConfig,
    *,
    splits: Sequence[str] | None = None,
    sample: int | None = DEFAULT_SAMPLE,
    open_audio: bool = True,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> DoctorReport:
    """Check the corpus of ``data`` (its ``corpus`` and ``root``) split by split.

    ``sample``: audio files opened per split (None: every file); ``open_audio=False`` opens none and lists no
    folder (the cheap part). The report's findings say what is wrong and what to do.
    """
    report = DoctorReport(data.corpus, data.root)
    protocols: dict[str, Protocol] = {}
    for split in splits or _splits_of(data):
        if progress is not None:
            progress(f"reading the {split} protocol")
        records = _read(data, split, report)
        if records is None:
            continue
        protocols[split] = records
        facts = _facts(split, records)
        if open_audio:
            facts.extra = _extra_files(records)
            if progress is not None:
                progress(f"opening {len(records) if sample is None else min(sample, len(records))} {split} files")
            _open_audio(facts, records, sample, seed)
        report.splits.append(facts)
        _judge_split(report, facts, data.sample_rate)
    _judge_overlaps(report, protocols)
    return report


def check_training_data(data: DataConfig, echo: Callable[[str], None] | None = None) -> None:
    """The doctor's cheap part for ``run`` and ``train``: the train and dev layout, their protocol lines and
    missing audio (none decoded; the eval split is not read: it stays sealed until the final evaluation).

    Raises :class:`DataRootError` listing every problem; echoes the warnings (logs them without ``echo``).
    Missing audio is a problem unless ``data.skip_missing`` is set.
    """
    report = diagnose(data, splits=("train", "dev"), open_audio=False)
    problems = [f for f in report.findings if f.level == "problem" and not (data.skip_missing and f.kind == "missing")]
    if problems:
        raise DataRootError(
            f"data.corpus={data.corpus} data.root={data.root or '(demo)'}: " + "; ".join(f.line() for f in problems)
        )
    for finding in report.findings:
        if finding.level == "warning":
            (echo or logger.warning)(finding.line())
