"""The ``cbl-search`` command line: one click group, one function per command.

Errors: our :class:`~cbl.errors.UsageError` (bad file, key, option) exits 2,
any other :class:`~cbl.errors.CblError` exits 1, both as one line without a
traceback; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path
from typing import Any

import click

from cbl import __version__
from cbl.errors import CblError, UsageError

__all__ = ["cli", "describe_os_error", "main"]


class InputError(click.ClickException):
    """Bad input: exit code 2 like click's usage errors, but without the usage banner."""

    exit_code = 2


def _translate(exc: BaseException) -> click.ClickException:
    if isinstance(exc, UsageError):
        return InputError(str(exc))
    if isinstance(exc, CblError):
        return click.ClickException(str(exc))
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":  # torch's (CUDA) OOM by name:
        where = "GPU " if type(exc).__name__ == "OutOfMemoryError" else ""     # no torch import for --help
        return click.ClickException(f"out of {where}memory (try a smaller train.batch_size, with optim.grad_accum "
                                    "to keep the effective batch)")
    if isinstance(exc, OSError):
        return click.ClickException(describe_os_error(exc))
    return click.ClickException(f"{type(exc).__name__}: {exc} (run with --debug for the traceback)")


# Storage faults a long sweep meets (full disk, quota, lost permissions, a remount read-only):
# what to say about each, after "<path>: ". Files already written stay intact (atomic writes).
_STORAGE_FAULTS = {
    errno.ENOSPC: "no space left on device; free some space, then rerun or resume (files already written are intact)",
    errno.EDQUOT: "disk quota exceeded; free some space, then rerun or resume (files already written are intact)",
    errno.EACCES: "permission denied (reading: check the file's permissions; writing: give a folder this user can "
                  "write to, e.g. --storage or --out)",
    errno.EPERM: "operation not permitted (reading: check the file's permissions; writing: give a folder this user "
                 "can write to, e.g. --storage or --out)",
    errno.EROFS: "read-only file system; give a writable folder (e.g. --storage or --out)",
}


def describe_os_error(exc: OSError) -> str:
    """One line for an OSError: the path first (when known), then what went wrong and what to do."""
    what = _STORAGE_FAULTS.get(exc.errno) or exc.strerror or str(exc) or type(exc).__name__
    line = f"{exc.filename}: {what}" if exc.filename is not None else what
    return line.replace("\n", "\\n").replace("\r", "\\r")  # one line whatever the path held


class CblGroup(click.Group):
    """Turns our exceptions into one-line messages with the right exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - the CLI boundary
            if ctx.obj and ctx.obj.get("debug"):
                raise
            raise _translate(exc) from None


@click.group(cls=CblGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="cbl-search")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Hyperparameter search for audio deepfake detection with a bonafide-only cluster metric loss.

    \b
    Quick start (synthetic corpus, tiny random-weight wav2vec2: a pipeline check, not results):
      cbl-search run search_spaces/ablation.yaml --demo
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


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


@cli.command("config")
@config_file
@set_option
@demo_option
def config_command(config_path: Path | None, set_options: tuple[str, ...], demo: bool) -> None:
    """Validate a config file and print the resolved configuration as YAML."""
    from cbl.config import config_to_dict
    from cbl.profiles import resolve_config
    from cbl.yamlio import dump_yaml

    config = resolve_config(config_path, set_options, demo=demo)
    click.echo(dump_yaml(config_to_dict(config)), nl=False)


@cli.command("demo-data")
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
    import time

    stem = "demo" if demo else (config_path.stem if config_path else "run")
    return Path("cbl_runs") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


@cli.command("train")
@config_file
@set_option
@demo_option
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Run folder (default: cbl_runs/<config>-<time>). An existing run folder resumes.")
@click.option("--progress/--no-progress", default=None, help="Progress bar per epoch (default: on a terminal).")
def train_command(config_path: Path | None, set_options: tuple[str, ...], demo: bool, out_dir: Path | None,
                  progress: bool | None) -> None:
    """Train one configuration; checkpoints, metrics and TensorBoard events go to the run folder.

    Rerunning the same command with the same --out resumes an interrupted run.
    """
    from cbl.config import load_config
    from cbl.profiles import DEMO_NOTICE, resolve_config
    from cbl.reporting import ConsoleReporter
    from cbl.train import config_differences, fit

    config = resolve_config(config_path, set_options, demo=demo)
    run_dir = out_dir or _default_run_dir(config_path, demo)
    existing = run_dir / "config.yaml"
    if (run_dir / "checkpoints" / "last.pt").is_file() and existing.is_file():
        differences = config_differences(load_config(existing), config)
        if differences:
            shown = "; ".join(differences[:5]) + (f" (+{len(differences) - 5} more)" if len(differences) > 5 else "")
            raise UsageError(f"{run_dir}: holds a run with another configuration ({shown}); "
                             "choose a new --out folder")
        click.echo(f"resuming the run in {run_dir}")
    if config.data.corpus == "demo":
        click.echo(DEMO_NOTICE)
    click.echo(f"run folder: {run_dir}")
    reporter = ConsoleReporter(config, run_dir, echo=click.echo)
    try:
        result = fit(config, reporter, run_dir, progress=sys.stderr.isatty() if progress is None else progress)
    except KeyboardInterrupt:
        done = reporter.last.get("epoch")
        click.echo(f"interrupted{f' after epoch {done}' if done else ''}: rerun the same command "
                   f"(with --out {run_dir}) to resume from the last checkpoint", err=True)
        raise click.exceptions.Exit(130) from None
    finally:
        reporter.close()
    _echo_collapse(reporter.last, config)
    click.echo(
        f"best dev EER {100 * result.best_dev_eer:.2f}% at epoch {result.best_epoch}; "
        f"checkpoint {result.best_checkpoint}\n"
        f"TensorBoard: tensorboard --logdir {run_dir}"
    )
    if config.train.feature_cache:
        from cbl.feature_cache import cache_root, format_cache_line

        click.echo(format_cache_line(cache_root(config, run_dir)))


def _echo_collapse(last_metrics: dict, config) -> None:
    """One warning line when the run's last epoch shows a collapsed embedding (see cbl.diagnostics)."""
    from cbl.diagnostics import collapse_warning

    line = collapse_warning(last_metrics, config) if last_metrics else None
    if line:
        click.echo(line, err=True)


def _echo_eval(result, out: Path) -> None:
    from cbl.metrics import format_attack_table

    click.echo(f"scores written to {out} ({len(result.scores)} utterances)")
    if result.eer is None:
        click.echo("no EER: the protocol does not hold both bonafide and spoof labels")
        return
    click.echo(f"EER {100 * result.eer:.2f}% (threshold {result.threshold:.6g})")
    click.echo(format_attack_table(result.attack_rows))
    if result.sign_suspicious:
        click.echo(
            f"warning: negated scores give a lower EER ({100 * result.negated_eer:.2f}%): "
            "are the labels or the score sign swapped? (higher score must mean bonafide)",
            err=True,
        )


@cli.command("evaluate")
@click.argument("checkpoint", type=click.Path(exists=True, path_type=Path))
@click.option("--split", type=click.Choice(["train", "dev", "eval"]), default=None,
              help="A split of the checkpoint's own corpus (default: eval).")
@click.option("--protocol", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Score this protocol instead (read with --corpus).")
@click.option("--audio-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Audio folder of --protocol.")
@click.option("--corpus", type=click.Choice(["asvspoof2019_la", "asvspoof2021_la", "asvspoof2021_df",
                                             "in_the_wild", "folder"]), default=None,
              help="Format of --protocol (default: the checkpoint's corpus).")
@click.option("--overrides", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="YAML of config values laid over the checkpoint's own (e.g. data.root on this machine).")
@set_option
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Score file (default: scores-<split>.txt beside the checkpoint).")
@click.option("--style", type=click.Choice(["2021", "2019"]), default="2021", show_default=True,
              help="2021: UTT_ID SCORE; 2019: UTT_ID ATTACK KEY SCORE.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None)
def evaluate_command(checkpoint: Path, split: str | None, protocol: Path | None, audio_dir: Path | None,
                     corpus: str | None, overrides: Path | None, set_options: tuple[str, ...], out: Path | None,
                     style: str, batch_size: int | None) -> None:
    """Score a split or a protocol with a saved model; print EER and the per-attack table.

    An interrupted run resumes where it stopped (from OUT.partial).
    """
    from cbl.evaluate import evaluate_records, load_model, records_for

    if protocol is not None and split is not None:
        raise UsageError("give either --split or --protocol, not both")
    loaded = load_model(checkpoint)
    loaded.config = _override_eval_config(loaded.config, overrides, set_options)
    records = records_for(loaded.config, split, protocol, audio_dir, corpus)
    name = f"scores-{split or 'eval'}.txt" if protocol is None else f"scores-{protocol.stem}.txt"
    out = out or (checkpoint if checkpoint.is_dir() else checkpoint.parent) / name
    result = evaluate_records(loaded, records, out, style=style, batch_size=batch_size)
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
            raise UsageError(f"only data.* and train.* settings can change at evaluation, not {section}.*: "
                             "the model is the one the checkpoint holds")
    return config


@cli.command("score")
@click.argument("checkpoint", type=click.Path(exists=True, path_type=Path))
@click.argument("audio", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also write a TSV here.")
def score_command(checkpoint: Path, audio: tuple[Path, ...], out: Path | None) -> None:
    """Score your own audio files (any rate, mono or stereo; folders are searched).

    Prints one line per file: score and decision at the dev-EER threshold saved in the checkpoint.
    """
    from cbl.evaluate import expand_audio_paths, load_model, score_audio_files
    from cbl.yamlio import atomic_write_text

    loaded = load_model(checkpoint)
    rows = score_audio_files(loaded, expand_audio_paths(list(audio)))
    lines = []
    for path, score in rows:
        decision = "bonafide" if score >= loaded.threshold else "spoof"
        lines.append(f"{path}\t{score:.6f}\t{decision}")
        click.echo(lines[-1])
    click.echo(f"(threshold {loaded.threshold:.6g} = dev EER threshold of epoch {loaded.epoch})", err=True)
    if out is not None:
        atomic_write_text(out, "path\tscore\tdecision\n" + "".join(f"{line}\n" for line in lines))


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    cli.main(args=argv, prog_name="cbl-search")


# the sweep commands live in their own module; importing it registers them on `cli`
from cbl import cli_sweep  # noqa: E402,F401

if __name__ == "__main__":  # pragma: no cover
    # run as `python -m cbl.cli`: use the imported module, the one the sweep commands registered on
    from cbl.cli import main as _main

    sys.exit(_main())
