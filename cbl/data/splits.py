"""Map ``data.corpus`` + ``data.root`` to protocol files and audio folders: :func:`load_split`.

Standard layouts (``ROOT`` = ``data.root``):

==================  ========================================================================
asvspoof2019_la     ``ROOT/ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.{train.trn,dev.trl,eval.trl}.txt``,
                    audio ``ROOT/ASVspoof2019_LA_{train,dev,eval}/flac/``
asvspoof2021_la     eval: key ``ROOT/keys/LA/CM/trial_metadata.txt``, audio ``ROOT/ASVspoof2021_LA_eval/flac/``
asvspoof2021_df     eval: key ``ROOT/keys/DF/CM/trial_metadata.txt``, audio ``ROOT/ASVspoof2021_DF_eval/flac/``
in_the_wild         eval: ``ROOT/meta.csv`` with the audio beside it in ``ROOT/``
                    (or ``ROOT/release_in_the_wild/`` when that folder exists)
folder              every split needs ``data.<split>_protocol`` (see :func:`read_folder_protocol`);
                    audio paths are relative to ``data.root``, or to the protocol's folder
                    when ``data.root`` is empty
demo                the built-in synthetic corpus (2019 LA layout) from :func:`demo_root`
==================  ========================================================================

The 2021 and In-the-Wild corpora have no training data of their own: their train
and dev splits are ASVspoof 2019 LA under the same ``ROOT`` (the usual protocol:
train on 2019 LA, evaluate on the other corpus). Keep both under one folder, or
point ``data.train_protocol`` / ``data.dev_protocol`` at the 2019 protocol files.
An explicit ``data.<split>_protocol`` replaces the standard protocol file of
that split; the audio folder stays the standard one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cbl.config import CORPORA, SPLITS, DataConfig
from cbl.data.demo import demo_root
from cbl.data.protocols import (
    Protocol,
    Record,
    read_asvspoof2019,
    read_asvspoof2021,
    read_folder_protocol,
    read_in_the_wild,
)
from cbl.errors import DataRootError, UsageError

__all__ = ["SPLIT_NAMES", "load_split", "read_protocol", "subsample_train"]

SPLIT_NAMES = SPLITS
_2019_SUFFIX = {"train": "train.trn", "dev": "dev.trl", "eval": "eval.trl"}


def read_protocol(corpus: str, protocol: Path, audio_dir: Path, *, skip_missing: bool = False) -> Protocol:
    """The records of one protocol file in the format of ``corpus`` (``demo`` is written as ``asvspoof2019_la``).

    The one place a corpus name picks its reader: :func:`load_split` and scoring an
    explicit protocol (``evaluate --protocol``, ``final-eval --protocol``) both read here.
    """
    if corpus in ("asvspoof2019_la", "demo"):
        return read_asvspoof2019(protocol, audio_dir, skip_missing=skip_missing)
    if corpus in ("asvspoof2021_la", "asvspoof2021_df"):
        return read_asvspoof2021(protocol, audio_dir, track=corpus[-2:], skip_missing=skip_missing)
    if corpus == "in_the_wild":
        return read_in_the_wild(protocol, audio_dir, skip_missing=skip_missing)
    if corpus == "folder":
        return read_folder_protocol(protocol, audio_dir, skip_missing=skip_missing)
    raise UsageError(f"corpus is {corpus!r}, but must be one of {', '.join(CORPORA)}")


def _explicit(data: DataConfig, split: str) -> Path | None:
    value = getattr(data, f"{split}_protocol")
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_file():
        raise DataRootError(f"data.{split}_protocol: protocol file not found: {path}")
    return path


def _require(path: Path, what: str, corpus: str, root: Path) -> Path:
    if not path.exists():
        raise DataRootError(
            f"{what} not found: {path} (expected the standard {corpus} layout under data.root={root}; "
            "see cbl.data.splits for the layouts, or set the data.<split>_protocol keys)"
        )
    return path


def _read_2019(data: DataConfig, root: Path, split: str, corpus: str) -> Protocol:
    protocol = _explicit(data, split) or _require(
        root / "ASVspoof2019_LA_cm_protocols" / f"ASVspoof2019.LA.cm.{_2019_SUFFIX[split]}.txt",
        f"ASVspoof 2019 LA {split} protocol",
        corpus,
        root,
    )
    audio = _require(root / f"ASVspoof2019_LA_{split}" / "flac", f"ASVspoof 2019 LA {split} audio folder", corpus, root)
    return read_protocol("asvspoof2019_la", protocol, audio, skip_missing=data.skip_missing)


def _root(data: DataConfig) -> Path:
    if not data.root:
        raise DataRootError(
            f"data.root is not set for corpus '{data.corpus}': point it at the dataset folder "
            "(--set data.root=/path/to/LA) or use --demo for the built-in synthetic corpus"
        )
    root = Path(data.root).expanduser()
    if not root.is_dir():
        raise DataRootError(f"data.root folder not found: {root}")
    return root


def load_split(data: DataConfig, split: str) -> Protocol:
    """Records of ``split`` ('train', 'dev' or 'eval') for ``data.corpus``.

    Honours ``data.skip_missing`` and, for the train split, ``data.max_train_utterances``
    (see :func:`subsample_train`). Raises :class:`DataRootError` when the root or a
    standard file is missing, :class:`ProtocolError` for bad protocol content.
    """
    if split not in SPLIT_NAMES:
        raise UsageError(f"split is {split!r}, but must be one of {', '.join(SPLIT_NAMES)}")
    corpus = data.corpus
    if corpus == "demo":
        root = demo_root(data)
        records = _read_2019(data, root, split, corpus)
    elif corpus == "folder":
        protocol = _explicit(data, split)
        if protocol is None:
            raise DataRootError(
                f"corpus 'folder' needs data.{split}_protocol: a file of 'PATH_OR_ID LABEL [ATTACK] [SPEAKER]' lines"
            )
        audio = _root(data) if data.root else protocol.parent
        records = read_protocol(corpus, protocol, audio, skip_missing=data.skip_missing)
    else:
        root = _root(data)
        if corpus == "asvspoof2019_la" or split != "eval":
            records = _read_2019(data, root, split, corpus)
        elif corpus in ("asvspoof2021_la", "asvspoof2021_df"):
            track = corpus[-2:]
            upper = track.upper()
            key = _explicit(data, split) or _require(
                root / "keys" / upper / "CM" / "trial_metadata.txt", f"ASVspoof 2021 {upper} key", corpus, root
            )
            audio = _require(
                root / f"ASVspoof2021_{upper}_eval" / "flac", f"ASVspoof 2021 {upper} eval audio folder", corpus, root
            )
            records = read_protocol(corpus, key, audio, skip_missing=data.skip_missing)
        elif corpus == "in_the_wild":
            folder = root / "release_in_the_wild" if (root / "release_in_the_wild").is_dir() else root
            meta = _explicit(data, split) or _require(folder / "meta.csv", "In-the-Wild meta.csv", corpus, root)
            records = read_protocol(corpus, meta, folder, skip_missing=data.skip_missing)
        else:  # config validation keeps this unreachable
            raise UsageError(f"data.corpus is {corpus!r}, which load_split does not know")
    if split == "train" and data.max_train_utterances:
        records = subsample_train(records, data.max_train_utterances)
    return records


def subsample_train(records: Sequence[Record], limit: int, seed: int = 0) -> Protocol:
    """A deterministic, class-stratified subset of at most ``limit`` records, in protocol order.

    Each class keeps its share, and at least one record when both classes exist
    and ``limit >= 2``, so a smoke-test cap never removes the bonafide class.
    """
    source = getattr(records, "source", "")
    skipped, filtered = getattr(records, "skipped_ids", ()), getattr(records, "filtered", 0)
    if limit <= 0 or limit >= len(records):
        return Protocol(records, source=source, skipped_ids=skipped, filtered=filtered)
    labels = np.array([r.label for r in records])
    bonafide, spoof = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    n_bonafide = round(limit * bonafide.size / len(records))
    if bonafide.size and spoof.size and limit >= 2:
        n_bonafide = min(max(n_bonafide, 1), limit - 1)
    n_bonafide = min(n_bonafide, bonafide.size)
    n_spoof = min(limit - n_bonafide, spoof.size)
    rng = np.random.default_rng(seed)
    keep = np.sort(
        np.concatenate([rng.choice(bonafide, n_bonafide, replace=False), rng.choice(spoof, n_spoof, replace=False)])
    )
    return Protocol((records[int(i)] for i in keep), source=source, skipped_ids=skipped, filtered=filtered)
