"""Commands on one run: ``config``, ``demo-data``, ``train``, ``evaluate``, ``score``."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cbl.cli.options import (
    asv_key_option,
    asv_scores_option,
    config_file,
    corpus_option,
    demo_option,
    set_option,
    split_choice,
)
from cbl.errors import UsageError

if TYPE_CHECKING:  # annotations only: --help stays free of torch
    from cbl.config import ExperimentConfig

__all__ = ["COMMANDS", "config_command", "demo_data_command", "evaluate_command", "score_command", "train_command"]


@click.command("config")
@config_file
@set_option
@demo_option
def config_command(config_path: Path | None, set_options: tuple[str, ...], demo: bool) -> None:
    """Validate a config file and print the resolved configuration as YAML."""
    from cbl.config import config_to_dict, resolve_config
    from cbl.yamlio import dump_yaml

    config = resolve_config(config_path, set_options, demo=demo)
    click.echo(dump_yaml(config_to_dict(config)), nl=False)
    from cbl.engine.footprint import footprint_lines

    for line in footprint_lines(config):  # YAML comments: the output stays a loadable config
        click.echo(f"# {line}")


@click.command("demo-data")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", default=0, show_default=True, help="The corpus is deterministic for a seed.")
@click.option("--utterances", default=480, show_default=True, help="Utterances per split.")
@click.option("--seconds", default=1.0, show_default=True, help="Length of each utterance.")
def demo_data_command(out_dir: Path, seed: int, utterances: int, seconds: float) -> None:
    """Write the synthetic demo corpus in the ASVspoof 2019 LA layout to OUT_DIR."""
    from cbl.data.demo import generate_demo_corpus

    if out_dir.exists() and any(out_dir.iterdir()):
        raise UsageError(f"{out_dir}: folder exists and is not empty; choose a new folder")
    path = generate_demo_corpus(out_dir, seed=seed, utterances=utterances, seconds=seconds)
    click.echo(f"demo corpus written to {path} (synthetic: for trying the pipeline, not for results)")


def _default_run_dir(config_path: Path | None, demo: bool) -> Path:
    stem = "demo" if demo else (config_path.stem if config_path else "run")
    return Path("cbl_runs") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


@click.command("train")
@config_file
@set_option
@demo_option
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Run folder (default: cbl_runs/<config>-<time>). An existing run folder resumes.",
)
@click.option("--progress/--no-progress", default=None, help="Progress bar per epoch (default: on a terminal).")
def train_command(
    config_path: Path | None, set_options: tuple[str, ...], demo: bool, out_dir: Path | None, progress: bool | None
) -> None:
    """Train one configuration; checkpoints, metrics and TensorBoard events go to the run folder.

    Rerunning the same command with the same --out resumes an interrupted run.
    """
    from cbl.config import DEMO_NOTICE, check_same_config, load_config, resolve_config
    from cbl.engine import ConsoleReporter, fit, read_history
    from cbl.uncertainty import format_interval

    config = resolve_config(config_path, set_options, demo=demo)
    run_dir = out_dir or _default_run_dir(config_path, demo)
    existing = run_dir / "config.yaml"
    if (run_dir / "checkpoints" / "last.pt").is_file() and existing.is_file():
        check_same_config(load_config(existing), config, folder=run_dir, advice="choose a new --out folder")
        click.echo(f"resuming the run in {run_dir}")
    if config.data.corpus == "demo":
        click.echo(DEMO_NOTICE)
    from cbl.data.doctor import check_training_data

    check_training_data(config.data, echo=click.echo)  # the dataset doctor's cheap part, before training starts
    click.echo(f"run folder: {run_dir}")
    reporter = ConsoleReporter(config, run_dir, echo=click.echo)
    try:
        result = fit(config, reporter, run_dir, progress=sys.stderr.isatty() if progress is None else progress)
    except KeyboardInterrupt:
        done = reporter.last.get("epoch")
        click.echo(
            f"interrupted{f' after epoch {done}' if done else ''}: rerun the same command "
            f"(with --out {run_dir}) to resume from the last checkpoint",
            err=True,
        )
        raise click.exceptions.Exit(130) from None
    finally:
        reporter.close()
    best_line = next((m for m in read_history(run_dir) if m.get("epoch") == result.best_epoch), {})
    interval = f" ({format_interval(best_line)})" if format_interval(best_line) else ""
    _echo_collapse(reporter.last, config)
    click.echo(
        f"best dev EER {100 * result.best_dev_eer:.2f}%{interval} at epoch {result.best_epoch}; "
        f"checkpoint {result.best_checkpoint}\n"
        f"TensorBoard: tensorboard --logdir {run_dir}"
    )
    if config.train.feature_cache:
        from cbl.engine import cache_root, format_cache_line

        click.echo(format_cache_line(cache_root(config, run_dir)))


def _echo_collapse(last_metrics: dict[str, Any], config: ExperimentConfig) -> None:
    """One warning line when the run's last epoch shows a collapsed embedding (see cbl.diagnostics)."""
    from cbl.diagnostics import collapse_warning

    line = collapse_warning(last_metrics, config) if last_metrics else None
    if line:
        click.echo(line, err=True)


def _echo_eval(result, out: Path) -> None:
    from cbl.engine import result_tables

    click.echo(f"scores written to {out} ({len(result.scores)} utterances)")
    if result.eer is None:
        click.echo("no EER: the protocol does not hold both bonafide and spoof labels")
        return
    from cbl.uncertainty import format_interval

    interval = format_interval(result.interval, prefix="eer")
    click.echo(f"EER {100 * result.eer:.2f}% (threshold {result.threshold:.6g}{f'; {interval}' if interval else ''})")
    click.echo(result_tables(result))
    if result.sign_suspicious:
        click.echo(
            f"warning: negated scores give a lower EER ({100 * result.negated_eer:.2f}%): "
            "are the labels or the score sign swapped? (higher score must mean bonafide)",
            err=True,
        )


@click.command("evaluate")
@click.argument("checkpoint", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--split", type=split_choice(), default=None, help="A split of the checkpoint's own corpus (default: eval)."
)
@click.option(
    "--protocol",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Score this protocol instead (read with --corpus).",
)
@click.option(
    "--audio-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Audio folder of --protocol.",
)
@corpus_option("Format of --protocol (default: the checkpoint's corpus).")
@click.option(
    "--overrides",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="YAML of config values laid over the checkpoint's own (e.g. data.root on this machine).",
)
@set_option
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Score file (default: scores-<split>.txt beside the checkpoint).",
)
@click.option(
    "--style",
    type=click.Choice(["2021", "2019"]),
    default="2021",
    show_default=True,
    help="2021: UTT_ID SCORE; 2019: UTT_ID ATTACK KEY SCORE.",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=None)
@asv_scores_option
@asv_key_option
def evaluate_command(
    checkpoint: Path,
    split: str | None,
    protocol: Path | None,
    audio_dir: Path | None,
    corpus: str | None,
    overrides: Path | None,
    set_options: tuple[str, ...],
    out: Path | None,
    style: str,
    batch_size: int | None,
    asv_scores: Path | None,
    asv_key: Path | None,
) -> None:
    """Score a split or a protocol with a saved model; print EER, the per-attack table and, for ASVspoof 2021
    keys, the official condition tables (LA: codec C1-C7; DF: vocoder group, codec C1-C9).

    With the organisers' ASV scores (--asv-scores), also the min t-DCF: the ASVspoof 2019 and the revised
    2021 forms. An interrupted run resumes where it stopped (from OUT.partial).
    """
    from cbl.engine import asv_option_scores, evaluate_records, load_model, records_for

    if protocol is not None and split is not None:
        raise UsageError("give either --split or --protocol, not both")
    asv = asv_option_scores(asv_scores, asv_key)
    loaded = load_model(checkpoint)
    loaded.config = _override_eval_config(loaded.config, overrides, set_options)
    records = records_for(loaded.config, split, protocol, audio_dir, corpus)
    name = f"scores-{split or 'eval'}.txt" if protocol is None else f"scores-{protocol.stem}.txt"
    out = out or (checkpoint if checkpoint.is_dir() else checkpoint.parent) / name
    result = evaluate_records(loaded, records, out, style=style, batch_size=batch_size, asv=asv)
    _echo_eval(result, out)


def _override_eval_config(config, overrides: Path | None, set_options: tuple[str, ...]):
    """Only data settings may change at evaluation: the model must stay the one that was trained."""
    from cbl.config import apply_overrides, parse_set_options
    from cbl.yamlio import load_yaml

    original = config
    if overrides is not None:
        data, lines = load_yaml(overrides)
        config = apply_overrides(config, data, source=str(overrides), lines=lines)
    if set_options:
        config = apply_overrides(config, parse_set_options(set_options), source="--set", from_string=True)
    for section in ("model", "loss", "centers", "optim"):
        if getattr(config, section) != getattr(original, section):
            raise UsageError(
                f"only data.* and train.* settings can change at evaluation, not {section}.*: "
                "the model is the one the checkpoint holds"
            )
    return config


@click.command("score")
@click.argument("checkpoint", type=click.Path(exists=True, path_type=Path))
@click.argument("audio", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also write a TSV here.")
def score_command(checkpoint: Path, audio: tuple[Path, ...], out: Path | None) -> None:
    """Score your own audio files (any rate, mono or stereo; folders are searched).

    Prints one line per file: score and decision at the dev-EER threshold of the
    checkpoint's own epoch: bonafide when the score is above it (the EER threshold is
    the highest dev score the EER operating point rejects).
    """
    from cbl.engine import expand_audio_paths, load_model, score_audio_files
    from cbl.metrics import is_bonafide
    from cbl.yamlio import atomic_write_text

    loaded = load_model(checkpoint)
    rows = score_audio_files(loaded, expand_audio_paths(list(audio)))
    accepted = is_bonafide([score for _, score in rows], loaded.threshold)
    lines = []
    for (path, score), bonafide in zip(rows, accepted, strict=True):
        lines.append(f"{path}\t{score:.6f}\t{'bonafide' if bonafide else 'spoof'}")
        click.echo(lines[-1])
    click.echo(
        f"(threshold {loaded.threshold:.6g} = dev EER threshold of epoch {loaded.epoch}; "
        "bonafide when the score is above it)",
        err=True,
    )
    if out is not None:
        atomic_write_text(out, "path\tscore\tdecision\n" + "".join(f"{line}\n" for line in lines))


COMMANDS = (config_command, demo_data_command, train_command, evaluate_command, score_command)
