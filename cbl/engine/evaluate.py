"""Scoring with a saved checkpoint: protocols and splits (resumable), and arbitrary audio files.

Long scoring jobs (the 611k utterances of ASVspoof 2021 DF) append each batch's
scores to ``<out>.partial`` and fsync it regularly; a rerun after a crash reads
what is there and scores only the rest. The final score file is written under a
temporary name and renamed, so it is either complete or absent.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cbl.breakdowns import TdcfScorer, attack_breakdown, condition_breakdowns, format_breakdown
from cbl.centers import BonafideCenters, build_centers
from cbl.config import ExperimentConfig
from cbl.data import Record, fixed_window, load_audio, load_split, make_eval_loader, read_protocol
from cbl.engine.checkpoint import (
    CheckpointError,
    checkpoint_signature,
    load_checkpoint,
    load_model_state,
    resolve_checkpoint_path,
)
from cbl.engine.inference import embed, forward_chunked, score_embeddings
from cbl.engine.runtime import autocast_for, pick_device, resolve_workers, set_threads
from cbl.errors import CblError, UsageError
from cbl.metrics import ZNormStats, compute_eer, format_attack_table, per_attack_eer, write_score_file
from cbl.model import SpoofDetector, build_model
from cbl.tdcf import AsvScores, read_asv_scores
from cbl.uncertainty import eer_interval_fields

__all__ = [
    "EvalResult",
    "LoadedModel",
    "asv_option_scores",
    "evaluate_records",
    "expand_audio_paths",
    "load_model",
    "records_for",
    "result_tables",
    "score_audio_files",
    "score_records",
]

_PARTIAL_HEADER = "# cbl partial scores"


@dataclass
class LoadedModel:
    """A model rebuilt from the config its checkpoint carries, with its centers and threshold."""

    model: SpoofDetector
    centers: BonafideCenters | None
    config: ExperimentConfig
    threshold: float
    epoch: int
    path: Path
    device: torch.device
    norm: ZNormStats | None = None  # for loss.score=sum, from the dev split at training time


@dataclass
class EvalResult:
    utt_ids: list[str]
    scores: np.ndarray
    labels: np.ndarray
    attacks: list[str]
    eer: float | None = None
    threshold: float | None = None
    attack_rows: list[Any] = field(default_factory=list)
    negated_eer: float | None = None
    min_tdcf: dict[str, float] = field(default_factory=dict)  # pooled, by form ("2019", "2021"); with ASV scores
    attack_breakdown: Any = None  # cbl.breakdowns.Breakdown: per attack, with min t-DCF when ASV scores were given
    breakdowns: list[Any] = field(default_factory=list)  # the official condition tables of 2021 LA/DF keys
    # eer_low, eer_high: its 95% bootstrap CI; eer_ci_speakers: speakers resampled (0: by utterance)
    interval: dict[str, float | int] = field(default_factory=dict)

    @property
    def sign_suspicious(self) -> bool:
        """True when negating the scores would give a clearly lower EER (a swapped label or score sign)."""
        return self.eer is not None and self.negated_eer is not None and self.negated_eer < self.eer - 1e-9


def load_model(path: str | os.PathLike[str], *, device: str = "auto", threads: int | None = None) -> LoadedModel:
    """Rebuild the detector and its centers from a checkpoint (strict: mismatched keys are an error)."""
    path = resolve_checkpoint_path(path)
    payload, config = load_checkpoint(path)
    if device != "auto":
        config.train.device = device
    set_threads(config, threads)
    dev = pick_device(config)
    config = resolve_workers(config, dev, threads)
    model = build_model(config.model)
    load_model_state(model, payload["model"], str(path))
    model.to(dev).eval()
    centers = None
    if config.loss.type != "ce_only":
        centers = build_centers(config.centers, config.loss.num_clusters, config.model.embedding_dim)
        if not payload.get("centers"):
            raise CheckpointError(f"{path}: a {config.loss.type} checkpoint without bonafide centers")
        centers.load_state_dict(payload["centers"])
    # this checkpoint's own epoch: last.pt must not decide with the best epoch's threshold
    threshold = float(payload.get("threshold", payload.get("best_threshold", 0.0)))
    norm = None
    if payload.get("score_norm"):
        norm = ZNormStats(**payload["score_norm"])
    return LoadedModel(model, centers, config, threshold, int(payload.get("epoch", -1)) + 1, Path(path), dev, norm)


def _read_partial(partial: Path, signature: str) -> dict[str, float]:
    if not partial.is_file():
        return {}
    lines = partial.read_text(encoding="utf-8").splitlines()
    if not lines or lines[0] != f"{_PARTIAL_HEADER} {signature}":
        return {}  # scores of another checkpoint or protocol: start over
    done: dict[str, float] = {}
    for line in lines[1:]:
        parts = line.split()
        if len(parts) == 2:  # a torn last line (crash mid-write) is simply scored again
            try:
                done[parts[0]] = float(parts[1])
            except ValueError:
                continue
    return done


def _partial_signature(loaded: LoadedModel, records: Sequence[Record]) -> str:
    """What the partial scores depend on: this very checkpoint file (a retrained best.pt differs), the records,
    the window."""
    config = loaded.config
    return (
        f"{checkpoint_signature(loaded.path)} epoch={loaded.epoch} "
        f"n={len(records)} {config.data.eval_mode} {config.data.eval_window}"
    )


def score_records(
    loaded: LoadedModel,
    records: Sequence[Record],
    *,
    batch_size: int | None = None,
    partial: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    fsync_every: int = 20,
) -> np.ndarray:
    """Scores (higher = bonafide) for ``records`` in order; resumes from ``partial`` when given."""
    config = loaded.config
    signature = _partial_signature(loaded, records)
    done = _read_partial(partial, signature) if partial is not None else {}
    todo = [r for r in records if r.utt_id not in done]
    handle = None
    if partial is not None:
        partial.parent.mkdir(parents=True, exist_ok=True)
        fresh = not done
        handle = open(partial, "w" if fresh else "a", encoding="utf-8")  # noqa: SIM115 - closed in the finally below
        if fresh:
            handle.write(f"{_PARTIAL_HEADER} {signature}\n")
    try:
        batch = batch_size or config.train.eval_batch_size
        # one loader per chunk keeps the partial file in step with what has been scored
        chunk = batch * fsync_every
        for start in range(0, len(todo), chunk):
            part = todo[start : start + chunk]
            loader = make_eval_loader(part, config.data, batch_size=batch)
            outputs = embed(loaded.model, loader, config, loaded.device)
            scores = score_embeddings(outputs, loaded.centers, config, loaded.norm)
            for utt, score in zip(outputs["utt_id"], scores, strict=True):
                done[utt] = float(score)
                if handle is not None:
                    handle.write(f"{utt} {float(score)!r}\n")
            if handle is not None:
                handle.flush()
                os.fsync(handle.fileno())
            if progress is not None:
                progress(len(done), len(records))
    finally:
        if handle is not None:
            handle.close()
    return np.array([done[r.utt_id] for r in records], dtype=np.float64)


def evaluate_records(
    loaded: LoadedModel,
    records: Sequence[Record],
    out: Path,
    *,
    style: str = "2021",
    batch_size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    asv: AsvScores | None = None,
) -> EvalResult:
    """Score ``records``, write the score file atomically, and compute EER, per-attack EER and the official
    condition tables when labels exist; with ``asv`` (:class:`cbl.tdcf.AsvScores`) min t-DCF too."""
    partial = out.with_name(out.name + ".partial")
    scores = score_records(loaded, records, batch_size=batch_size, partial=partial, progress=progress)
    ids = [r.utt_id for r in records]
    labels = np.array([r.label for r in records], dtype=np.int64)
    attacks = [r.attack for r in records]
    keys = ["bonafide" if label == 1 else "spoof" for label in labels]
    write_score_file(out, ids, scores, attacks=attacks, keys=keys, style=style)
    partial.unlink(missing_ok=True)
    result = EvalResult(ids, scores, labels, attacks)
    if (labels == 1).any() and (labels == 0).any():
        result.eer, result.threshold = compute_eer(scores[labels == 1], scores[labels == 0])
        result.negated_eer, _ = compute_eer(-scores[labels == 1], -scores[labels == 0])
        result.interval = eer_interval_fields("eer", scores, labels, [r.speaker for r in records])
        result.attack_rows = per_attack_eer(scores, labels, attacks)
        # 2021 keys are scored with the revised 2021 t-DCF, everything else with the 2019 form
        scorer = TdcfScorer(asv, "2021" if records and "subset" in records[0].meta else "2019") if asv else None
        if scorer is not None:
            result.min_tdcf = scorer.pooled(scores[labels == 1], scores[labels == 0])
        result.attack_breakdown = attack_breakdown(scores, labels, attacks, scorer)
        result.breakdowns = condition_breakdowns(records, scores, scorer)
    return result


def result_tables(result: EvalResult) -> str:
    """What `evaluate` prints after the EER: the pooled min t-DCF (with ASV scores), the per-attack table and
    the official condition tables."""
    parts = []
    if result.min_tdcf:
        forms = ", ".join(f"{value:.4f} (ASVspoof {form} form)" for form, value in sorted(result.min_tdcf.items()))
        parts.append(f"min t-DCF {forms}")
    if result.attack_breakdown is not None and result.attack_breakdown.tdcf_form:
        parts.append(format_breakdown(result.attack_breakdown))
    else:
        parts.append(format_attack_table(result.attack_rows))
    parts += [format_breakdown(breakdown) for breakdown in result.breakdowns]
    return "\n\n".join(parts)


def score_audio_files(loaded: LoadedModel, paths: Sequence[Path]) -> list[tuple[Path, float]]:
    """Score arbitrary audio files (any rate, mono or stereo) one by one, as the model was evaluated."""
    config = loaded.config
    results = []
    with torch.no_grad():
        for path in paths:
            audio = load_audio(path, config.data.sample_rate)
            if config.data.eval_mode == "window":
                audio = fixed_window(audio, config.data.eval_window)
            with autocast_for(config, loaded.device):
                out = forward_chunked(
                    loaded.model,
                    torch.from_numpy(np.ascontiguousarray(audio))[None].to(loaded.device),
                    None,
                    config.data.eval_max_len,
                )
            outputs = {"embedding": out.embedding.float().cpu(), "logits": out.logits.float().cpu()}
            score = float(score_embeddings(outputs, loaded.centers, config, loaded.norm)[0])
            if not math.isfinite(score):
                raise CblError(f"{path}: the model produced a non-finite score")
            results.append((Path(path), score))
    return results


def records_for(
    config: ExperimentConfig, split: str | None, protocol: Path | None, audio_dir: Path | None, corpus: str | None
) -> list[Record]:
    """The records of a split of the config's corpus, or of an explicit protocol file of format ``corpus``."""
    if protocol is None:
        return load_split(config.data, split or "eval")
    if audio_dir is None:
        raise UsageError("--protocol needs --audio-dir (the folder its utterance ids point into)")
    return read_protocol(corpus or config.data.corpus, protocol, audio_dir, skip_missing=config.data.skip_missing)


def asv_option_scores(asv_scores: Path | None, asv_key: Path | None) -> AsvScores | None:
    """The ``--asv-scores``/``--asv-key`` options read (:func:`cbl.tdcf.read_asv_scores`), or None when not given."""
    if asv_scores is None:
        if asv_key is not None:
            raise UsageError("--asv-key needs --asv-scores (the ASV score.txt it describes)")
        return None
    return read_asv_scores(asv_scores, asv_key)


AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au", ".opus")


def expand_audio_paths(items: Sequence[Path]) -> list[Path]:
    """Files as given; folders expanded (recursively, sorted) to the audio files inside."""
    out: list[Path] = []
    for item in items:
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
            if not found:
                raise CblError(f"{item}: folder holds no audio files ({', '.join(AUDIO_SUFFIXES)})")
            out.extend(found)
        else:
            out.append(item)
    return out
