"""``cbl-search report``: one experiment folder in, ``report.md`` + ``report.html`` + PNG figures out.

Reads only what the sweep left on disk (cbl.sweep.store), so it runs without Ray
and while a sweep is still going. Sections: results, per-value marginals,
importance, learning curves, embedding diagnostics per trial and epoch
(:mod:`cbl.report.embeddings`), then the best trial and its counterpart (the best
``ce_only`` trial, or the best cluster-loss trial when ``ce_only`` won) on the
eval split: DET curves, per-attack EER with seen/unseen attacks, and 2-D
projections of dev embeddings (also sent to TensorBoard's projector).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cbl.errors import CblError
from cbl.report import figures
from cbl.report.comparisons import comparison_blocks
from cbl.report.document import Bullets, Code, Heading, Paragraph, Table, Writer, to_html, to_markdown
from cbl.report.embeddings import diagnostics_section, embedding_section
from cbl.report.models import ModelView, analyse_trial, eer_or_nan, loss_type, write_projector
from cbl.report.tables import (
    format_eer,
    format_value,
    importance_table,
    marginal_rows,
    marginal_table,
    natural_key,
    param_importance,
    rank_trials,
    results_table,
    searched_keys,
)
from cbl.sweep.space import Param, parse_search_space
from cbl.sweep.store import TrialInfo, best_epoch_line, best_trial, read_sweep, read_trials, require_experiment
from cbl.uncertainty import format_interval
from cbl.yamlio import atomic_write_text

__all__ = ["PROJECTOR_DIR", "REPORT_DIR", "ReportFiles", "build_report"]

REPORT_DIR = "report"
PROJECTOR_DIR = "projector"


@dataclass
class ReportFiles:
    markdown: Path
    html: Path
    figures: list[Path] = field(default_factory=list)
    projector: Path | None = None
    warnings: list[str] = field(default_factory=list)


def _space(sweep: dict[str, Any], warnings: list[str]) -> tuple[list[Param], str, dict[str, Any]]:
    """The sweep's parameters and mode from sweep.json (none when it holds no readable settings)."""
    settings = sweep.get("settings") or {}
    if not settings.get("space_data"):
        warnings.append("sweep.json holds no search space: parameters are taken from the trials themselves")
        return [], "min", settings
    try:
        spec = parse_search_space(
            settings["space_data"], source=settings.get("space_source", "sweep.json"), demo=bool(settings.get("demo"))
        )
    except CblError as exc:  # a space written by an older cbl: the trials still say what they sampled
        warnings.append(f"the sweep's search space no longer parses ({exc}): parameters are taken from the trials")
        return [], "min", settings
    return spec.params, spec.mode, {**settings, "algorithm": spec.algorithm, "scheduler": spec.scheduler}


# short names for legends and one-line summaries ("" = the value alone says what it is)
_SHORT = {"loss.type": "", "loss.num_clusters": "K", "loss.alpha": "alpha", "model.pooling": "pool", "optim.lr": "lr"}


def _short_params(trial: TrialInfo, keys: list[str]) -> str:
    """``combined K=10 alpha=0.5 pool=mean lr=0.003``, in search-space order."""
    ordered = [k for k in keys if k in trial.params] + sorted(set(trial.params) - set(keys))
    parts = []
    for k in ordered:
        name = _SHORT.get(k, k.split(".")[-1])
        parts.append(f"{name}={format_value(trial.params[k])}" if name else format_value(trial.params[k]))
    return " ".join(parts)


def build_report(
    experiment_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    max_points: int = 2000,
    models: bool = True,
    echo: Callable[[str], None] = print,
) -> ReportFiles:
    """Write the report of an experiment folder; return the paths written.

    ``max_points`` caps the dev utterances embedded for the projection; ``models=False``
    skips every part that loads a checkpoint (tables and learning curves only).
    """
    experiment_dir = require_experiment(experiment_dir)
    out = Path(out_dir) if out_dir is not None else experiment_dir / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    sweep = read_sweep(experiment_dir)
    warnings: list[str] = []
    params, mode, settings = _space(sweep, warnings)
    trials = read_trials(experiment_dir)
    keys = searched_keys(params, trials)
    w = Writer(out)
    best = best_trial(trials, mode)
    _header_section(w, experiment_dir, sweep, settings, trials, mode, keys, best, warnings)
    _table_sections(w, trials, keys, {p.key: p for p in params}, mode)
    _learning_curve_section(w, trials, keys, best, mode)
    diagnostics_section(w, rank_trials(trials, mode), keys, mode)
    projector = None
    if models and best is not None:
        try:
            views = _analyse(experiment_dir, trials, best, mode, out / "cache", max_points, echo)
            projector = _model_sections(w, experiment_dir, views, keys)
        except (CblError, OSError) as exc:  # e.g. the dataset is not on this machine: keep the sweep tables
            message = f"the model sections are missing: {exc}"
            warnings.append(message)
            echo(f"warning: {message}")
            w.add(Heading(2, "Best models on the eval split"), Paragraph(f"Not available: {exc}"))

    md = atomic_write_text(out / "report.md", to_markdown(w.blocks))
    page = atomic_write_text(out / "report.html", to_html(w.blocks, f"cbl sweep report: {experiment_dir.name}"))
    return ReportFiles(md, page, w.figures, projector, warnings)


def _header_section(
    w: Writer,
    experiment_dir: Path,
    sweep: dict[str, Any],
    settings: dict[str, Any],
    trials: list[TrialInfo],
    mode: str,
    keys: list[str],
    best: TrialInfo | None,
    warnings: list[str],
) -> None:
    """The title, what the sweep is, the demo notice, notes, and the best trial in one line."""
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state] = counts.get(t.state, 0) + 1
    total = sweep.get("total_trials")
    w.add(
        Heading(1, f"Sweep report: {experiment_dir.name}"),
        Paragraph(
            f"Experiment `{experiment_dir}` (sweep {sweep.get('state', 'state unknown')}): "
            f"{len(trials)}{f' of {total}' if total else ''} trials started "
            f"({', '.join(f'{n} {s}' for s, n in sorted(counts.items())) or 'none'}); "
            f"search {settings.get('algorithm', '?')}, scheduler {settings.get('scheduler', '?')}, "
            f"metric dev EER ({mode}). Written {time.strftime('%Y-%m-%d %H:%M')}."
        ),
    )
    if settings.get("demo"):
        w.add(
            Paragraph(
                "**Demo run**: synthetic corpus and a tiny wav2vec2 with random weights; a check that the "
                "pipeline runs end to end, not a result to report."
            )
        )
    if warnings:
        w.add(Bullets([f"Note: {message}." for message in warnings]))
    if best is not None:
        w.add(
            Paragraph(
                f"**Best trial** `{best.trial_id}`: dev EER {format_eer(best.best_dev_eer)} "
                f"({format_interval(best_epoch_line(best)) or 'no CI recorded'}) at epoch "
                f"{best.best_epoch} ({_short_params(best, keys) or 'no sampled parameters'})."
            )
        )


def _table_sections(w: Writer, trials: list[TrialInfo], keys: list[str], by_key: dict[str, Param], mode: str) -> None:
    """Results, dev EER per parameter value, hyperparameter importance."""
    w.add(
        Heading(2, "Results"),
        Paragraph(
            "Every trial, best dev EER first. State: `finished` ran all epochs, `stopped` was stopped "
            "early by ASHA, `error` failed; `-` marks a parameter the trial did not sample."
        ),
        results_table(trials, keys, mode),
    )
    errored = [t for t in trials if t.state == "error"]
    if errored:
        w.add(Bullets([f"`{t.trial_id}` error: {t.error or 'no reason recorded'}" for t in errored]))
    rows, notes = marginal_rows(trials, keys, by_key, mode)
    w.add(
        Heading(2, "Dev EER per parameter value"),
        Paragraph(
            "Best and median of the trials' best dev EER for each value of each searched parameter, over "
            "every trial that reported at least one epoch (stopped trials included: their EER comes from "
            "fewer epochs, which pulls medians up)."
        ),
    )
    if rows:
        w.add(marginal_table(rows))
    if notes:
        w.add(Bullets(notes))
    w.add(*comparison_blocks(trials, best_trial(trials, mode), rows))
    importance = param_importance(trials, keys, by_key, mode)
    w.add(Heading(2, "Hyperparameter importance"))
    if importance.values:
        w.add(
            Paragraph(
                f"fANOVA (`optuna.importance`, seed 0) on the {importance.trials} finished trials: the "
                "share of the variance of the best dev EER each parameter explains. With few trials it is "
                "a hint, not a finding."
            ),
            importance_table(importance),
        )
        w.figure(
            "importance.png", figures.importance_bars(importance.values, importance.trials), "hyperparameter importance"
        )
    else:
        w.add(Paragraph(f"Not computed: {importance.reason}."))
    if importance.left_out:
        w.add(Paragraph("Left out of the importance study:"), Bullets(importance.left_out))


def _learning_curve_section(
    w: Writer, trials: list[TrialInfo], keys: list[str], best: TrialInfo | None, mode: str
) -> None:
    """Dev EER per epoch of every trial, the best one marked."""
    w.add(Heading(2, "Learning curves"))
    ranked = rank_trials(trials, mode)
    if any(t.history for t in ranked):
        curves = [
            (
                f"{t.trial_id} {_short_params(t, keys)}".strip(),
                t.state,
                [h["epoch"] for h in t.history],
                [h["dev_eer"] for h in t.history],
            )
            for t in ranked
        ]
        best_label = next((c[0] for c, t in zip(curves, ranked, strict=True) if best is not None and t is best), None)
        band = [
            (h["epoch"], h["dev_eer_low"], h["dev_eer_high"])
            for h in (best.history if best else [])
            if "dev_eer_low" in h
        ]
        w.figure(
            "learning_curves.png",
            figures.learning_curves(curves, best_label, band),
            "dev EER per epoch",
            "Dashed lines ending in a large X: trials that ASHA stopped early. Shaded: the best trial's 95% CI.",
        )
    else:
        w.add(Paragraph("No trial has finished an epoch yet."))


def _analyse(
    experiment_dir: Path,
    trials: list[TrialInfo],
    best: TrialInfo,
    mode: str,
    cache: Path,
    max_points: int,
    echo: Callable[[str], None],
) -> list[ModelView]:
    """The best trial and its counterpart: the best ce_only trial, or the best cluster-loss one if ce_only won."""
    best_type = loss_type(best)
    if best_type == "ce_only":
        other = best_trial([t for t in trials if loss_type(t) not in ("ce_only", "?")], mode)
        other_role = "best cluster-loss trial"
    else:
        other = best_trial([t for t in trials if loss_type(t) == "ce_only"], mode)
        other_role = "best ce_only trial"
    chosen = [(best, "best trial")] + ([(other, other_role)] if other is not None else [])
    return [analyse_trial(t, role, experiment_dir, cache, max_points=max_points, echo=echo) for t, role in chosen]


def _model_sections(w: Writer, experiment_dir: Path, views: list[ModelView], keys: list[str]) -> Path:
    """The best models on eval (a table, DET curves), per attack, their dev embeddings; the projector's folder."""
    seen = set().union(*(v.seen_attacks for v in views))
    w.add(
        Heading(2, "Best models on the eval split"),
        Paragraph(
            "Each trial's best checkpoint (by dev EER) scored on the eval split. **Seen** attacks occur "
            "among the spoofs of the train split; **unseen** ones do not (seen here: "
            f"{', '.join(sorted(seen, key=natural_key)) or 'none'})."
        ),
    )
    rows = []
    per_attack: list[tuple[str, dict[str, float]]] = []
    for v in views:
        eval_attacks = np.asarray(v.eval_attacks, dtype=object)
        is_seen = np.array([a in v.seen_attacks for a in v.eval_attacks])
        rows.append(
            [
                v.role,
                v.trial.trial_id,
                v.loss_type,
                _short_params(v.trial, keys) or "-",
                f"{format_eer(v.trial.best_dev_eer)} (epoch {v.trial.best_epoch})",
                format_eer(eer_or_nan(v.eval_scores, v.eval_labels)),
                format_eer(eer_or_nan(v.eval_scores, v.eval_labels, is_seen)),
                format_eer(eer_or_nan(v.eval_scores, v.eval_labels, ~is_seen)),
            ]
        )
        kinds = sorted(
            {a for a, label in zip(v.eval_attacks, v.eval_labels, strict=True) if label == 0}, key=natural_key
        )
        eers = {a: eer_or_nan(v.eval_scores, v.eval_labels, eval_attacks == a) for a in kinds}
        eers["pooled"] = eer_or_nan(v.eval_scores, v.eval_labels)
        per_attack.append((f"{v.trial.trial_id} ({v.loss_type})", eers))
    w.add(
        Table(
            [
                "role",
                "trial",
                "loss type",
                "parameters",
                "dev EER",
                "eval EER",
                "eval EER, seen attacks",
                "eval EER, unseen attacks",
            ],
            rows,
            right=(4, 5, 6, 7),
        )
    )
    w.add(Paragraph("Score files: " + "; ".join(f"`{v.score_source}`" for v in views) + "."))
    w.figure(
        "det_eval.png",
        figures.det_curves(
            [
                (
                    f"{v.trial.trial_id} ({v.loss_type})",
                    v.eval_scores[v.eval_labels == 1],
                    v.eval_scores[v.eval_labels == 0],
                )
                for v in views
            ]
        ),
        "DET curves on the eval split",
    )
    _attack_section(w, views, per_attack, seen)
    for v in views:
        embedding_section(w, v)
    projector = write_projector(experiment_dir / PROJECTOR_DIR, views)
    w.add(
        Heading(3, "TensorBoard projector"),
        Paragraph(
            "The same dev embeddings (and the centers) with metadata `label`, `attack` and "
            "`nearest_center` are in the projector; open its tab with:"
        ),
        Code(f"tensorboard --logdir {projector}", "sh"),
    )
    return projector


def _attack_section(
    w: Writer, views: list[ModelView], per_attack: list[tuple[str, dict[str, float]]], seen: set[str]
) -> None:
    """Per-attack EER of each model on eval, with whether the attack was seen in train: a table and bars."""
    attacks = sorted({a for _, eers in per_attack for a in eers if a != "pooled"}, key=natural_key)
    table_rows = [
        [
            a,
            "yes" if a in seen else "no",
            str(
                sum(
                    1
                    for x, label in zip(views[0].eval_attacks, views[0].eval_labels, strict=True)
                    if label == 0 and x == a
                )
            ),
            *(format_eer(eers.get(a, math.nan)) for _, eers in per_attack),
        ]
        for a in attacks
    ]
    table_rows.append(
        [
            "all spoofs",
            "-",
            str(int((views[0].eval_labels == 0).sum())),
            *(format_eer(eers["pooled"]) for _, eers in per_attack),
        ]
    )
    w.add(
        Heading(3, "Per-attack EER"),
        Table(
            ["attack", "seen in train", "spoofs", *(label for label, _ in per_attack)],
            table_rows,
            right=tuple(range(2, 3 + len(per_attack))),
        ),
    )
    w.figure("attack_eer_eval.png", figures.attack_bars(per_attack, seen), "per-attack EER on the eval split")
