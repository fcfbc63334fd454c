"""After a sweep: the best trial, ``best_config.yaml``, and the final evaluation on held-out data.

The final evaluation scores the best trial's best checkpoint (chosen by dev EER)
on the eval split, or on any protocol (ASVspoof 2021 LA/DF, In-the-Wild). That run
won the selection, so its eval number is biased optimistically: it is reported on
its own line. With ``seeds = N >= 1`` the best configuration is also trained again
with N fresh seeds (not counting the selection run's) and their eval EER is
reported as mean +- std, with the 95% Student-t interval of the mean and each seed's
value, so that a reader can tell a winner from a lucky seed. With the organisers' ASV scores, min t-DCF is reported too.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cbl.config import apply_overrides, load_config
from cbl.engine import checkpoint_signature, evaluate_records, fit, load_model, records_for, result_tables
from cbl.errors import CblError
from cbl.sweep.store import TrialInfo, best_trial, read_trials
from cbl.uncertainty import format_interval, mean_interval
from cbl.yamlio import atomic_write_text

__all__ = [
    "FINAL_DIR",
    "LOG_FILE",
    "FinalEval",
    "export_best_config",
    "final_evaluation",
    "log_eval_access",
    "require_best",
    "split_source",
]

FINAL_DIR = "final_eval"
LOG_FILE = "log.jsonl"  # one line per scoring of held-out data (log_eval_access)


@dataclass
class FinalEval:
    trial_id: str
    dev_eer: float
    dev_epoch: int
    target: str
    selection: tuple[int, float] | None = None  # (seed, eval EER) of the checkpoint that won the selection
    eers: list[tuple[int, float]] = field(default_factory=list)  # (seed, eval EER) of each fresh seed
    min_tdcf: dict[int, dict[str, float]] = field(default_factory=dict)  # seed -> {form: min t-DCF}, ASV given
    score_files: list[str] = field(default_factory=list)  # the selection run's first
    attack_table: str = ""  # the selection run's per-attack and condition tables
    selection_interval: dict[str, float | int] = field(default_factory=dict)  # eer_low/eer_high/eer_ci_speakers

    @property
    def mean(self) -> float | None:
        return statistics.fmean(e for _, e in self.eers) if self.eers else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(e for _, e in self.eers) if len(self.eers) > 1 else None

    @property
    def mean_ci(self) -> tuple[float, float] | None:
        """The 95% Student-t interval of the fresh seeds' mean EER (2 seeds or more)."""
        if len(self.eers) < 2:
            return None
        interval = mean_interval([e for _, e in self.eers])
        return interval.low, interval.high

    def _tdcf(self, seed: int) -> str:
        forms = self.min_tdcf.get(seed, {})
        return "".join(f", min t-DCF ({form}) {value:.4f}" for form, value in sorted(forms.items()))

    def summary_line(self) -> str:
        """Two lines: the selection run (biased), then the fresh seeds' mean +- std (or how to get them)."""
        if self.selection is None:
            return f"final {self.target}: nothing evaluated"
        seed, eer = self.selection
        interval = format_interval(self.selection_interval, prefix="eer")
        lines = [
            f"selection run (trial {self.trial_id}, seed {seed}): {self.target} EER {100 * eer:.2f}%"
            f"{', ' + interval if interval else ''}{self._tdcf(seed)} (optimistically biased: this run won the "
            "selection on dev)"
        ]
        mean, std = self.mean, self.std
        if mean is None:
            lines.append(
                f"final {self.target}: no fresh seeds (final-eval --seeds N retrains N fresh seeds for an "
                "unbiased mean +- std)"
            )
        else:
            each = ", ".join(f"seed {s}: {100 * e:.2f}%{self._tdcf(s)}" for s, e in self.eers)
            spread = f" +- {100 * std:.2f}%" if std is not None else " (std needs 2 seeds)"
            ci = self.mean_ci
            of_mean = f"; 95% CI of the mean {100 * ci[0]:.2f}-{100 * ci[1]:.2f}%" if ci is not None else ""
            plural = "s" if len(self.eers) > 1 else ""
            lines.append(
                f"final {self.target} EER {100 * mean:.2f}%{spread} over {len(self.eers)} fresh seed{plural} ({each})"
                f"{of_mean}"
            )
        return "\n".join(lines)


def require_best(experiment_dir: Path, mode: str = "min") -> TrialInfo:
    best = best_trial(read_trials(experiment_dir), mode)
    if best is None:
        raise CblError(f"{experiment_dir}: no trial has finished an epoch yet, so there is no best configuration")
    return best


def export_best_config(experiment_dir: Path, best: TrialInfo, dest: Path | None = None) -> Path:
    """Write the best trial's resolved config, with a header saying where it came from."""
    dest = dest or experiment_dir / "best_config.yaml"
    params = ", ".join(f"{k}={v}" for k, v in sorted(best.params.items()))
    header = (
        f"# best configuration of {experiment_dir.name}: trial {best.trial_id}, dev EER "
        f"{100 * best.best_dev_eer:.2f}% at epoch {best.best_epoch}\n# sampled: {params or '(grid point)'}\n"
        f"# train it again: cbl-search train {dest.name}\n"
    )
    return atomic_write_text(dest, header + (best.path / "config.yaml").read_text())


def final_evaluation(
    experiment_dir: Path,
    *,
    seeds: int = 0,
    split: str = "eval",
    protocol: Path | None = None,
    audio_dir: Path | None = None,
    corpus: str | None = None,
    echo: Callable[[str], None] = print,
    mode: str = "min",
    asv: Any = None,
) -> FinalEval:
    """Score the best checkpoint, and ``seeds`` copies retrained with fresh seeds, on the eval split or a protocol.

    ``asv``: the organisers' ASV scores (:func:`cbl.tdcf.read_asv_scores`) for min t-DCF.
    """
    best = require_best(experiment_dir, mode)
    out_dir = experiment_dir / FINAL_DIR
    target = split if protocol is None else protocol.stem
    result = FinalEval(best.trial_id, best.best_dev_eer, best.best_epoch, target)
    checkpoints: list[tuple[int | None, Path]] = [(None, best.best_checkpoint)]  # None: the selection run
    if seeds > 0:
        checkpoints += _retrain(best, seeds, out_dir, echo)
    for seed, ckpt in checkpoints:
        loaded = load_model(ckpt)
        selection = seed is None
        run_seed = loaded.config.train.seed if seed is None else seed
        records = _records(loaded.config, split, protocol, audio_dir, corpus)
        where = str(protocol) if protocol is not None else split_source(loaded.config.data, split)
        log_eval_access(out_dir, ckpt, corpus or loaded.config.data.corpus, where)
        score_file = out_dir / f"scores-{target}-seed{run_seed}.txt"
        evaluated = evaluate_records(loaded, records, score_file, asv=asv)
        if evaluated.eer is None:
            raise CblError(f"{target}: the protocol does not hold both bonafide and spoof labels, so no EER")
        if selection:
            result.selection = (run_seed, float(evaluated.eer))
            result.selection_interval = dict(evaluated.interval)
            result.attack_table = result_tables(evaluated)
        else:
            result.eers.append((run_seed, float(evaluated.eer)))
        if evaluated.min_tdcf:
            result.min_tdcf[run_seed] = dict(evaluated.min_tdcf)
        result.score_files.append(str(score_file))
        role = "selection run" if selection else "fresh seed"
        interval = format_interval(evaluated.interval, prefix="eer")
        echo(f"{role} {run_seed}: {target} EER {100 * evaluated.eer:.2f}% ({interval})  ({score_file})")
    summary = {
        "trial_id": best.trial_id,
        "params": best.params,
        "dev_eer": best.best_dev_eer,
        "dev_epoch": best.best_epoch,
        "target": target,
        "selection": (
            {"seed": result.selection[0], "eer": result.selection[1], **result.selection_interval}
            if result.selection
            else None
        ),
        "eers": result.eers,
        "mean_eer": result.mean,
        "std_eer": result.std,
        "mean_eer_ci": result.mean_ci,
        "min_tdcf": {str(k): v for k, v in result.min_tdcf.items()},
        "score_files": result.score_files,
    }
    atomic_write_text(out_dir / f"summary-{target}.json", json.dumps(summary, indent=2))
    atomic_write_text(
        out_dir / f"summary-{target}.md",
        f"{result.summary_line()}\n\nSelection run (best checkpoint):\n\n```\n{result.attack_table}\n```\n",
    )
    return result


def _records(config: Any, split: str, protocol: Path | None, audio_dir: Path | None, corpus: str | None):
    return records_for(config, None if protocol is not None else split, protocol, audio_dir, corpus)


def _retrain(best: TrialInfo, extra: int, out_dir: Path, echo: Callable[[str], None]) -> list[tuple[int, Path]]:
    """Train the best configuration again with fresh seeds base+1 .. base+extra (each resumable in its own folder)."""
    config = load_config(best.path / "config.yaml")
    out = []
    for offset in range(1, extra + 1):
        seed = config.train.seed + offset
        run_dir = out_dir / f"seed-{seed}"
        echo(f"retraining the best configuration with seed {seed} in {run_dir}")
        fit(apply_overrides(config, {"train.seed": seed}), None, run_dir)
        out.append((seed, run_dir / "checkpoints" / "best.pt"))
    return out


def log_eval_access(out_dir: Path, checkpoint: Path, corpus: str, root: str) -> None:
    """Append one line (time, checkpoint and its signature, corpus, root) to ``log.jsonl``, durably."""
    out_dir.mkdir(parents=True, exist_ok=True)
    entry = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "checkpoint": str(checkpoint),
        "signature": checkpoint_signature(checkpoint),
        "corpus": corpus,
        "root": root,
    }
    with open(out_dir / LOG_FILE, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def split_source(data: Any, split: str) -> str:
    """How the log names a split of the config's corpus: ``ROOT (eval split)``."""
    return f"{data.root or '(built in)'} ({split} split)"
