"""Commands that hand a sweep's result on: ``export`` (the reproducibility bundle)."""

from __future__ import annotations

from pathlib import Path

import click

from cbl.cli.options import experiment_argument

__all__ = ["COMMANDS", "export_command"]


@click.command("export")
@experiment_argument
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
def export_command(experiment_dir: Path, out_dir: Path) -> None:
    """Write a reproducibility bundle of a finished sweep to OUT_DIR.

    The best configuration (config.yaml: `cbl-search train OUT_DIR/config.yaml` trains it again), its seeds
    and threshold, cbl's version and git commit, the package versions, the sha256 of the protocol files, and
    the final evaluation's score files, summaries and log (bundle.json lists them).
    """
    from cbl.sweep.export import export_bundle
    from cbl.sweep.store import require_experiment

    bundle = export_bundle(require_experiment(experiment_dir), out_dir)
    click.echo(f"bundle written: {bundle}")
    click.echo(f"train the best configuration again: cbl-search train {out_dir / 'config.yaml'}")


COMMANDS = (export_command,)
