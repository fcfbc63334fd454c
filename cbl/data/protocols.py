"""Protocol readers: ASVspoof 2019 LA, ASVspoof 2021 LA/DF keys, In-the-Wild, user folders.

Every reader returns a :class:`Protocol`: a list of :class:`Record` (label 1 =
bonafide, 0 = spoof) that also says what it left out. Bad input is never dropped
silently: a malformed line, an unknown label, a duplicate utterance id or an id
that escapes the audio folder raises :class:`~cbl.errors.ProtocolError` naming the
file and line; entries whose audio is missing raise one error with their count
and the first few ids, or, with ``skip_missing=True``, are skipped, logged and
counted in :attr:`Protocol.skipped`.

All text files may have Windows line endings, a UTF-8 byte-order mark, blank
lines and ``#`` comment lines.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cbl.errors import ProtocolError
from cbl.yamlio import read_text_file

__all__ = [
    "AUDIO_SUFFIXES",
    "BONAFIDE_WORDS",
    "SPOOF_WORDS",
    "Protocol",
    "Record",
    "read_asvspoof2019",
    "read_asvspoof2021",
    "read_folder_protocol",
    "read_in_the_wild",
]

logger = logging.getLogger("cbl.data")

PathLike = str | os.PathLike[str]

# Label words of the generic folder protocol (case-insensitive).
BONAFIDE_WORDS = frozenset({"bonafide", "bona-fide", "genuine", "real", "1"})
SPOOF_WORDS = frozenset({"spoof", "fake", "0"})
AUDIO_SUFFIXES = (".flac", ".wav", ".ogg", ".mp3", ".aiff", ".aif")
_SHOW_FIRST = 5  # how many offending ids an aggregated error lists

# Column layouts, used both to parse and to recognise a file given to the wrong reader.
_FORMATS: dict[int, tuple[str, str]] = {
    5: ("ASVspoof 2019 LA CM protocol", "SPEAKER UTT_ID - ATTACK KEY"),
    8: ("ASVspoof 2021 LA key", "SPEAKER TRIAL CODEC TRANSMISSION ATTACK KEY TRIM SUBSET"),
    13: ("ASVspoof 2021 DF key", "SPEAKER TRIAL CODEC SOURCE ATTACK KEY TRIM SUBSET VOCODER - - - -"),
}


@dataclass(frozen=True)
class Record:
    """One utterance of a protocol.

    ``meta`` holds corpus-specific columns (codec, vocoder, ...). It is excluded
    from equality and hashing (``compare=False``) so records stay hashable;
    ``utt_id`` identifies a record within a protocol.
    """

    utt_id: str
    path: str  # absolute path of the audio file
    label: int  # 1 bonafide, 0 spoof
    attack: str  # "-" for bonafide in 2019 LA; the attack id otherwise
    speaker: str
    meta: dict[str, str] = field(default_factory=dict, compare=False)


class Protocol(list[Record]):
    """The records of one protocol file, plus what the reader left out.

    A plain ``list`` of :class:`Record` for every consumer; the attributes say
    where it came from and what was skipped:

    - ``source``: the protocol file.
    - ``skipped``: how many entries were skipped because their audio is missing
      (only with ``skip_missing=True``); ``skipped_ids`` lists them.
    - ``filtered``: rows left out on purpose (e.g. 2021 rows outside ``subset``).
    """

    def __init__(
        self,
        records: Iterable[Record] = (),
        *,
        source: str = "",
        skipped_ids: Sequence[str] = (),
        filtered: int = 0,
    ) -> None:
        super().__init__(records)
        self.source = source
        self.skipped_ids: tuple[str, ...] = tuple(skipped_ids)
        self.filtered = filtered

    @property
    def skipped(self) -> int:
        return len(self.skipped_ids)


# --------------------------------------------------------------------------- text helpers
def _open_text(path: PathLike) -> str:
    # a byte-order mark is dropped; universal newlines accept CRLF
    return read_text_file(Path(path), ProtocolError, "protocol file")


def _data_lines(text: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, stripped line) for every non-blank, non-comment line."""
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            yield number, stripped


def _looks_like(fields: Sequence[str], line: str) -> str:
    """A hint naming the format a line with this many columns belongs to, or ''."""
    if len(fields) in _FORMATS:
        name, _ = _FORMATS[len(fields)]
        return f"; it looks like an {name} ({len(fields)} columns)"
    if "," in line and len(line.split(",")) == 3:
        return "; it looks like an In-the-Wild meta.csv line (file,speaker,label)"
    return ""


def _wrong_columns(source: Path, number: int, line: str, fields: Sequence[str], expected: int) -> ProtocolError:
    name, layout = _FORMATS[expected]
    return ProtocolError(
        f"{source}:{number}: expected {expected} columns '{layout}' ({name}), "
        f"got {len(fields)}{_looks_like(fields, line)}: {line!r}"
    )


def _bonafide_or_spoof(source: Path, number: int, word: str, column: str) -> int:
    key = word.lower()
    if key == "bonafide":
        return 1
    if key == "spoof":
        return 0
    raise ProtocolError(f"{source}:{number}: unknown {column} {word!r}, expected 'bonafide' or 'spoof'")


# --------------------------------------------------------------------------- path checks
class _AudioFolder:
    """Resolves entries against one audio folder and refuses anything outside it."""

    def __init__(self, audio_dir: PathLike, source: Path) -> None:
        self.given = Path(audio_dir).expanduser()
        if not self.given.is_dir():
            raise ProtocolError(f"{source}: audio folder not found: {self.given}")
        # Resolve the folder itself, so a symlinked dataset folder is fine; only
        # entries that lead out of it are refused.
        self.root = Path(os.path.realpath(self.given))
        self.source = source

    def locate(self, number: int, relative: str) -> Path:
        """Absolute path of ``relative`` inside the folder; ProtocolError if it escapes."""
        candidate = Path(relative)
        escapes = candidate.is_absolute() or relative.startswith(("/", "\\")) or ".." in candidate.parts
        if not escapes and len(candidate.parts) == 1 and not os.path.islink(self.root / candidate):
            # A plain file name that is not a symlink cannot leave the (resolved) folder; this
            # skips realpath's per-component lookups, which dominate reading a 70k-line protocol.
            return self.root / candidate
        resolved = Path(os.path.realpath(self.root / candidate)) if not escapes else candidate
        if escapes or not resolved.is_relative_to(self.root):
            raise ProtocolError(
                f"{self.source}:{number}: entry {relative!r} escapes the audio folder {self.given}; "
                "entries must name files inside it"
            )
        return resolved


def _check_plain_id(source: Path, number: int, utt_id: str) -> None:
    # Corpus ids become file names; a separator or '..' would point elsewhere.
    if "/" in utt_id or "\\" in utt_id or utt_id in (".", "..") or utt_id.startswith(".."):
        raise ProtocolError(
            f"{source}:{number}: utterance id {utt_id!r} escapes the audio folder; ids must be plain file names"
        )


class _Collector:
    """Accumulates records, rejects duplicate ids and counts missing audio."""

    def __init__(self, source: Path, audio: _AudioFolder, skip_missing: bool) -> None:
        self.source = source
        self.audio = audio
        self.skip_missing = skip_missing
        self.records: list[Record] = []
        self.first_line: dict[str, int] = {}
        self.missing: list[str] = []
        self.filtered = 0

    def add(self, number: int, record: Record) -> None:
        if record.utt_id in self.first_line:
            raise ProtocolError(
                f"{self.source}:{number}: duplicate utterance id {record.utt_id!r} "
                f"(first seen on line {self.first_line[record.utt_id]})"
            )
        self.first_line[record.utt_id] = number
        if not os.path.isfile(record.path):
            self.missing.append(record.utt_id)
            return
        self.records.append(record)

    def finish(self) -> Protocol:
        total = len(self.records) + len(self.missing)
        if self.missing:
            first = ", ".join(self.missing[:_SHOW_FIRST])
            summary = (
                f"{len(self.missing)} of {total} entries have missing audio under {self.audio.given}, first: {first}"
            )
            if not self.skip_missing:
                raise ProtocolError(f"{self.source}: {summary} (set data.skip_missing=true to skip them)")
            logger.warning("%s: skipped %s", self.source, summary)
        if not self.records:
            raise ProtocolError(f"{self.source}: no usable entries (read {total}, filtered {self.filtered})")
        return Protocol(self.records, source=str(self.source), skipped_ids=self.missing, filtered=self.filtered)


# --------------------------------------------------------------------------- readers
def read_asvspoof2019(
    protocol: PathLike, audio_dir: PathLike, *, ext: str = ".flac", skip_missing: bool = False
) -> Protocol:
    """Read an ASVspoof 2019 LA CM protocol (``SPEAKER UTT_ID - ATTACK KEY``).

    Audio is ``audio_dir/UTT_ID{ext}``. ``attack`` is ``-`` for bonafide rows.
    """
    source = Path(protocol)
    text = _open_text(source)
    collector = _Collector(source, _AudioFolder(audio_dir, source), skip_missing)
    for number, line in _data_lines(text):
        fields = line.split()
        if len(fields) != 5:
            raise _wrong_columns(source, number, line, fields, 5)
        speaker, utt_id, _, attack, key = fields
        label = _bonafide_or_spoof(source, number, key, "KEY")
        _check_plain_id(source, number, utt_id)
        path = collector.audio.locate(number, utt_id + ext)
        collector.add(number, Record(utt_id, str(path), label, attack, speaker))
    return collector.finish()


def read_asvspoof2021(
    key: PathLike,
    audio_dir: PathLike,
    *,
    track: str = "la",
    subset: str | None = "eval",
    ext: str = ".flac",
    skip_missing: bool = False,
) -> Protocol:
    """Read an ASVspoof 2021 LA (8 columns) or DF (13 columns) key (``trial_metadata.txt``).

    Only rows whose SUBSET column equals ``subset`` are kept (official scoring
    uses ``eval``); ``subset=None`` keeps every row. The others are counted in
    :attr:`Protocol.filtered`. Codec, transmission/source, trim, subset and (DF)
    vocoder columns go into ``Record.meta``.
    """
    track = track.lower()
    if track not in ("la", "df"):
        raise ProtocolError(f"track is {track!r}, but must be 'la' or 'df'")
    expected = 8 if track == "la" else 13
    second = "transmission" if track == "la" else "source"
    source = Path(key)
    text = _open_text(source)
    collector = _Collector(source, _AudioFolder(audio_dir, source), skip_missing)
    for number, line in _data_lines(text):
        fields = line.split()
        if len(fields) != expected:
            raise _wrong_columns(source, number, line, fields, expected)
        speaker, utt_id, codec, channel, attack, word, trim, row_subset = fields[:8]
        label = _bonafide_or_spoof(source, number, word, "KEY")
        if subset is not None and row_subset != subset:
            collector.filtered += 1
            continue
        meta = {"codec": codec, second: channel, "trim": trim, "subset": row_subset}
        if track == "df":
            meta["vocoder"] = fields[8]
            # The last four DF columns are '-' for most rows; keep them by position.
            meta.update({f"column_{i + 1}": value for i, value in enumerate(fields[9:], start=9)})
        _check_plain_id(source, number, utt_id)
        path = collector.audio.locate(number, utt_id + ext)
        collector.add(number, Record(utt_id, str(path), label, attack, speaker, meta))
    return collector.finish()


def read_in_the_wild(meta_csv: PathLike, audio_dir: PathLike, *, skip_missing: bool = False) -> Protocol:
    """Read In-the-Wild's ``meta.csv`` (header ``file,speaker,label``; label ``bona-fide``/``spoof``).

    ``utt_id`` is the file name without extension; ``attack`` is ``-`` for
    bonafide and ``spoof`` for spoofs (the corpus names no attack systems).
    """
    source = Path(meta_csv)
    text = _open_text(source)
    collector = _Collector(source, _AudioFolder(audio_dir, source), skip_missing)
    rows = list(csv.reader(io.StringIO(text)))
    numbered = [(n, row) for n, row in enumerate(rows, start=1) if any(cell.strip() for cell in row)]
    if not numbered:
        raise ProtocolError(f"{source}: file is empty, expected a header 'file,speaker,label'")
    header_line, header = numbered[0]
    columns = [cell.strip().lower() for cell in header]
    if not {"file", "speaker", "label"} <= set(columns):
        raise ProtocolError(f"{source}:{header_line}: expected a header 'file,speaker,label', got {','.join(header)!r}")
    where = {name: columns.index(name) for name in ("file", "speaker", "label")}
    for number, row in numbered[1:]:
        if len(row) != len(columns):
            raise ProtocolError(
                f"{source}:{number}: expected {len(columns)} comma-separated fields "
                f"'{','.join(columns)}', got {len(row)}: {','.join(row)!r}"
            )
        name, speaker, word = (row[where[k]].strip() for k in ("file", "speaker", "label"))
        if word.lower() not in ("bona-fide", "spoof"):
            raise ProtocolError(f"{source}:{number}: unknown label {word!r}, expected 'bona-fide' or 'spoof'")
        label = 1 if word.lower() == "bona-fide" else 0
        path = collector.audio.locate(number, name)
        utt_id = Path(name).with_suffix("").as_posix()
        collector.add(number, Record(utt_id, str(path), label, "-" if label else "spoof", speaker))
    return collector.finish()


def _folder_label(source: Path, number: int, word: str) -> int:
    key = word.lower()
    if key in BONAFIDE_WORDS:
        return 1
    if key in SPOOF_WORDS:
        return 0
    raise ProtocolError(
        f"{source}:{number}: unknown label {word!r}, expected one of "
        f"{', '.join(sorted(BONAFIDE_WORDS))} (bonafide) or {', '.join(sorted(SPOOF_WORDS))} (spoof)"
    )


def read_folder_protocol(protocol: PathLike, audio_dir: PathLike, *, skip_missing: bool = False) -> Protocol:
    """Read a generic protocol for your own data: ``PATH_OR_ID LABEL [ATTACK] [SPEAKER]`` per line.

    Fields are separated by commas when the line has one (so paths may contain
    spaces), otherwise by whitespace. ``PATH_OR_ID`` is a path relative to
    ``audio_dir`` (sub-folders allowed) when it ends in an audio suffix
    (.flac, .wav, .ogg, .mp3, .aiff), else an id whose file is ``ID.flac`` or
    ``ID.wav``. LABEL (case-insensitive): ``bonafide``, ``bona-fide``,
    ``genuine``, ``real``, ``1`` -> bonafide; ``spoof``, ``fake``, ``0`` -> spoof.
    ATTACK defaults to ``-`` (bonafide) / ``spoof``; SPEAKER to ``-``. An optional
    first line whose second field is ``label`` is taken as a header. The
    ``utt_id`` is the path without its audio suffix.
    """
    source = Path(protocol)
    text = _open_text(source)
    collector = _Collector(source, _AudioFolder(audio_dir, source), skip_missing)
    layout = "PATH_OR_ID LABEL [ATTACK] [SPEAKER]"
    for position, (number, line) in enumerate(_data_lines(text)):
        fields = [f.strip() for f in line.split(",")] if "," in line else line.split()
        if position == 0 and len(fields) >= 2 and fields[1].lower() == "label":
            continue
        if not 2 <= len(fields) <= 4 or not all(fields):
            raise ProtocolError(
                f"{source}:{number}: expected 2 to 4 fields '{layout}' (comma- or whitespace-separated), "
                f"got {len(fields)}: {line!r}"
            )
        entry, word = fields[0], fields[1]
        label = _folder_label(source, number, word)
        attack = fields[2] if len(fields) > 2 else ("-" if label else "spoof")
        speaker = fields[3] if len(fields) > 3 else "-"
        if entry.lower().endswith(AUDIO_SUFFIXES):
            path = collector.audio.locate(number, entry)
            utt_id = Path(entry).with_suffix("").as_posix()
        else:
            candidates = [collector.audio.locate(number, entry + suffix) for suffix in (".flac", ".wav")]
            path = next((c for c in candidates if c.is_file()), candidates[0])
            utt_id = entry
        collector.add(number, Record(utt_id, str(path), label, attack, speaker))
    return collector.finish()
