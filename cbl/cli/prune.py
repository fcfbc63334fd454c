"""``cbl-search prune``: apply the checkpoint retention policy (:mod:`cbl.sweep.retention`) to an experiment."""

from __future__ import annotations

from pathlib import Path

import click

from cbl.cli.options import experiment_argument

__all__ = ["COMMANDS", "prune_command"]


@click.command("prune")
@experiment_argument
@click.option(
    "--keep-best",
    type=click.IntRange(min=1),
    default=None,
    help="Ended trials whose best.pt is kept (default: the space file's checkpoints.keep_best, else 3).",
)
@click.option("--dry-run", is_flag=True, help="List what would be removed; remove nothing.")
def prune_command(experiment_dir: Path, keep_best: int | None, dry_run: bool) -> None:
    """Remove the checkpoints an experiment no longer needs, and say how much that freed.

    Ended trials lose their optimizer state (last.pt, previous.pt); only the best K keep best.pt, and
    the final evaluation's trial always does. Running or resumable trials are not touched.
    """
    from cbl.engine.footprint import format_bytes
    from cbl.errors import CblError
    from cbl.sweep.lock import experiment_lock
    from cbl.sweep.retention import plan_prune, prune_experiment
    from cbl.sweep.settings import SweepSettings
    from cbl.sweep.store import read_sweep, require_experiment

    experiment_dir = require_experiment(experiment_dir.resolve())
    with experiment_lock(experiment_dir):  # a driver running on it is refused: it prunes by itself
        sweep = read_sweep(experiment_dir)
        mode, configured = "min", 3
        try:
            spec = SweepSettings(**{**sweep["settings"], "experiment_dir": str(experiment_dir)}).space()
            mode, configured = spec.mode, spec.keep_best
        except (CblError, KeyError, TypeError):
            pass  # a sweep.json of an older cbl: the defaults
        keep = keep_best if keep_best is not None else configured
        # an interrupted sweep may retry a trial's own error on resume: only a finished sweep's errors are final
        running = sweep.get("state") != "finished"
        if dry_run:
            planned, kept = plan_prune(experiment_dir, keep, mode, sweep_running=running)
            size = sum(p.stat().st_size for p in planned if p.is_file())
            for path in planned:
                click.echo(f"would remove {path.relative_to(experiment_dir)}")
            click.echo(
                f"would free {format_bytes(size)} ({len(planned)} file(s)); best.pt kept for {len(kept)} trial(s)"
            )
            return
        result = prune_experiment(experiment_dir, keep, mode, sweep_running=running)
    click.echo(result.line())


COMMANDS = (prune_command,)
