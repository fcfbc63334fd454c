"""What a sweep leaves on disk, read without Ray: trials, their states and metrics, the best one.

Layout of an experiment folder (``<storage>/<name>/``)::

    sweep.json               how the sweep was started (space file, --demo, --set, trial count), its state,
                             and final_eval: pending | done | skipped (resume redoes a pending one)
    scheduler_state.json     ASHA's rungs and stopped trials (cbl.sweep.asha)
    trials/<trial_id>/       one folder per trial, written by the trial itself:
        trial.json           sampled parameters, state (running|finished|stopped|error), error reason
        config.yaml          the trial's resolved config
        metrics.jsonl        one line per epoch
        checkpoints/{last,previous,best}.pt   (previous: the fallback if last.pt is damaged)
    trial_<trial_id>/        Ray's own trial folder (TensorBoard events, progress.csv, params.json)
    best_config.yaml         the best trial's resolved config (after the sweep)
    final_eval/              scores and summary of the final evaluation
    tuner.pkl, experiment_state-*.json, searcher-state-*.pkl   Ray's state for resume
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cbl.engine import read_history
from cbl.errors import UsageError
from cbl.uncertainty import format_range
from cbl.yamlio import atomic_write_text

__all__ = [
    "SWEEP_FILE",
    "TRIALS_DIR",
    "TrialInfo",
    "best_epoch_line",
    "best_trial",
    "diagnostics_cells",
    "format_param",
    "format_status_table",
    "rank_trials",
    "read_sweep",
    "read_trials",
    "require_experiment",
    "trial_dir",
    "write_sweep",
    "write_trial_state",
]

SWEEP_FILE = "sweep.json"
TRIALS_DIR = "trials"


@dataclass
class TrialInfo:
    trial_id: str
    params: dict[str, Any]
    state: str
    epochs: int
    best_dev_eer: float
    best_epoch: int
    last_dev_eer: float
    error: str
    path: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    final: bool = False  # an error with no retry left (the driver marks it; a trial's own error may be retried)

    @property
    def best_checkpoint(self) -> Path:
        return self.path / "checkpoints" / "best.pt"


def require_experiment(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if not (p / SWEEP_FILE).is_file():
        raise UsageError(f"{p}: not a cbl experiment folder (no {SWEEP_FILE}); give the folder `run` created")
    return p


def read_sweep(experiment_dir: Path) -> dict[str, Any]:
    return json.loads((experiment_dir / SWEEP_FILE).read_text())


def write_sweep(experiment_dir: Path, data: dict[str, Any]) -> None:
    atomic_write_text(experiment_dir / SWEEP_FILE, json.dumps(data, indent=2))


def trial_dir(experiment_dir: Path, trial_id: str) -> Path:
    return experiment_dir / TRIALS_DIR / trial_id


def write_trial_state(path: Path, **fields: Any) -> None:
    """Merge ``fields`` into ``trial.json`` (atomic)."""
    file = path / "trial.json"
    data = json.loads(file.read_text()) if file.is_file() else {}
    data.update(fields)
    path.mkdir(parents=True, exist_ok=True)
    atomic_write_text(file, json.dumps(data, indent=2, sort_keys=True))


def read_trials(experiment_dir: Path) -> list[TrialInfo]:
    """Every trial that has started, with its state and metrics (works while a sweep runs)."""
    root = experiment_dir / TRIALS_DIR
    out: list[TrialInfo] = []
    if not root.is_dir():
        return out
    for path in sorted(p for p in root.iterdir() if p.is_dir()):
        try:
            meta = json.loads((path / "trial.json").read_text())
        except (OSError, ValueError):
            meta = {}
        history = read_history(path)
        eers = [h["dev_eer"] for h in history]
        best = min(range(len(eers)), key=eers.__getitem__) if eers else -1
        out.append(
            TrialInfo(
                trial_id=path.name,
                params=meta.get("params", {}),
                state=meta.get("state", "pending"),
                epochs=len(history),
                best_dev_eer=eers[best] if eers else math.nan,
                best_epoch=history[best]["epoch"] if eers else 0,
                last_dev_eer=eers[-1] if eers else math.nan,
                error=meta.get("error", ""),
                path=path,
                history=history,
                final=bool(meta.get("ended")),
            )
        )
    return out


def _sort_key(trial: TrialInfo, mode: str) -> tuple[int, float]:
    if math.isnan(trial.best_dev_eer):
        return (1, 0.0)
    return (0, trial.best_dev_eer if mode == "min" else -trial.best_dev_eer)


def rank_trials(trials: list[TrialInfo], mode: str = "min") -> list[TrialInfo]:
    """Trials with a best checkpoint and a dev EER, best first (the order :func:`best_trial` picks from)."""
    return sorted(
        (t for t in trials if t.state != "lost" and t.best_checkpoint.is_file() and not math.isnan(t.best_dev_eer)),
        key=lambda t: _sort_key(t, mode),
    )


def best_trial(trials: list[TrialInfo], mode: str = "min") -> TrialInfo | None:
    """The trial with the best dev EER at any epoch, among those with a best checkpoint."""
    ranked = rank_trials(trials, mode)
    return ranked[0] if ranked else None


def format_param(value: Any) -> str:
    """A sampled parameter's value as status tables and trial lines show it: floats to 3 significant digits."""
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def best_epoch_line(trial: TrialInfo) -> dict[str, Any]:
    """The history line of the trial's best epoch ({} when it has none)."""
    return next((h for h in trial.history if h.get("epoch") == trial.best_epoch), {})


def diagnostics_cells(metrics: dict[str, Any] | None) -> list[str]:
    """The status table's diagnostics of one epoch: empty centers, bonafide/spoof similarity, spread ("-" if absent).

    ``empty``: centers holding no dev bonafide, of K; ``sim b/s``: mean cosine of
    dev bonafide and spoof to the nearest center; ``mean cos``: mean pairwise
    cosine of all dev embeddings (near 1 = collapsed); ``rank``: their effective rank.
    """
    metrics = metrics or {}
    sizes = metrics.get("cluster_sizes")
    empty = (
        f"{metrics['cluster_empty_clusters']}/{len(sizes)}"
        if isinstance(sizes, list) and "cluster_empty_clusters" in metrics
        else "-"
    )
    bonafide, spoof = metrics.get("cluster_bonafide_similarity"), metrics.get("cluster_spoof_similarity")
    similarity = f"{bonafide:.2f}/{spoof:.2f}" if isinstance(bonafide, float) and isinstance(spoof, float) else "-"
    cosine, rank = metrics.get("embedding_mean_cosine"), metrics.get("embedding_effective_rank")
    return [
        empty,
        similarity,
        f"{cosine:.2f}" if isinstance(cosine, float) else "-",
        f"{rank:.1f}" if isinstance(rank, float) else "-",
    ]


DIAGNOSTICS_HEADER = ["empty", "sim b/s", "mean cos", "rank"]


def format_status_table(
    trials: list[TrialInfo], mode: str = "min", total: int | None = None, vs_best: dict[str, str] | None = None
) -> str:
    """A plain-text table of trials sorted by best dev EER, with its 95% CI and the last epoch's diagnostics.

    ``vs_best``: trial id -> that column.
    """
    keys = sorted({k for t in trials for k in t.params})
    compared = ["vs best: points [95% CI] p"] if vs_best else []
    header = ["trial", "state", "epochs", "best dev EER", "95% CI", "@epoch", *compared, *DIAGNOSTICS_HEADER, *keys]
    rows = [header]
    for t in sorted(trials, key=lambda t: _sort_key(t, mode)):
        eer = "-" if math.isnan(t.best_dev_eer) else f"{100 * t.best_dev_eer:.2f}%"
        rows.append(
            [
                t.trial_id,
                t.state,
                str(t.epochs),
                eer,
                format_range(best_epoch_line(t)) or "-",
                str(t.best_epoch) if t.epochs else "-",
                *([vs_best.get(t.trial_id, "")] if vs_best else []),
                *diagnostics_cells(t.history[-1] if t.history else None),
                *(format_param(t.params[k]) if k in t.params else "-" for k in keys),
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state] = counts.get(t.state, 0) + 1
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    of = f" of {total}" if total else ""
    lines.append(f"{len(trials)}{of} trials started: {summary or 'none'}")
    errors = [t for t in trials if t.state == "error" and t.error]
    for t in errors:
        lines.append(f"  {t.trial_id} error: {t.error}")
    return "\n".join(lines)
