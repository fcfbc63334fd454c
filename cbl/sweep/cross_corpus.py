"""Cross-corpus final evaluation: the best checkpoint of a sweep scored on several corpora, one summary.

``cbl-search final-eval EXPERIMENT_DIR --on asvspoof2021_la=/data/LA21 --on in_the_wild=/data/itw`` (or
``final_eval: {corpora: {NAME: ROOT}}`` in the space file, so that ``run`` does it at the end). Per corpus,
under ``final_eval/``:

- ``scores-<corpus>.txt`` in the format that corpus's official scorer reads (:data:`SCORE_FORMATS`);
- ``corpora/<corpus>.json``: its pooled EER with a 95% bootstrap interval (:mod:`cbl.uncertainty`; by speaker
  when the protocol names them), min t-DCF (when the organisers' ASV scores lie in the root's
  standard place: :func:`standard_asv_scores`), the official breakdowns, and the checkpoint's signature;
  a corpus whose stored result comes from the same checkpoint and root is not scored again;
- scoring itself resumes (:func:`cbl.engine.evaluate_records` appends each chunk of scores durably to
  ``scores-<corpus>.txt.partial``), so an interrupted 611,829-file DF evaluation continues where it stopped.

Then ``summary.md`` and ``summary.json``: one row per corpus scored by the current best checkpoint, written
atomically. Every scoring of a corpus is appended to ``log.jsonl`` first (:func:`log_eval_access`), so a
paper can say how often the eval data was looked at.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from cbl.config import PROTOCOL_FORMATS, DataConfig
from cbl.data import load_split
from cbl.engine import LoadedModel, checkpoint_signature, evaluate_records, load_model, result_tables
from cbl.errors import CblError, DataRootError, UsageError
from cbl.sweep.final_eval import FINAL_DIR, log_eval_access, require_best
from cbl.sweep.space import SearchSpace
from cbl.sweep.store import TrialInfo
from cbl.tdcf import AsvScores, read_asv_scores
from cbl.uncertainty import eer_interval_fields
from cbl.yamlio import atomic_write_text

__all__ = [
    "SCORE_FORMATS",
    "CorpusResult",
    "corpus_data",
    "corpus_roots",
    "cross_corpus_evaluation",
    "evaluate_on_corpora",
    "evaluate_space_corpora",
    "parse_corpus_option",
    "standard_asv_scores",
    "summary_table",
    "write_summary",
]

# The score file each corpus's official scorer reads: the ASVspoof 2019 package (evaluate_tDCF_asvspoof19.py)
# reads 'UTT_ID ATTACK KEY SCORE', the ASVspoof 2021 package (main.py) 'UTT_ID SCORE'. In-the-Wild and user
# folders have no official scorer: the 2021 form, the one most tools read.
SCORE_FORMATS = {
    "asvspoof2019_la": "2019",
    "asvspoof2021_la": "2021",
    "asvspoof2021_df": "2021",
    "in_the_wild": "2021",
    "folder": "2021",
}


@dataclass
class CorpusResult:
    """One corpus scored by one checkpoint: what its row of the summary and its ``corpora/<corpus>.json`` hold."""

    corpus: str
    root: str
    checkpoint: str
    signature: str
    trials: int
    bonafide: int
    eer: float
    threshold: float
    score_file: str
    score_format: str
    # 95% bootstrap percentile interval of the EER (cbl.uncertainty), resampled by speaker when the protocol
    # names every speaker (ci_speakers: how many), else by utterance (ci_speakers 0)
    eer_low: float | None = None
    eer_high: float | None = None
    ci_speakers: int = 0
    min_tdcf: dict[str, float] = field(default_factory=dict)  # form -> value, with the organisers' ASV scores
    breakdowns: list[dict[str, Any]] = field(default_factory=list)  # {title, tdcf_form, rows: [ConditionRow]}
    tables: str = ""  # the breakdowns as `evaluate` prints them
    scored_at: float = 0.0


def parse_corpus_option(text: str) -> tuple[str, str]:
    """``CORPUS=ROOT`` (``folder=PROTOCOL`` for a user folder) -> (corpus, root); a UsageError otherwise."""
    corpus, sep, root = text.partition("=")
    if not sep or not root:
        raise UsageError(f"--on {text!r}: expected CORPUS=ROOT, e.g. --on asvspoof2021_df=/data/ASVspoof2021_DF")
    if corpus not in PROTOCOL_FORMATS:
        raise UsageError(f"--on {text!r}: corpus {corpus!r} is unknown, expected one of {', '.join(PROTOCOL_FORMATS)}")
    return corpus, root


def standard_asv_scores(corpus: str, root: Path) -> AsvScores | None:
    """The organisers' ASV scores where the corpus's standard layout keeps them, or None (min t-DCF is then
    left out; ASVspoof 2021 DF and In-the-Wild define none)."""
    if corpus == "asvspoof2019_la":
        scores = root / "ASVspoof2019_LA_asv_scores" / "ASVspoof2019.LA.asv.eval.gi.trl.scores.txt"
        return read_asv_scores(scores) if scores.is_file() else None
    if corpus == "asvspoof2021_la":
        scores, key = (
            root / "keys" / "LA" / "ASV" / "ASVTorch_Kaldi" / "score.txt",
            root / "keys/LA/ASV/trial_metadata.txt",
        )
        return read_asv_scores(scores, key) if scores.is_file() and key.is_file() else None
    return None


def corpus_roots(corpora: Mapping[str, str], base_dir: str, source: str) -> dict[str, str]:
    """A space file's ``final_eval.corpora`` with each root made absolute (relative to ``base_dir``, where the
    command ran) and checked to exist: run before Ray starts, so a typo never waits for the end of a sweep."""
    out = {}
    for corpus, given in corpora.items():
        root = (Path(base_dir or ".") / Path(given).expanduser()).resolve()
        if not root.exists():
            raise DataRootError(f"{source}: final_eval.corpora.{corpus}: folder not found: {root}")
        out[corpus] = str(root)
    return out


def corpus_data(data: DataConfig, corpus: str, root: Path) -> DataConfig:
    """The checkpoint's data settings (eval mode, window, sample rate) pointed at another corpus root."""
    cleared = replace(data, train_protocol="", dev_protocol="", eval_protocol="", max_train_utterances=0)
    if corpus == "folder":
        return replace(cleared, corpus=corpus, root="", eval_protocol=str(root))
    return replace(cleared, corpus=corpus, root=str(root))


def _stored(path: Path, signature: str, root: str | None = None) -> CorpusResult | None:
    """The result stored at ``path`` when it comes from this checkpoint (and ``root``, unless None)."""
    if not path.is_file():
        return None
    try:
        stored = CorpusResult(**json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError):
        return None  # damaged or from another version: score again
    same = stored.signature == signature and root in (None, stored.root) and Path(stored.score_file).is_file()
    return stored if same else None


def _score_corpus(
    best: TrialInfo, loaded: LoadedModel, corpus: str, root: Path, out_dir: Path, echo: Callable[[str], None]
) -> CorpusResult:
    records = load_split(corpus_data(loaded.config.data, corpus, root), "eval")
    log_eval_access(out_dir, best.best_checkpoint, corpus, str(root))
    score_file = out_dir / f"scores-{corpus}.txt"
    style = SCORE_FORMATS[corpus]
    echo(f"scoring {corpus} ({len(records)} utterances, {root}) with trial {best.trial_id}")
    evaluated = evaluate_records(loaded, records, score_file, style=style, asv=standard_asv_scores(corpus, root))
    if evaluated.eer is None or evaluated.threshold is None:
        raise CblError(f"{corpus} at {root}: the protocol does not hold both bonafide and spoof labels, so no EER")
    breakdowns = [evaluated.attack_breakdown, *evaluated.breakdowns] if evaluated.attack_breakdown else []
    interval = eer_interval_fields("eer", evaluated.scores, evaluated.labels, [r.speaker for r in records], seed=0)
    return CorpusResult(
        corpus=corpus,
        root=str(root),
        checkpoint=str(best.best_checkpoint),
        signature=checkpoint_signature(best.best_checkpoint),
        trials=len(records),
        bonafide=int(evaluated.labels.sum()),
        eer=float(evaluated.eer),
        threshold=float(evaluated.threshold),
        eer_low=float(interval["eer_low"]),
        eer_high=float(interval["eer_high"]),
        ci_speakers=int(interval["eer_ci_speakers"]),
        score_file=str(score_file),
        score_format=style,
        min_tdcf=dict(evaluated.min_tdcf),
        breakdowns=[
            {"title": b.title, "tdcf_form": b.tdcf_form, "rows": [r._asdict() for r in b.rows]} for b in breakdowns
        ],
        tables=result_tables(evaluated),
        scored_at=time.time(),
    )


def cross_corpus_evaluation(
    experiment_dir: Path,
    best: TrialInfo,
    corpora: Mapping[str, str | os.PathLike[str]],
    *,
    echo: Callable[[str], None] = print,
) -> list[CorpusResult]:
    """Score ``best``'s best checkpoint on each corpus (``corpus -> root``) not yet scored by it; write the
    summary of every corpus this checkpoint has scored. Returns the summary's rows."""
    out_dir = experiment_dir / FINAL_DIR
    signature = checkpoint_signature(best.best_checkpoint)
    loaded = None
    for corpus, given in corpora.items():
        root = Path(given).expanduser().resolve()
        path = out_dir / "corpora" / f"{corpus}.json"
        if _stored(path, signature, str(root)) is not None:
            echo(f"{corpus}: already scored by this checkpoint ({path}); not scored again")
            continue
        if not root.exists():
            raise UsageError(f"--on {corpus}={given}: folder not found: {root}")
        loaded = loaded or load_model(best.best_checkpoint)
        result = _score_corpus(best, loaded, corpus, root, out_dir, echo)
        atomic_write_text(path, json.dumps(asdict(result), indent=2))
        echo(f"{corpus}: EER {100 * result.eer:.2f}%  ({result.score_file})")
    rows = _rows_of(out_dir, signature)
    write_summary(out_dir, best, rows)
    return rows


def _rows_of(out_dir: Path, signature: str) -> list[CorpusResult]:
    rows = []
    for path in sorted((out_dir / "corpora").glob("*.json")):
        stored = _stored(path, signature)
        if stored is not None:
            rows.append(stored)
    order = {name: i for i, name in enumerate(PROTOCOL_FORMATS)}
    return sorted(rows, key=lambda r: order.get(r.corpus, len(order)))


def _tdcf_cell(row: CorpusResult) -> str:
    return ", ".join(f"{value:.4f} ({form})" for form, value in sorted(row.min_tdcf.items())) or "-"


def _ci_cell(row: CorpusResult) -> str:
    if row.eer_low is None or row.eer_high is None:
        return "-"
    by = f"{row.ci_speakers} speakers" if row.ci_speakers else "utterances"
    return f"{100 * row.eer_low:.2f}-{100 * row.eer_high:.2f} (by {by})"


def summary_table(rows: list[CorpusResult]) -> str:
    """The Markdown table of the summary: one row per corpus."""
    lines = [
        "| corpus | trials | bonafide | spoof | EER (%) | 95% CI (%) | min t-DCF | score file (format) |",
        "| --- | ---: | ---: | ---: | ---: | --- | --- | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row.corpus} | {row.trials} | {row.bonafide} | {row.trials - row.bonafide} | {100 * row.eer:.2f} "
            f"| {_ci_cell(row)} | {_tdcf_cell(row)} | `{Path(row.score_file).name}` ({row.score_format}) |"
        )
    return "\n".join(lines)


def write_summary(out_dir: Path, best: TrialInfo, rows: list[CorpusResult]) -> None:
    """``summary.md`` (the table, then each corpus's breakdowns) and ``summary.json``, atomically."""
    head = (
        f"# Final evaluation of {out_dir.parent.name}\n\nBest trial {best.trial_id} (dev EER "
        f"{100 * best.best_dev_eer:.2f}% at epoch {best.best_epoch}), checkpoint `{best.best_checkpoint}`. "
        "This checkpoint won the selection on dev; its eval numbers are one run's.\n\n"
    )
    parts = [head + summary_table(rows)]
    parts += [f"## {row.corpus} ({row.root})\n\n```\n{row.tables}\n```" for row in rows]
    summary = {
        "trial_id": best.trial_id,
        "params": best.params,
        "dev_eer": best.best_dev_eer,
        "dev_epoch": best.best_epoch,
        "checkpoint": str(best.best_checkpoint),
        "corpora": [{k: v for k, v in asdict(row).items() if k != "tables"} for row in rows],
    }
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2))
    atomic_write_text(out_dir / "summary.md", "\n\n".join(parts) + "\n")


def evaluate_on_corpora(
    experiment_dir: Path,
    options: list[str] | Mapping[str, str],
    *,
    mode: str = "min",
    echo: Callable[[str], None] = print,
) -> list[CorpusResult]:
    """``final-eval --on CORPUS=ROOT ...`` (a list of options) or a space file's ``final_eval.corpora`` (a
    mapping): score the best checkpoint on each, print the summary table."""
    if isinstance(options, Mapping):
        corpora = dict(options)
    else:
        corpora = {}
        for text in options:
            corpus, root = parse_corpus_option(text)
            if corpus in corpora:
                raise UsageError(f"--on {text!r}: corpus {corpus!r} is given twice; give each corpus once")
            corpora[corpus] = root
    rows = cross_corpus_evaluation(experiment_dir, require_best(experiment_dir, mode), corpora, echo=echo)
    echo(summary_table(rows))
    echo(f"summary: {experiment_dir / FINAL_DIR / 'summary.md'} and summary.json")
    return rows


def evaluate_space_corpora(
    experiment_dir: Path, sweep: Mapping[str, Any], spec: SearchSpace, *, echo: Callable[[str], None] = print
) -> list[CorpusResult]:
    """The end of ``run``: the space file's ``final_eval.corpora`` (``spec``: its SearchSpace), roots relative
    to where the sweep was started."""
    settings = sweep["settings"]
    roots = corpus_roots(spec.final_eval_corpora, settings.get("base_dir", ""), settings["space_source"])
    return evaluate_on_corpora(experiment_dir, roots, mode=spec.mode, echo=echo)
