"""Reporters for a single run: a one-line summary per epoch and TensorBoard event files.

(A sweep's trials report through ``tune.report`` instead: see :mod:`cbl.sweep.trial`.)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cbl.config import ExperimentConfig, config_to_dict
from cbl.uncertainty import format_interval

__all__ = ["ConsoleReporter", "flat_hparams", "format_epoch_line"]


def format_epoch_line(metrics: dict[str, Any], epochs: int) -> str:
    """``epoch 3/10  dev EER 12.50% (95% CI 10.10-14.90%) (best 11.20% @2)  loss 0.4312 (att ...)  8.1s``."""
    interval = f"({format_interval(metrics)}) " if format_interval(metrics) else ""
    line = (
        f"epoch {metrics['epoch']}/{epochs}  dev EER {100 * metrics['dev_eer']:.2f}% {interval}"
        f"(best {100 * metrics['best_dev_eer']:.2f}% @{metrics['best_epoch']})  "
        f"loss {metrics['train_loss']:.4f} (att {metrics['train_attraction']:.3f} "
        f"rep {metrics['train_repulsion']:.3f} ce {metrics['train_ce']:.3f})  "
        f"{metrics['epoch_seconds']:.1f}s"
    )
    return line


def flat_hparams(config: ExperimentConfig) -> dict[str, Any]:
    """Dotted key -> value, for TensorBoard's HParams dashboard."""
    return {
        f"{section}.{name}": value
        for section, fields in config_to_dict(config).items()
        for name, value in fields.items()
    }


class ConsoleReporter:
    """Prints one line per epoch and writes every numeric metric to TensorBoard under ``run_dir``.

    The event writer opens at the first report, so a run that fails before its
    first epoch (no dataset, bad checkpoint) leaves no event file behind.
    """

    def __init__(self, config: ExperimentConfig, run_dir: Path, echo: Callable[[str], None] = print) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.echo = echo
        self.writer: Any = None
        self.last: dict[str, Any] = {}

    def _open(self) -> Any:
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(self.run_dir))
            # the dev EER drawn with its 95% CI as a band (Custom Scalars tab); the ends are scalars too
            self.writer.add_custom_scalars_marginchart(
                ["dev_eer", "dev_eer_low", "dev_eer_high"], category="dev EER", title="dev EER with its 95% CI"
            )
        return self.writer

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path) -> None:
        writer = self._open()
        step = int(metrics["epoch"])
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                writer.add_scalar(key, value, step)
        writer.flush()
        self.last = metrics
        self.echo(format_epoch_line(metrics, self.config.train.epochs))

    def close(self) -> None:
        """Write the run's hparams with its final metrics (one row in the HParams dashboard).

        Only a run that reached its last epoch writes the row: an interrupted run
        writes it when its resume finishes, so the dashboard never shows it twice.
        """
        if self.writer is None:
            return
        if self.last and int(self.last.get("epoch", 0)) >= self.config.train.epochs:
            self.writer.add_hparams(
                flat_hparams(self.config),
                {"hparam/best_dev_eer": self.last["best_dev_eer"], "hparam/dev_eer": self.last["dev_eer"]},
                run_name=".",
            )
        self.writer.close()
