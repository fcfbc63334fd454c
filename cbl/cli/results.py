"""Commands that read an experiment, also while its sweep runs: ``status``, ``tensorboard``, ``report``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click

from cbl.cli.options import experiment_argument
from cbl.errors import CblError

__all__ = [
    "COMMANDS",
    "echo_cache",
    "echo_collapse",
    "echo_status_table",
    "report_command",
    "status_command",
    "tensorboard_command",
]


@click.command("status")
@experiment_argument
def status_command(experiment_dir: Path) -> None:
    """Table of trials (state, parameters, epochs, best dev EER and its 95% CI), best first; works while a sweep runs.

    The top trials are compared with the best on the same dev utterances (paired bootstrap of the dev EER
    difference: points, its 95% CI, a p-value).
    """
    from cbl.sweep.store import read_sweep, read_trials, require_experiment

    experiment_dir = require_experiment(experiment_dir)
    sweep = read_sweep(experiment_dir)
    click.echo(f"experiment {experiment_dir.name}: {sweep.get('state', '?')}")
    echo_status_table(read_trials(experiment_dir), sweep.get("total_trials"))
    echo_cache(experiment_dir)


def echo_status_table(trials: list, total: int | None) -> None:
    """The trials table with the top trials compared to the best (paired bootstrap), and why a comparison is missing."""
    from cbl.sweep.compare import vs_best_column
    from cbl.sweep.store import format_status_table

    vs_best, notes = vs_best_column(trials)
    click.echo(format_status_table(trials, total=total, vs_best=vs_best))
    for note in notes:
        click.echo(note)


def echo_collapse(trials: list) -> None:
    """One warning line when trials of the sweep ended with a collapsed embedding (see cbl.diagnostics)."""
    from cbl.diagnostics import sweep_collapse_warning

    line = sweep_collapse_warning(trials)
    if line:
        click.echo(line, err=True)


def echo_cache(experiment_dir: Path) -> None:
    """The sweep's frozen-feature cache and its size, when it has one (also one set by train.feature_cache_dir)."""
    from cbl.engine import format_cache_line

    roots = {experiment_dir / "feature_cache"}
    for config_path in sorted((experiment_dir / "trials").glob("*/config.yaml"))[:1]:
        try:
            from cbl.config import load_config

            chosen = load_config(config_path).train.feature_cache_dir
        except CblError:
            continue
        if chosen:
            roots.add(Path(chosen))
    for root in sorted(roots):
        line = format_cache_line(root)
        if line:
            click.echo(line)


@click.command("tensorboard")
@experiment_argument
@click.option("--port", type=int, default=6006, show_default=True)
@click.option("--print-only", is_flag=True, help="Print the command instead of starting TensorBoard.")
def tensorboard_command(experiment_dir: Path, port: int, print_only: bool) -> None:
    """Start TensorBoard on an experiment: one run per trial, HParams dashboard for comparing them."""
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(experiment_dir), "--port", str(port)]
    click.echo(f"tensorboard --logdir {experiment_dir} --port {port}")
    if not print_only:
        subprocess.run(command, check=False)  # a list, no shell: the path is never interpreted


@click.command("report")
@experiment_argument
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Report folder (default: EXPERIMENT_DIR/report).",
)
@click.option(
    "--max-points",
    type=click.IntRange(min=10),
    default=2000,
    show_default=True,
    help="Dev utterances (a fixed random sample) embedded for the 2-D projection and the projector.",
)
@click.option("--no-models", is_flag=True, help="Only the sweep tables and learning curves: load no checkpoint.")
def report_command(experiment_dir: Path, out_dir: Path | None, max_points: int, no_models: bool) -> None:
    """Write report.md, report.html and figures for a sweep (works without Ray, also while it runs).

    Results and per-value tables, hyperparameter importance, learning curves; for the best
    trial and the best ce_only trial: DET curves, per-attack EER, dev embeddings (also in
    TensorBoard's projector under EXPERIMENT_DIR/projector).
    """
    from cbl.report import build_report
    from cbl.sweep.store import require_experiment

    experiment_dir = require_experiment(experiment_dir)
    files = build_report(experiment_dir, out_dir, max_points=max_points, models=not no_models, echo=click.echo)
    click.echo(f"report written: {files.markdown} and {files.html} ({len(files.figures)} figures)")
    if files.projector is not None:
        click.echo(f"embeddings for the projector: tensorboard --logdir {files.projector}")


COMMANDS = (status_command, tensorboard_command, report_command)
