"""Options and arguments that several commands share; choice lists come from the config's own tables."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from cbl.config import PROTOCOL_FORMATS, SPLITS

__all__ = [
    "asv_key_option",
    "asv_scores_option",
    "config_file",
    "corpus_option",
    "demo_option",
    "experiment_argument",
    "on_corpora_option",
    "set_option",
    "split_choice",
]

config_file = click.argument(
    "config_path", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)


set_option = click.option(
    "--set",
    "set_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config value, e.g. --set loss.alpha=2.0 (repeatable).",
)


demo_option = click.option(
    "--demo", is_flag=True, help="Use the built-in synthetic corpus and the tiny random-weight model."
)


asv_scores_option = click.option(
    "--asv-scores",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="The organisers' ASV scores, for min t-DCF: ASVspoof2019.LA.asv.{dev,eval}.gi.trl.scores.txt, or the "
    "2021 keys' LA/ASV/ASVTorch_Kaldi/score.txt (with --asv-key).",
)


asv_key_option = click.option(
    "--asv-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="The 2021 keys' LA/ASV/trial_metadata.txt that --asv-scores (a 2021 score.txt) pairs with line by line.",
)


def split_choice(*leave_out: str) -> click.Choice:
    """The splits (``train``, ``dev``, ``eval``) as a click choice, without ``leave_out``."""
    return click.Choice([split for split in SPLITS if split not in leave_out])


def corpus_option(help_text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--corpus``: the format of a protocol file given with ``--protocol`` (every corpus but the demo)."""
    return click.option("--corpus", type=click.Choice(PROTOCOL_FORMATS), default=None, help=help_text)


on_corpora_option = click.option(
    "--on",
    "on_corpora",
    multiple=True,
    metavar="CORPUS=ROOT",
    help="Score the best checkpoint on this corpus root instead (repeatable; CORPUS: asvspoof2019_la, "
    "asvspoof2021_la, asvspoof2021_df, in_the_wild, or folder=PROTOCOL): one summary, final_eval/summary.md.",
)

# EXPERIMENT_DIR of every command that reads an experiment folder
experiment_argument = click.argument("experiment_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
