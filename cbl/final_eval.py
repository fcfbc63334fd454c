"""After a sweep: the best trial, ``best_config.yaml``, and the final evaluation on held-out data.

The final evaluation scores the best trial's best checkpoint (chosen by dev EER)
on the eval split, or on any protocol (ASVspoof 2021 LA/DF, In-the-Wild). With
``seeds > 1`` it also retrains the best configuration with other seeds and reports
eval EER as mean +- std with each seed's value, so that a reader can tell a
winner from a lucky seed.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from cbl.errors import CblError
from cbl.sweep_store import TrialInfo, best_trial, read_trials
from cbl.yamlio import atomic_write_text

__all__ = ["FinalEval", "export_best_config", "final_evaluation", "require_best"]

FINAL_DIR = "final_eval"


@dataclass
class FinalEval:
    trial_id: str
    dev_eer: float
    dev_epoch: int
    target: str
    eers: list[tuple[int, float]] = field(default_factory=list)  # (seed, eval EER)
    score_files: list[str] = field(default_factory=list)
    attack_table: str = ""

    @property
    def mean(self) -> float:
        return statistics.fmean(e for _, e in self.eers)

    @property
    def std(self) -> float:
        return statistics.stdev(e for _, e in self.eers) if len(self.eers) > 1 else 0.0

    def summary_line(self) -> str:
        if len(self.eers) == 1:
            return f"final {self.target} EER {100 * self.eers[0][1]:.2f}% (trial {self.trial_id}, seed {self.eers[0][0]})"
        each = ", ".join(f"seed {s}: {100 * e:.2f}%" for s, e in self.eers)
        return f"final {self.target} EER {100 * self.mean:.2f}% +- {100 * self.std:.2f}% over {len(self.eers)} seeds ({each})"


def require_best(experiment_dir: Path, mode: str = "min") -> TrialInfo:
    best = best_trial(read_trials(experiment_dir), mode)
    if best is None:
        raise CblError(f"{experiment_dir}: no trial has finished an epoch yet, so there is no best configuration")
    return best


def export_best_config(experiment_dir: Path, best: TrialInfo, dest: Path | None = None) -> Path:
    """Write the best trial's resolved config, with a header saying where it came from."""
    dest = dest or experiment_dir / "best_config.yaml"
    params = ", ".join(f"{k}={v}" for k, v in sorted(best.params.items()))
    header = (f"# best configuration of {experiment_dir.name}: trial {best.trial_id}, dev EER "
              f"{100 * best.best_dev_eer:.2f}% at epoch {best.best_epoch}\n# sampled: {params or '(grid point)'}\n"
              f"# train it again: cbl-search train {dest.name}\n")
    return atomic_write_text(dest, header + (best.path / "config.yaml").read_text())


def final_evaluation(
    experiment_dir: Path,
    *,
    seeds: int = 1,
    split: str = "eval",
    protocol: Path | None = None,
    audio_dir: Path | None = None,
    corpus: str | None = None,
    echo: Callable[[str], None] = print,
    mode: str = "min",
) -> FinalEval:
    """Score the best checkpoint (and ``seeds - 1`` retrained copies) on the eval split or a protocol."""
    from cbl.evaluate import evaluate_records, load_model
    from cbl.metrics import format_attack_table

    best = require_best(experiment_dir, mode)
    out_dir = experiment_dir / FINAL_DIR
    target = split if protocol is None else protocol.stem
    result = FinalEval(best.trial_id, best.best_dev_eer, best.best_epoch, target)
    checkpoints = [(None, best.best_checkpoint)]
    if seeds > 1:
        checkpoints += _retrain(best, seeds - 1, out_dir, echo)
    for seed, ckpt in checkpoints:
        loaded = load_model(ckpt)
        seed = loaded.config.train.seed if seed is None else seed
        records = _records(loaded.config, split, protocol, audio_dir, corpus)
        score_file = out_dir / f"scores-{target}-seed{seed}.txt"
        evaluated = evaluate_records(loaded, records, score_file)
        if evaluated.eer is None:
            raise CblError(f"{target}: the protocol does not hold both bonafide and spoof labels, so no EER")
        result.eers.append((seed, float(evaluated.eer)))
        result.score_files.append(str(score_file))
        if not result.attack_table:
            result.attack_table = format_attack_table(evaluated.attack_rows)
        echo(f"seed {seed}: {target} EER {100 * evaluated.eer:.2f}%  ({score_file})")
    summary = {"trial_id": best.trial_id, "params": best.params, "dev_eer": best.best_dev_eer,
               "dev_epoch": best.best_epoch, "target": target, "eers": result.eers,
               "mean_eer": result.mean, "std_eer": result.std, "score_files": result.score_files}
    atomic_write_text(out_dir / f"summary-{target}.json", json.dumps(summary, indent=2))
    atomic_write_text(out_dir / f"summary-{target}.md",
                      f"{result.summary_line()}\n\nPer attack (best checkpoint):\n\n```\n{result.attack_table}\n```\n")
    return result


def _records(config: Any, split: str, protocol: Path | None, audio_dir: Path | None, corpus: str | None):
    from cbl.evaluate import records_for

    return records_for(config, None if protocol is not None else split, protocol, audio_dir, corpus)


def _retrain(best: TrialInfo, extra: int, out_dir: Path, echo: Callable[[str], None]) -> list[tuple[int, Path]]:
    """Train the best configuration again with seeds base+1 .. base+extra (each resumable in its own folder)."""
    from cbl.config import apply_overrides, load_config
    from cbl.train import fit

    config = load_config(best.path / "config.yaml")
    out = []
    for offset in range(1, extra + 1):
        seed = config.train.seed + offset
        run_dir = out_dir / f"seed-{seed}"
        echo(f"retraining the best configuration with seed {seed} in {run_dir}")
        fit(apply_overrides(config, {"train.seed": seed}), None, run_dir)
        out.append((seed, run_dir / "checkpoints" / "best.pt"))
    return out
