"""Commands on a corpus root: ``doctor``."""

from __future__ import annotations

from pathlib import Path

import click

from cbl.config import PROTOCOL_FORMATS
from cbl.errors import CblError

__all__ = ["COMMANDS", "doctor_command"]


@click.command("doctor")
@click.argument("data_root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--corpus",
    required=True,
    type=click.Choice([corpus for corpus in PROTOCOL_FORMATS if corpus != "folder"]),
    help="What the root holds (in its standard layout, listed above).",
)
@click.option("--full", is_flag=True, help="Open every audio file (default: a random sample per split).")
@click.option(
    "--sample",
    type=click.IntRange(min=1),
    default=None,
    help="Audio files opened per split without --full (default: 200).",
)
@click.option(
    "--sample-rate",
    type=click.IntRange(min=1),
    default=16000,
    show_default=True,
    help="The rate the model reads (data.sample_rate); files at another rate are a warning (they are resampled).",
)
def doctor_command(data_root: Path, corpus: str, full: bool, sample: int | None, sample_rate: int) -> None:
    """Check a corpus root: layout, protocol lines, published counts, missing, extra and unreadable audio,
    sample rates and durations, speakers and ids shared between splits.

    \b
    Layouts (ROOT = DATA_ROOT):
      asvspoof2019_la  ROOT/ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.{train.trn,dev.trl,eval.trl}.txt,
                       audio ROOT/ASVspoof2019_LA_{train,dev,eval}/flac/
      asvspoof2021_la  ROOT/keys/LA/CM/trial_metadata.txt, audio ROOT/ASVspoof2021_LA_eval/flac/
      asvspoof2021_df  ROOT/keys/DF/CM/trial_metadata.txt, audio ROOT/ASVspoof2021_DF_eval/flac/
      in_the_wild      ROOT/meta.csv with the audio beside it (or in ROOT/release_in_the_wild/)

    Exit 0: usable (count differences are warnings: subsets are legitimate); 1: not usable, each problem
    with what to do; 2: usage error.
    """
    from cbl.config import DataConfig
    from cbl.data.doctor import DEFAULT_SAMPLE, diagnose

    if full and sample is not None:
        raise click.UsageError("--full opens every file; give --full or --sample, not both")
    data = DataConfig(corpus=corpus, root=str(data_root), sample_rate=sample_rate)
    report = diagnose(data, sample=None if full else (sample or DEFAULT_SAMPLE), progress=click.echo)
    click.echo(report.table())
    if not report.usable:
        raise CblError(f"{data_root}: not usable as {corpus} (the problems above say what to do)")


COMMANDS = (doctor_command,)
