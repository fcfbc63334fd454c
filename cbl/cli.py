"""The ``cbl-search`` command line: one click group, one function per command.

Errors: our :class:`~cbl.errors.UsageError` (bad file, key, option) exits 2,
any other :class:`~cbl.errors.CblError` exits 1, both as one line without a
traceback; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from cbl import __version__
from cbl.errors import CblError, UsageError

__all__ = ["cli", "main"]


class InputError(click.ClickException):
    """Bad input: exit code 2 like click's usage errors, but without the usage banner."""

    exit_code = 2


def _translate(exc: BaseException) -> click.ClickException:
    if isinstance(exc, UsageError):
        return InputError(str(exc))
    if isinstance(exc, CblError):
        return click.ClickException(str(exc))
    if isinstance(exc, MemoryError):
        return click.ClickException("out of memory (try a smaller train.batch_size)")
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        return click.ClickException(f"{exc.strerror or exc}{where}")
    return click.ClickException(f"{type(exc).__name__}: {exc} (run with --debug for the traceback)")


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


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    cli.main(args=argv, prog_name="cbl-search")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
